//! The fuzz targets on stable: every committed seed (fuzz/seeds/<target>/,
//! crash inputs included) through the same body the libFuzzer target runs,
//! the giant payloads the seeds are too big to hold, and property tests
//! per parser ([`props`]).

mod props;

use std::time::Instant;

use accelwatch::decode::{Decoder, Format, Samples};
use accelwatch::fuzzing::TARGETS;

use crate::common::repo;

#[test]
fn every_committed_seed_runs_through_its_target() {
    let seeds = repo().join("fuzz/seeds");
    let mut folders: Vec<String> = std::fs::read_dir(&seeds)
        .unwrap_or_else(|e| panic!("{}: {e}", seeds.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let mut names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    names.sort();
    assert_eq!(folders, names, "a seed folder per target, and no other");
    for (name, body) in TARGETS {
        let dir = seeds.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 3, "{name}: only {} seeds", files.len());
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let started = Instant::now();
            body(&data);
            let took = started.elapsed();
            assert!(
                took.as_secs_f64() < 10.0,
                "{}: {took:?}: a seed this slow is a hang",
                file.display()
            );
        }
    }
}

/// A JSON batch of `rows` samples, as fuzz/make_seeds.py writes it.
fn json_batch(rows: usize) -> String {
    let mut text = String::from(r#"{"t0": 0, "interval_ms": 20, "values": ["#);
    for i in 0..rows {
        if i > 0 {
            text.push(',');
        }
        text.push_str("[0.01,-0.02,0.98]");
    }
    text.push_str("]}");
    text
}

#[test]
fn two_million_samples_are_refused_by_the_limits_and_bounded() {
    let three = || ["ax", "ay", "az"].map(String::from).to_vec();
    let batch = json_batch(2_000_000);
    let csv = "0.01,-0.02,0.98\n".repeat(2_000_000);
    let mut binary = accelwatch::decode::BinaryHeader {
        value_type: accelwatch::decode::BinaryType::I16,
        channels: 3,
        samples: 2_000_000,
        t0_ms: 0.0,
        interval_ms: 20.0,
    }
    .to_bytes()
    .to_vec();
    binary.resize(24 + 2_000_000 * 6, 0);
    let mut out = Samples::default();
    for (format, payload) in [
        (Format::Json, batch.as_bytes()),
        (Format::Csv, csv.as_bytes()),
        (Format::Binary, &binary),
    ] {
        // The default limits refuse it by size, before reading it.
        let error = Decoder::new(three(), 256 * 1024, 4096)
            .decode(format, payload, &mut out)
            .unwrap_err();
        assert_eq!(error.reason(), "too_large");
        // Under a raised size limit, by count.
        let error = Decoder::new(three(), 64 << 20, 4096)
            .decode(format, payload, &mut out)
            .unwrap_err();
        assert_eq!(error.reason(), "too_many_samples", "{format:?}: {error}");
        assert!(out.is_empty());
        // And when the limits allow it, every sample arrives.
        Decoder::new(three(), 64 << 20, 2_000_000)
            .decode(format, payload, &mut out)
            .unwrap();
        assert_eq!(out.len(), 2_000_000);
        if format != Format::Binary {
            assert_eq!(out.values[3..6], [0.01, -0.02, 0.98]);
        }
    }
    assert_eq!(
        accelwatch::decode::json_sample_count(batch.as_bytes()),
        2_000_000
    );
}

/// Configs that panicked while being validated (divisions by zero and
/// overflows in the online training memory bound, an overflowing window):
/// each is now a problem with its key. Their inputs are seeds of
/// `config_toml` too.
#[test]
fn configs_that_panicked_are_problems_with_their_key() {
    for (text, key) in [
        (
            "[training]\nmode = \"online\"\nmax_windows = 0\n",
            "training.min_windows",
        ),
        (
            "[input]\nchannels = []\n[training]\nmode = \"online\"\n",
            "input.channels",
        ),
        (
            "[training]\nmode = \"online\"\nscope = \"device\"\nmax_scopes = 9223372036854775807\n",
            "training.max_memory_mb",
        ),
        (
            "[window]\nsize = 4611686018427387904\nhop = 1\n",
            "window.size",
        ),
        ("[training]\nmax_memory_mb = 18446744073709551615\n", ""),
    ] {
        match accelwatch::config::Config::from_toml_str(text) {
            Err(accelwatch::config::TomlError::Invalid(problems)) => assert!(
                problems.iter().any(|p| p.key == key),
                "{text}: {problems:?}"
            ),
            Err(accelwatch::config::TomlError::Load(error)) => {
                assert!(key.is_empty(), "{text}: {error}")
            }
            Ok(_) => panic!("{text} was accepted"),
        }
    }
}
