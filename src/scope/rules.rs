//! Which scope (fleet, device or group) serves each device.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::train::config::{ScopeKind, TrainingConfig};
use crate::mqtt::topic::DeviceFilter;

/// The scope serving every device (and, with per-device or per-group
/// scopes, the devices beyond `training.max_scopes` or in no group).
pub const FLEET: &str = "fleet";

/// Decides the scope of each device.
#[derive(Debug, Clone)]
pub struct ScopeRules {
    kind: ScopeKind,
    groups: Vec<(Arc<str>, Vec<DeviceFilter>)>,
}

impl ScopeRules {
    /// The rules of `training.scope` and `training.groups` (validated with
    /// the config).
    pub fn new(training: &TrainingConfig) -> Self {
        let groups = training
            .groups
            .iter()
            .map(|group| {
                let filters = group
                    .topics
                    .iter()
                    .filter_map(|t| DeviceFilter::parse_with(t, true).ok())
                    .collect();
                (Arc::from(format!("group:{}", group.name)), filters)
            })
            .collect();
        Self {
            kind: training.scope,
            groups,
        }
    }

    /// Whether every device is in the fleet scope.
    pub fn is_fleet(&self) -> bool {
        self.kind == ScopeKind::Fleet
    }

    /// The scope of `device`, heard on `topic` (MQTT input).
    pub fn scope_of(&self, device: &str, topic: Option<&str>) -> Arc<str> {
        match self.kind {
            ScopeKind::Fleet => Arc::from(FLEET),
            ScopeKind::Device => Arc::from(format!("device:{device}")),
            ScopeKind::Group => topic
                .and_then(|topic| {
                    self.groups
                        .iter()
                        .find(|(_, filters)| filters.iter().any(|f| f.matches(topic).is_some()))
                })
                .map_or_else(|| Arc::from(FLEET), |(name, _)| name.clone()),
        }
    }
}

/// Remembers each device's scope, so rules run once per device.
#[derive(Debug)]
pub struct ScopeCache {
    rules: ScopeRules,
    known: HashMap<Arc<str>, Arc<str>>,
    limit: usize,
}

impl ScopeCache {
    /// Remembers at most `limit` devices (then starts over).
    pub fn new(rules: ScopeRules, limit: usize) -> Self {
        Self {
            rules,
            known: HashMap::new(),
            limit: limit.max(1),
        }
    }

    /// Devices whose scope is remembered.
    pub fn remembered(&self) -> usize {
        self.known.len()
    }

    /// None when every device is in the fleet scope.
    pub fn scope_of(&mut self, device: &Arc<str>, topic: Option<&str>) -> Option<Arc<str>> {
        if self.rules.is_fleet() {
            return None;
        }
        if let Some(scope) = self.known.get(device) {
            return Some(scope.clone());
        }
        if self.known.len() >= self.limit {
            self.known.clear();
        }
        let scope = self.rules.scope_of(device, topic);
        self.known.insert(device.clone(), scope.clone());
        Some(scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::train::config::GroupConfig;

    fn rules(kind: ScopeKind) -> ScopeRules {
        let training = TrainingConfig {
            scope: kind,
            groups: vec![
                GroupConfig {
                    name: "line1".into(),
                    topics: vec!["plant/line1/+/accel".into()],
                },
                GroupConfig {
                    name: "presses".into(),
                    topics: vec!["plant/+/press-{device}/accel".into(), "press/#".into()],
                },
            ],
            ..TrainingConfig::default()
        };
        ScopeRules::new(&training)
    }

    #[test]
    fn each_kind_of_scope() {
        let topic = Some("plant/line1/w1/accel");
        assert_eq!(&*rules(ScopeKind::Fleet).scope_of("w1", topic), "fleet");
        assert_eq!(
            &*rules(ScopeKind::Device).scope_of("w1", topic),
            "device:w1"
        );
        let groups = rules(ScopeKind::Group);
        assert_eq!(&*groups.scope_of("w1", topic), "group:line1");
        assert_eq!(&*groups.scope_of("p", Some("press/a/b")), "group:presses");
        assert_eq!(
            &*groups.scope_of("x", Some("plant/line2/x/accel")),
            "fleet",
            "in no group"
        );
        assert_eq!(&*groups.scope_of("x", None), "fleet");
    }

    #[test]
    fn the_cache_skips_the_fleet_and_stays_bounded() {
        let mut cache = ScopeCache::new(rules(ScopeKind::Fleet), 2);
        assert_eq!(cache.scope_of(&Arc::from("a"), None), None);
        let mut cache = ScopeCache::new(rules(ScopeKind::Device), 2);
        for device in ["a", "b", "c", "a"] {
            let scope = cache.scope_of(&Arc::from(device), None).unwrap();
            assert_eq!(&*scope, format!("device:{device}"));
            assert!(cache.known.len() <= 2);
        }
    }
}
