//! Wall-clock time as the records carry it.

/// Now, in Unix milliseconds (0 before 1970).
pub fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}
