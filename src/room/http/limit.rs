//! [`PerAddressLimit`]: an example join hook that limits joins per client
//! address.

use std::collections::HashMap;
use std::future::{ready, Future};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::duration_to_ms;
use crate::error::ConfigError;
use crate::room::hook::{JoinContext, JoinHook, JoinVerdict};

const SHARDS: usize = 16;

/// A join hook that lets each client address join at most `joins` times
/// per `per` (a smooth rate with that burst, GCRA), keyed by
/// [`ClientAddr::limit_key`](super::ClientAddr::limit_key): an IPv4
/// address, or an IPv6 /64.
///
/// It is an example to start from, with its limits in plain sight:
///
/// - **Carrier-grade NAT puts many honest people behind one address.**
///   Mobile carriers share one IPv4 address among hundreds or thousands of
///   phones, and so do companies, universities and some ISPs. A limit low
///   enough to stop one bot refuses all of them, so keep it generous (tens
///   per minute, not one) and treat it as a brake on floods, not as "one
///   place per person". A challenge or proof of work in the join hook
///   costs honest people behind a shared address less.
/// - **Counting is per instance.** Each process counts its own joins: with
///   N instances behind a load balancer that does not pin addresses, an
///   address may join up to N times the limit. A limit shared by every
///   instance needs shared state (a counter in Redis).
/// - **It needs the address.** It counts what the room was given in
///   [`JoinContext::client_addr`] (see
///   [`WaitingRoom::join_with`](crate::room::WaitingRoom::join_with) and
///   [`TrustedProxies`](super::TrustedProxies)); a join without one is let
///   through.
/// - **Memory is bounded** by `max_addresses` (default 1,000,000, about
///   50 MB): addresses whose count has run out are forgotten, and while
///   that many addresses are counted at once new addresses are let
///   through uncounted (see [`uncounted`](Self::uncounted)) rather than
///   refused — at the opening of a big sale, honest arrivals are what fills
///   the table, and an attacker who holds that many addresses is not
///   stopped by a per-address limit anyway.
///
/// Every join the hook lets through counts, a rejoin by someone already in
/// line (a reload) included.
///
/// ```
/// use std::time::Duration;
/// use queuegate::room::http::PerAddressLimit;
///
/// # fn main() -> Result<(), queuegate::ConfigError> {
/// // 20 joins a minute per address, at most 3 at once.
/// let limit = PerAddressLimit::new(20, Duration::from_secs(60))?.burst(3)?;
/// # let _ = limit;
/// # Ok(()) }
/// ```
pub struct PerAddressLimit {
    /// Milliseconds between joins at the sustained rate.
    interval_ms: i64,
    /// How far ahead of now an address's schedule may run: `(burst - 1)`
    /// intervals.
    tolerance_ms: i64,
    max_per_shard: usize,
    shards: [Mutex<Shard>; SHARDS],
    hasher: std::collections::hash_map::RandomState,
    uncounted: AtomicU64,
    refused: AtomicU64,
}

#[derive(Default)]
struct Shard {
    /// Per address key: the theoretical arrival time of its next join (ms).
    next_ms: HashMap<IpAddr, i64>,
    last_purge_ms: i64,
}

impl std::fmt::Debug for PerAddressLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerAddressLimit")
            .field("interval_ms", &self.interval_ms)
            .field("tolerance_ms", &self.tolerance_ms)
            .field("max_addresses", &(self.max_per_shard * SHARDS))
            .field("refused", &self.refused())
            .field("uncounted", &self.uncounted())
            .finish()
    }
}

