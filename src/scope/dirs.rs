//! Where each scope keeps its models under `model.dir`.

use std::path::{Path, PathBuf};

/// The file in a scope's directory naming the scope.
const NAME_FILE: &str = "scope";

/// Longest directory name made from a device id; longer ids are cut and
/// suffixed with a hash of the whole id.
const MAX_DIR_CHARS: usize = 96;

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
    if scope != crate::scope::rules::FLEET {
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
        let suffix = &format!("{hash:x}")[..16];
        name.truncate(MAX_DIR_CHARS - suffix.len() - 1);
        name = format!("{name}-{suffix}");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

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
