//! Model scopes: which model serves (and which windows train) a device.
//!
//! With `training.scope = "fleet"` one model serves every device. With
//! `"device"` each device has its own, with `"group"` each group of
//! `training.groups` (devices heard on topics matching the group's MQTT
//! filters). A scope is named `fleet`, `device:<id>` or `group:<name>`; the
//! name labels metrics and status records, and commands address it.
//!
//! Each scope keeps its models in a directory of its own under `model.dir`:
//! the fleet in `model.dir` itself (so a fleet deployment can later split),
//! a device in `devices/<escaped id>/`, a group in `groups/<name>/`. Each of
//! those directories holds a `scope` file with the scope's name, so the
//! daemon finds its scopes again after a restart whatever the escaping did.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Config, ScopeKind};
use crate::mqtt::topic::DeviceFilter;

/// The scope serving every device (and, with per-device or per-group
/// scopes, the devices beyond `training.max_scopes` or in no group).
pub const FLEET: &str = "fleet";

/// The file in a scope's directory naming the scope.
const NAME_FILE: &str = "scope";

/// Longest directory name made from a device id; longer ids are cut and
/// suffixed with a hash of the whole id.
const MAX_DIR_CHARS: usize = 96;

/// Decides the scope of each device.
#[derive(Debug, Clone)]
pub struct ScopeRules {
    kind: ScopeKind,
    groups: Vec<(Arc<str>, Vec<DeviceFilter>)>,
}

impl ScopeRules {
    /// The rules of `training.scope` and `training.groups` (validated with
    /// the config).
    pub fn from_config(config: &Config) -> Self {
        let groups = config
            .training
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
            kind: config.training.scope,
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

/// The directory of `scope`'s models under `root` (`model.dir`).
pub fn scope_dir(root: &Path, scope: &str) -> PathBuf {
    if let Some(device) = scope.strip_prefix("device:") {
        root.join("devices").join(dir_name(device))
    } else if let Some(group) = scope.strip_prefix("group:") {
        root.join("groups").join(dir_name(group))
    } else {
        root.to_path_buf()
    }
}

/// Creates `scope`'s directory and names it.
pub fn prepare_dir(root: &Path, scope: &str) -> std::io::Result<PathBuf> {
    let dir = scope_dir(root, scope);
    std::fs::create_dir_all(&dir)?;
    if scope != FLEET {
        let name = dir.join(NAME_FILE);
        if std::fs::read_to_string(&name).ok().as_deref() != Some(scope) {
            std::fs::write(&name, scope)?;
        }
    }
    Ok(dir)
}

/// The scopes that have a directory under `root`, sorted, with their
/// directories (the fleet's only when it holds something).
pub fn existing(root: &Path) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    for kind in ["devices", "groups"] {
        let Ok(entries) = std::fs::read_dir(root.join(kind)) else {
            continue;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            if let Ok(name) = std::fs::read_to_string(dir.join(NAME_FILE)) {
                found.push((name.trim().to_string(), dir));
            }
        }
    }
    found.sort();
    found
}

/// A directory name for an id: letters, digits, `-`, `_` and `.` are kept
/// (not a leading `.`), other bytes are `%XX`; an overlong result is cut
/// and suffixed with a hash of the id.
fn dir_name(id: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut name = String::with_capacity(id.len());
    for (i, byte) in id.bytes().enumerate() {
        let keep = byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_';
        if keep || (byte == b'.' && i > 0) {
            name.push(byte as char);
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    if name.len() > MAX_DIR_CHARS {
        let hash = Sha256::digest(id.as_bytes());
        let suffix: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
        name.truncate(MAX_DIR_CHARS - suffix.len() - 1);
        name = format!("{name}-{suffix}");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GroupConfig;

    fn rules(kind: ScopeKind) -> ScopeRules {
        let mut config = Config::default();
        config.training.scope = kind;
        config.training.groups = vec![
            GroupConfig {
                name: "line1".into(),
                topics: vec!["plant/line1/+/accel".into()],
            },
            GroupConfig {
                name: "presses".into(),
                topics: vec!["plant/+/press-{device}/accel".into(), "press/#".into()],
            },
        ];
        ScopeRules::from_config(&config)
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

    #[test]
    fn scope_directories_are_safe_and_found_again() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        assert_eq!(scope_dir(root, "fleet"), root);
        assert_eq!(
            scope_dir(root, "device:../etc/x y"),
            root.join("devices").join("%2E.%2Fetc%2Fx%20y")
        );
        let long = "d".repeat(300);
        let name = dir_name(&long);
        assert!(name.len() <= MAX_DIR_CHARS && name != dir_name(&"d".repeat(301)));
        for scope in ["device:../etc/x y", "group:line1", "device:w1"] {
            prepare_dir(root, scope).unwrap();
        }
        let names: Vec<String> = existing(root).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["device:../etc/x y", "device:w1", "group:line1"]);
    }
}