impl PerAddressLimit {
    /// At most `joins` joins per `per` from one address, all of them at
    /// once if they come at once (burst `joins`).
    pub fn new(joins: u32, per: Duration) -> Result<Self, ConfigError> {
        let per_ms = duration_to_ms(per);
        if joins == 0 || per_ms <= 0 {
            return Err(ConfigError::Invalid {
                setting: "per-address join limit",
                reason: "needs at least one join in a period longer than zero",
            });
        }
        let interval_ms = (per_ms / i64::from(joins)).max(1);
        Ok(Self {
            interval_ms,
            tolerance_ms: interval_ms * (i64::from(joins) - 1),
            max_per_shard: 1_000_000 / SHARDS,
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
            hasher: Default::default(),
            uncounted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// At most `burst` joins at once (at least 1); the sustained rate stays.
    pub fn burst(mut self, burst: u32) -> Result<Self, ConfigError> {
        if burst == 0 {
            return Err(ConfigError::Invalid {
                setting: "per-address join burst",
                reason: "must be at least 1",
            });
        }
        self.tolerance_ms = self.interval_ms.saturating_mul(i64::from(burst) - 1);
        Ok(self)
    }

    /// Counts at most `max` addresses at once (default 1,000,000).
    pub fn max_addresses(mut self, max: usize) -> Self {
        self.max_per_shard = max.div_ceil(SHARDS).max(1);
        self
    }

    /// Joins refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Joins let through uncounted because the table was full.
    pub fn uncounted(&self) -> u64 {
        self.uncounted.load(Ordering::Relaxed)
    }

    /// Judges one join from `key` at `now_ms`: `Ok` or the wait (ms).
    fn judge(&self, key: IpAddr, now_ms: i64) -> Result<(), i64> {
        let shard = &self.shards[(self.hasher.hash_one(key) % SHARDS as u64) as usize];
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        let next = match shard.next_ms.get(&key) {
            Some(&t) => t.max(now_ms),
            None => {
                if shard.next_ms.len() >= self.max_per_shard {
                    // Forget addresses whose schedule has caught up with
                    // now (they are as good as new), at most once per
                    // interval so a full table costs one scan, not one per
                    // join.
                    if now_ms.saturating_sub(shard.last_purge_ms) >= self.interval_ms {
                        shard.last_purge_ms = now_ms;
                        shard.next_ms.retain(|_, t| *t > now_ms);
                    }
                    if shard.next_ms.len() >= self.max_per_shard {
                        self.uncounted.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                }
                now_ms
            }
        };
        // GCRA: the join is on schedule unless the address's schedule runs
        // further ahead of now than the burst allows.
        let ahead = next.saturating_sub(now_ms);
        if ahead > self.tolerance_ms {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(ahead - self.tolerance_ms);
        }
        shard
            .next_ms
            .insert(key, next.saturating_add(self.interval_ms));
        Ok(())
    }
}

impl JoinHook for PerAddressLimit {
    fn on_join(&self, join: &JoinContext<'_>) -> impl Future<Output = JoinVerdict> + Send {
        let verdict = match join.client_addr {
            None => JoinVerdict::Allow,
            Some(addr) => match self.judge(addr.limit_key(), join.now_ms) {
                Ok(()) => JoinVerdict::Allow,
                Err(wait_ms) => JoinVerdict::Refuse {
                    reason: "too many people joined from your network just now: \
                             please try again in a moment",
                    retry_after: Some(Duration::from_millis(wait_ms.unsigned_abs())),
                },
            },
        };
        ready(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_is_limited_and_others_are_not() {
        let l = PerAddressLimit::new(3, Duration::from_secs(60)).unwrap();
        let t = 1_700_000_000_000;
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(l.judge(a, t), Ok(()));
        }
        // The fourth waits one interval (20 s).
        assert_eq!(l.judge(a, t), Err(20_000));
        assert_eq!(l.judge(a, t + 19_999), Err(1));
        for i in 0..100u8 {
            assert_eq!(l.judge(IpAddr::from([198, 51, 100, i]), t), Ok(()));
        }
        // One interval later, one more.
        assert_eq!(l.judge(a, t + 20_000), Ok(()));
        assert_eq!(l.judge(a, t + 20_000), Err(20_000));
        // A minute of quiet: the full burst again.
        let later = t + 20_000 + 60_000;
        for _ in 0..3 {
            assert_eq!(l.judge(a, later), Ok(()));
        }
        assert_eq!(l.refused(), 3);
    }

    #[test]
    fn burst_is_separate_from_the_rate() {
        let l = PerAddressLimit::new(60, Duration::from_secs(60))
            .unwrap()
            .burst(2)
            .unwrap();
        let a = ip("192.0.2.1");
        assert_eq!(l.judge(a, 0), Ok(()));
        assert_eq!(l.judge(a, 0), Ok(()));
        assert_eq!(l.judge(a, 0), Err(1_000));
        assert_eq!(l.judge(a, 1_000), Ok(()));
        assert!(PerAddressLimit::new(0, Duration::from_secs(1)).is_err());
        assert!(PerAddressLimit::new(1, Duration::ZERO).is_err());
        assert!(l.burst(0).is_err());
    }

    #[test]
    fn memory_is_bounded_and_a_full_table_lets_newcomers_through() {
        let l = PerAddressLimit::new(1, Duration::from_secs(60))
            .unwrap()
            .max_addresses(SHARDS);
        let mut ok = 0;
        for i in 0..200u8 {
            if l.judge(IpAddr::from([10, 0, 0, i]), 0).is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 200);
        let held: usize = l
            .shards
            .iter()
            .map(|s| s.lock().unwrap().next_ms.len())
            .sum();
        assert!(held <= SHARDS, "{held} addresses held");
        assert!(l.uncounted() >= 200 - SHARDS as u64);
        // Once the counts run out, the table is purged and counts again.
        let a = ip("192.0.2.1");
        let later = 120_000;
        assert_eq!(l.judge(a, later), Ok(()));
        assert_eq!(l.judge(a, later), Err(60_000));
    }
}
