//! Deflates the demo's recordings (data/watch/train-pen.csv and demo.csv)
//! into OUT_DIR, where `src/cmd/demo.rs` includes them: the binary carries
//! 1.0 MB rather than 2.7 MB of CSV text, and the repository keeps the plain
//! files that the README's commands and the tests read. It also asks the
//! linker to pack the binaries' relocations (see pack_relative_relocations).

use std::path::{Path, PathBuf};

const DEMO_RECORDINGS: [&str; 2] = ["train-pen.csv", "demo.csv"];

fn main() {
    pack_relative_relocations();
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    for name in DEMO_RECORDINGS {
        let source = Path::new(&manifest_dir).join("data/watch").join(name);
        println!("cargo:rerun-if-changed={}", source.display());
        let text = std::fs::read(&source)
            .unwrap_or_else(|error| panic!("reading {}: {error}", source.display()));
        let packed = miniz_oxide::deflate::compress_to_vec(&text, 9);
        let target = out_dir.join(format!("{name}.deflate"));
        std::fs::write(&target, packed)
            .unwrap_or_else(|error| panic!("writing {}: {error}", target.display()));
    }
}

/// The daemon is a position-independent executable, so the loader applies
/// ~90 000 relative relocations at start. Packed (DT_RELR, glibc >= 2.36,
/// GNU ld >= 2.38 or lld >= 15) their table shrinks from megabytes to
/// kilobytes, and so does what the daemon maps of it: issue 30's RSS at
/// 1 000 devices. An older GNU ld warns and ignores the option.
fn pack_relative_relocations() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
