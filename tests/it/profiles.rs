//! The build profiles of Cargo.toml (issue 30, item 5): the crates every
//! window goes through are never built below `opt-level = "s"`, and a
//! crate `release` builds with little optimisation (for a quicker first
//! build) is built for size by `dist`, not left at that level in the
//! binary that ships. docs/measured.md, "Tried and dropped: the cold
//! crates not optimised", says why `release` lowers none today.

use std::collections::BTreeMap;
use toml::de::{DeTable, DeValue};

/// What runs for every sample (and candle, for the daemon's online
/// training): never built below `opt-level = "s"`.
const HOT: &[&str] = &[
    "accelwatch",
    "tract-core",
    "tract-linalg",
    "tract-data",
    "tokio",
    "serde_json",
    "rumqttc",
    "candle-core",
    "candle-nn",
    "zmij",
    "ring",
];

/// The table at `key` of `table`, if it is one.
fn subtable<'i>(table: &DeTable<'i>, key: &str) -> Option<DeTable<'i>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref() == key)
        .and_then(|(_, v)| match v.get_ref() {
            DeValue::Table(t) => Some(t.clone()),
            _ => None,
        })
}

/// `[profile.<profile>.package.<crate>] opt-level`, as written (a number
/// or a letter), for every crate the profile names.
fn opt_levels(manifest: &DeTable<'_>, profile: &str) -> BTreeMap<String, String> {
    let Some(packages) = subtable(manifest, "profile")
        .and_then(|p| subtable(&p, profile))
        .and_then(|p| subtable(&p, "package"))
    else {
        return BTreeMap::new();
    };
    packages
        .iter()
        .filter_map(|(name, settings)| {
            let DeValue::Table(settings) = settings.get_ref() else {
                return None;
            };
            let level = settings
                .iter()
                .find(|(k, _)| k.get_ref() == "opt-level")
                .map(|(_, v)| match v.get_ref() {
                    DeValue::String(s) => s.to_string(),
                    DeValue::Integer(i) => i.as_str().to_string(),
                    other => panic!("opt-level of {}: {other:?}", name.get_ref()),
                })?;
            Some((name.get_ref().to_string(), level))
        })
        .collect()
}

fn manifest_levels() -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let text = std::fs::read_to_string(path).expect("Cargo.toml");
    let manifest = DeTable::parse(&text).expect("Cargo.toml is TOML");
    let manifest = manifest.get_ref();
    (
        opt_levels(manifest, "release"),
        opt_levels(manifest, "dist"),
    )
}

#[test]
fn no_profile_lowers_the_per_sample_path_and_dist_undoes_what_release_lowers() {
    let (release, dist) = manifest_levels();
    assert_eq!(
        release.get("tract-core").map(String::as_str),
        Some("s"),
        "the reader finds release's per-package opt-levels: {release:?}"
    );
    for (profile, levels) in [("release", &release), ("dist", &dist)] {
        for hot in HOT {
            if let Some(level) = levels.get(*hot) {
                assert!(
                    matches!(level.as_str(), "2" | "3" | "s"),
                    "{hot} is on the per-sample path, {profile} builds it at opt-level {level}"
                );
            }
        }
    }
    for (name, level) in &release {
        if !matches!(level.as_str(), "0" | "1") {
            continue;
        }
        assert_eq!(
            dist.get(name).map(String::as_str),
            Some("s"),
            "release builds {name} at opt-level {level} for a quick build; \
             dist must build it for size (\"s\"), not inherit that"
        );
    }
}
