//! Failed tokens per client address: the 11th wrong token within a minute
//! from one address is refused (429) without being checked, until the
//! oldest of its last ten failures is a minute old. Pure: every call takes
//! the time, so tests step a clock of their own.
//!
//! Memory is bounded: at most [`MAX_ADDRESSES`] addresses are tracked;
//! when the table is full and none of its entries has expired, new
//! addresses share one overflow entry, so a guesser with many addresses
//! throttles only those, and never pushes a tracked address out early.
//! IPv6 clients are tracked by their /64, which one host usually holds
//! whole.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failed tokens one address may present within [`WINDOW`].
pub const MAX_FAILURES: usize = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
pub const MAX_ADDRESSES: usize = 4096;

/// Who failed: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Client {
    Address(IpAddr),
    Overflow,
}

fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[derive(Debug, Default)]
struct Table {
    /// The instants of each client's last failures, oldest first, at most
    /// [`MAX_FAILURES`].
    failures: HashMap<Client, VecDeque<Instant>>,
}

impl Table {
    fn key(&self, ip: IpAddr) -> Client {
        let client = Client::Address(client_of(ip));
        if self.failures.contains_key(&client) || self.failures.len() < MAX_ADDRESSES {
            client
        } else {
            Client::Overflow
        }
    }

    fn forget_expired(&mut self, now: Instant) {
        self.failures.retain(|_, at| {
            at.back()
                .is_some_and(|last| now.saturating_duration_since(*last) < WINDOW)
        });
    }
}

/// The table of failed tokens, shared by every route that checks one.
#[derive(Debug, Clone, Default)]
pub struct FailedTokens(Arc<Mutex<Table>>);

impl FailedTokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long `ip` must wait before a token of its is checked again;
    /// `None`: it may try now.
    pub fn blocked_for(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let table = self.lock();
        let at = table.failures.get(&table.key(ip))?;
        if at.len() < MAX_FAILURES {
            return None;
        }
        let free_at = *at.front()? + WINDOW;
        (free_at > now).then(|| free_at - now)
    }

    /// Records a wrong token from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut table = self.lock();
        if table.failures.len() >= MAX_ADDRESSES
            && !table.failures.contains_key(&Client::Address(client_of(ip)))
        {
            table.forget_expired(now);
        }
        let key = table.key(ip);
        let at = table.failures.entry(key).or_default();
        if at.len() == MAX_FAILURES {
            at.pop_front();
        }
        at.push_back(now);
    }

    /// Addresses (and the overflow entry) tracked now.
    pub fn tracked(&self) -> usize {
        self.lock().failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_eleventh_failure_within_a_minute_is_refused_until_the_first_is_a_minute_old() {
        let limiter = FailedTokens::default();
        let t0 = Instant::now();
        let a = ip("192.0.2.7");
        for i in 0..MAX_FAILURES as u64 {
            let now = t0 + Duration::from_secs(i);
            assert_eq!(limiter.blocked_for(a, now), None, "attempt {}", i + 1);
            limiter.failed(a, now);
        }
        let eleventh = t0 + Duration::from_secs(10);
        assert_eq!(
            limiter.blocked_for(a, eleventh),
            Some(Duration::from_secs(50))
        );
        assert_eq!(limiter.blocked_for(ip("192.0.2.8"), eleventh), None);
        // A minute after the first failure, one more guess; its failure
        // blocks again until the second failure is a minute old.
        let later = t0 + WINDOW;
        assert_eq!(limiter.blocked_for(a, later), None);
        limiter.failed(a, later);
        assert_eq!(limiter.blocked_for(a, later), Some(Duration::from_secs(1)));
        // Ten failures spread over more than a minute never block.
        let b = ip("192.0.2.9");
        for i in 0..30u64 {
            let now = t0 + Duration::from_secs(7 * i);
            assert_eq!(limiter.blocked_for(b, now), None, "failure {i}");
            limiter.failed(b, now);
        }
    }

    #[test]
    fn an_ipv6_host_is_one_client_by_its_64_and_mapped_ipv4_is_ipv4() {
        let limiter = FailedTokens::default();
        let now = Instant::now();
        for i in 0..MAX_FAILURES {
            limiter.failed(ip(&format!("2001:db8:1:2::{:x}", i + 1)), now);
        }
        assert!(limiter
            .blocked_for(ip("2001:db8:1:2:ffff::1"), now)
            .is_some());
        assert!(limiter.blocked_for(ip("2001:db8:1:3::1"), now).is_none());
        for _ in 0..MAX_FAILURES {
            limiter.failed(ip("::ffff:192.0.2.1"), now);
        }
        assert!(limiter.blocked_for(ip("192.0.2.1"), now).is_some());
    }

    #[test]
    fn the_table_is_bounded_and_a_full_one_sends_newcomers_to_the_overflow() {
        let limiter = FailedTokens::default();
        let t0 = Instant::now();
        let tracked = ip("198.51.100.1");
        for _ in 0..MAX_FAILURES {
            limiter.failed(tracked, t0);
        }
        let many = |n: u32| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
        for n in 0..2 * MAX_ADDRESSES as u32 {
            limiter.failed(many(n), t0);
        }
        assert_eq!(limiter.tracked(), MAX_ADDRESSES + 1, "the overflow entry");
        assert!(
            limiter.blocked_for(tracked, t0).is_some(),
            "a flood does not push a tracked address out"
        );
        // Newcomers past the cap share one entry: they are blocked together.
        assert!(limiter
            .blocked_for(many(3 * MAX_ADDRESSES as u32), t0)
            .is_some());
        // Once the entries have expired, a newcomer gets a place of its own.
        let later = t0 + WINDOW;
        limiter.failed(ip("203.0.113.5"), later);
        assert_eq!(limiter.tracked(), 1);
        assert!(limiter.blocked_for(tracked, later).is_none());
        assert!(limiter.blocked_for(ip("203.0.113.5"), later).is_none());
    }
}
