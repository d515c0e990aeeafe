//! The scorer's thread as a batch thread (`pipeline.scorer_sched_batch`).
//!
//! Linux's `SCHED_BATCH` keeps a thread's nice level and its share of the
//! CPU, but a woken batch thread does not preempt the thread that woke it.
//! The input wakes the scorer whenever it queues windows for a parked
//! scorer; as an ordinary thread the scorer then took the input's core
//! there and then, scored a window or two and parked again: on 2 cores
//! shared with a broker, about 17 000 switches a second each way. As a
//! batch thread it runs once the input's thread waits on its socket or its
//! time slice ends, and finds more windows queued (docs/measured.md, "The
//! scorer as a batch thread").

/// Holds the calling thread in `SCHED_BATCH` until dropped, then gives it
/// back its policy (the scorer runs on a thread of the runtime's blocking
/// pool, which may run other work afterwards).
#[derive(Debug)]
pub(crate) struct BatchThread {
    previous: i32,
}

impl BatchThread {
    /// Makes the calling thread a batch thread. `Ok(None)`: left as it is,
    /// because its policy is not the ordinary one (a real-time policy set by
    /// whoever started the daemon stays) or this is not Linux.
    pub(crate) fn enter() -> std::io::Result<Option<Self>> {
        Ok(imp::enter()?.map(|previous| Self { previous }))
    }

    /// [`enter`](Self::enter) for the scorer: a refusal (a seccomp filter,
    /// say) is logged, and the scorer runs as an ordinary thread.
    pub(crate) fn for_scorer() -> Option<Self> {
        Self::enter().unwrap_or_else(|error| {
            tracing::warn!(
                %error,
                "the scorer's thread stays an ordinary thread (pipeline.scorer_sched_batch)"
            );
            None
        })
    }
}

impl Drop for BatchThread {
    fn drop(&mut self) {
        imp::restore(self.previous);
    }
}

#[cfg(target_os = "linux")]
mod imp {
    /// The policy the calling thread had, once it is `SCHED_BATCH`.
    pub fn enter() -> std::io::Result<Option<i32>> {
        // SAFETY: 0 names the calling thread; no pointer is kept.
        let previous = unsafe { libc::sched_getscheduler(0) };
        if previous < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if previous != libc::SCHED_OTHER {
            return Ok(None);
        }
        set(libc::SCHED_BATCH)?;
        Ok(Some(previous))
    }

    pub fn restore(previous: i32) {
        // Leaving SCHED_BATCH for SCHED_OTHER needs no privilege; should it
        // fail, the thread only stays a batch thread.
        let _ = set(previous);
    }

    fn set(policy: i32) -> std::io::Result<()> {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: 0 names the calling thread, and `param` outlives the call.
        if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub fn enter() -> std::io::Result<Option<i32>> {
        Ok(None)
    }

    pub fn restore(_previous: i32) {}
}

#[cfg(target_os = "linux")]
#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> i32 {
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn the_thread_is_a_batch_thread_while_held_and_ordinary_after() {
        std::thread::spawn(|| {
            assert_eq!(policy(), libc::SCHED_OTHER);
            let held = BatchThread::enter().expect("sched_setscheduler");
            assert!(held.is_some());
            assert_eq!(policy(), libc::SCHED_BATCH);
            drop(held);
            assert_eq!(policy(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_not_in_the_ordinary_policy_is_left_as_it_is() {
        std::thread::spawn(|| {
            let param = libc::sched_param { sched_priority: 0 };
            assert_eq!(
                unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) },
                0
            );
            let held = BatchThread::enter().expect("sched_getscheduler");
            assert!(held.is_none());
            assert_eq!(policy(), libc::SCHED_IDLE);
        })
        .join()
        .unwrap();
    }
}
