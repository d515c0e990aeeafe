//! Training paced to a share of one core on a niced thread.

/// Runs `work` on a pool of one niced thread: candle hands its matrix
/// products to the current rayon pool, so they stay on that one thread
/// (otherwise they would spread over every core at normal priority), and
/// the pacer, which reads that thread's CPU time, sees all of the work.
pub fn in_background<T: Send>(
    cpu_share: f64,
    work: impl FnOnce(&mut CpuPacer) -> T + Send,
) -> Result<T, rayon::ThreadPoolBuildError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .thread_name(|_| "online-training".into())
        .start_handler(|_| lower_priority())
        .build()?;
    Ok(pool.install(|| {
        let mut pacer = CpuPacer::new(cpu_share);
        let result = work(&mut pacer);
        tracing::debug!(
            cpu_share = pacer.measured(),
            seconds = pacer.started.elapsed().as_secs_f64(),
            "training thread's share of a core"
        );
        result
    }))
}

/// Keeps the calling thread's CPU time at most `share` of the wall time
/// since the pacer was made, by sleeping when it is ahead.
pub struct CpuPacer {
    share: f64,
    started: std::time::Instant,
    cpu_at_start: std::time::Duration,
}

impl CpuPacer {
    pub fn new(share: f64) -> Self {
        Self {
            share,
            started: std::time::Instant::now(),
            cpu_at_start: thread_cpu_time(),
        }
    }

    /// Sleeps until the CPU time used is within the share.
    pub fn pace(&mut self) {
        if self.share >= 1.0 {
            return;
        }
        let used = thread_cpu_time().saturating_sub(self.cpu_at_start);
        let due = used.div_f64(self.share);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }

    /// CPU time used over wall time since the pacer was made.
    pub fn measured(&self) -> f64 {
        let used = thread_cpu_time().saturating_sub(self.cpu_at_start);
        used.as_secs_f64() / self.started.elapsed().as_secs_f64().max(1e-9)
    }
}

/// The calling thread's CPU time.
pub fn thread_cpu_time() -> std::time::Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `now` is.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } == 0;
    if !ok {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Nices the calling thread (Linux: per thread), so a trainer yields to
/// ingestion and scoring when the CPU is short.
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on the calling thread's id only changes its nice
    // value; a failure is harmless and ignored.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}
