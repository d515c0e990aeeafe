//! The binary's code pages out of the daemon's memory once the pipeline
//! runs (`pipeline.release_startup_code`). Starting touches code that
//! never runs again: tract's ONNX import and optimiser, the config and the
//! CLI. The kernel maps 64 KB of code around each page touched, so at
//! 1 000 devices half of the daemon's resident memory was pages of code
//! only the start had used (docs/measured.md, "Start-up code"). Dropping
//! the mapping of the code (`madvise(MADV_DONTNEED)`) leaves the file's
//! pages in the page cache: what the pipeline runs comes back at its next
//! call as a minor fault, with no read from the disk.
//!
//! Only the executable mapping is dropped. Its pages are never written, so
//! they come back as they were; the relocated data beside them (written
//! by the loader) would not, and is left alone. A debugger's breakpoint
//! set in the code before this runs would be lost with its page, hence
//! the setting.

/// Drops the pages of the executable mapping that holds this function
/// from the process's page tables; returns the bytes of that mapping
/// (what was resident of it is not known here), or `None` where this is
/// not done (not Linux, or the mapping was not found).
pub fn release() -> Option<u64> {
    imp::release()
}

#[cfg(target_os = "linux")]
mod imp {
    pub fn release() -> Option<u64> {
        let here = release as *const () as usize;
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        let (start, end) = code_mapping_holding(&maps, here)?;
        // SAFETY: the range is a whole mapping of the kernel's own list,
        // page-aligned, and read-only and executable: dropping its pages
        // changes no content, the next access maps the file's page again.
        let done =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        (done == 0).then_some((end - start) as u64)
    }

    /// The `r-xp` mapping of `/proc/self/maps` (as `maps`) that holds
    /// `address`.
    pub(super) fn code_mapping_holding(maps: &str, address: usize) -> Option<(usize, usize)> {
        maps.lines().find_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            let executable_private = fields.next()? == "r-xp";
            (executable_private && (start..end).contains(&address)).then_some((start, end))
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub fn release() -> Option<u64> {
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Resident kB of the mapping holding `release`, from smaps.
    fn resident_code_kb() -> u64 {
        let here = release as *const () as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((start, end)) = range.split_once('-') {
                    if let (Ok(start), Ok(end)) = (
                        usize::from_str_radix(start, 16),
                        usize::from_str_radix(end, 16),
                    ) {
                        inside = (start..end).contains(&here);
                        continue;
                    }
                }
            }
            if inside {
                if let Some(kb) = line.strip_prefix("Rss:") {
                    return kb.trim().trim_end_matches(" kB").trim().parse().unwrap();
                }
            }
        }
        panic!("no mapping holds release()")
    }

    #[test]
    fn the_code_mapping_is_found_by_an_address_inside_it() {
        let maps = "\
55d0a0000000-55d0a0200000 r--p 00000000 fd:01 42 /usr/bin/accelwatch
55d0a0200000-55d0a1a00000 r-xp 00200000 fd:01 42 /usr/bin/accelwatch
55d0a1a00000-55d0a1b00000 r--p 01a00000 fd:01 42 /usr/bin/accelwatch
7f0000000000-7f0000001000 r-xp 00000000 fd:01 43 /usr/lib/libc.so.6
";
        assert_eq!(
            imp::code_mapping_holding(maps, 0x55d0a0300000),
            Some((0x55d0a0200000, 0x55d0a1a00000))
        );
        assert_eq!(
            imp::code_mapping_holding(maps, 0x55d0a0100000),
            None,
            "not code"
        );
        assert_eq!(imp::code_mapping_holding(maps, 0x1000), None);
    }

    #[test]
    fn released_code_leaves_memory_and_still_runs() {
        let before = resident_code_kb();
        let released = release().expect("Linux: the code mapping is found");
        let after = resident_code_kb();
        assert!(
            released >= before * 1024,
            "the whole mapping: {released} B, {before} kB resident"
        );
        // This test binary's start and the tests before it touched far
        // more code than reading smaps again does.
        assert!(
            after * 2 < before,
            "{before} kB resident before, {after} kB after"
        );
        // Code dropped comes back from the file as it was: this test
        // runs on after it, and so does the test binary.
    }
}
