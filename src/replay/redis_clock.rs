//! The replay store's view of Redis's clock (single Redis): a shift added
//! to every keep-until the store sends, so that a Redis whose clock is far
//! off does not expire every record at once (Redis ahead) or keep them far
//! too long (Redis behind), while record lifetimes stay decided by one
//! clock, Redis's.
//!
//! Why this is safe (the argument the scripts rely on): the prelude refuses
//! (`{5}`) a ticket whose keep-until, as sent, has passed on Redis's clock,
//! and the records are written with that same keep-until (`PXAT`). As long
//! as a checker never adds a larger shift than the writer of a record did,
//! a record that is gone is never trusted: the check refuses first. So:
//!
//! - every instance uses the same shift: the offset closest to zero among
//!   the offsets the live instances measured and published under
//!   `<prefix>:clock` (all ahead: the smallest; all behind: the least
//!   behind; mixed signs: zero). One instance whose own clock is wrong
//!   measures a large offset alone and changes nothing: the others' near
//!   zero offsets keep the shift at zero, and that instance fails closed
//!   exactly as before;
//! - a shift within a quarter of the tolerance of zero is zero: while
//!   Redis's clock agrees with the instances', nothing changes;
//! - when the shift rises (Redis's clock jumped ahead, so records written
//!   under the old shift expired early), the old shift stays a *floor*
//!   until every record anyone may have written under it has expired: a
//!   ticket whose keep-until under the floor has passed (or is within the
//!   error bound of passing) on Redis's clock is sent with the floor and
//!   refused, never checked against a record that may be gone.
//!
//! The measurement: three `TIME` round trips, the shortest kept, read at
//! its midpoint against the system clock; the offset is known to within
//! half that round trip. At connect and every [`REFRESH`].

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Weak;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::aio::ConnectionManager;

use crate::error::StoreError;

/// How often the offset is measured again (and published).
pub(crate) const REFRESH: Duration = Duration::from_secs(5);

/// A published offset older than this (on Redis's clock) is no longer a
/// live instance's: it stops counting toward the shift.
const FRESH_MS: i64 = 3 * REFRESH.as_millis() as i64;

/// A measurement whose round trip is longer than this is discarded: it
/// bounds too little.
const MAX_ROUND_TRIP_MS: i64 = 1_000;

/// Allowance (ms) for the clocks' drift between two measurements, added
/// to the round-trip error.
const DRIFT_MS: i64 = 250;

/// The shift state of one store (single Redis). All relaxed atomics: a
/// request reads a consistent enough snapshot, since the floor is only
/// ever written at or below the shift before the shift rises.
#[derive(Debug)]
pub(crate) struct RedisClock {
    /// This instance's field in the published hash.
    id: String,
    /// Added to every keep-until sent (ms, Redis minus instances).
    shift: AtomicI64,
    /// The lowest shift under which a live record may have been written
    /// (equal to `shift` outside a transition).
    floor: AtomicI64,
    /// Until when (Redis's clock) the floor applies.
    floor_until_r: AtomicI64,
    /// This instance's last measured offset (Redis minus system clock).
    offset: AtomicI64,
    /// The error bound of `offset` plus the drift allowance.
    margin: AtomicI64,
    /// The longest keep-until ahead of its request's time this instance
    /// has sent (ms): bounds how long a record written now may live.
    ahead: AtomicI64,
    /// A quarter of the tolerance: shifts within it are zero.
    threshold: i64,
    /// Whether a first reading was applied.
    started: AtomicBool,
}

fn system_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One offset reading: Redis minus the system clock, and its error bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reading {
    pub offset_ms: i64,
    pub error_ms: i64,
    /// Redis's clock at the reading.
    pub redis_ms: i64,
}

/// The published entry of one instance: `<offset> <ahead> <seen_r>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub offset_ms: i64,
    pub ahead_ms: i64,
    pub seen_r: i64,
}

impl Entry {
    fn parse(v: &str) -> Option<Self> {
        let mut it = v.split(' ').map(str::parse::<i64>);
        let e = Self {
            offset_ms: it.next()?.ok()?,
            ahead_ms: it.next()?.ok()?,
            seen_r: it.next()?.ok()?,
        };
        it.next().is_none().then_some(e)
    }
}

/// The shift every instance derives from the live entries: the offset
/// closest to zero (mixed signs: zero), rounded toward zero to whole
/// seconds, and zero within `threshold`.
pub(crate) fn common_shift(offsets: &[i64], threshold: i64) -> i64 {
    let (Some(&lo), Some(&hi)) = (offsets.iter().min(), offsets.iter().max()) else {
        return 0;
    };
    let nearest = if lo > 0 {
        lo
    } else if hi < 0 {
        hi
    } else {
        return 0;
    };
    // Toward zero: a smaller shift ahead refuses sooner, a smaller one
    // behind keeps records longer; both fail closed.
    let s = nearest / 1_000 * 1_000;
    if s.abs() <= threshold {
        0
    } else {
        s
    }
}

impl RedisClock {
    pub(crate) fn new(tolerance_ms: i64) -> Self {
        let mut b = [0u8; 8];
        getrandom::getrandom(&mut b).expect("the operating system's random source failed");
        Self {
            id: format!("{:016x}", u64::from_be_bytes(b)),
            shift: AtomicI64::new(0),
            floor: AtomicI64::new(0),
            floor_until_r: AtomicI64::new(i64::MIN),
            offset: AtomicI64::new(0),
            margin: AtomicI64::new(0),
            ahead: AtomicI64::new(0),
            threshold: tolerance_ms / 4,
            started: AtomicBool::new(false),
        }
    }

    /// The shift in use (ms): for tests and the store's `Debug`.
    pub(crate) fn shift_ms(&self) -> i64 {
        self.shift.load(Ordering::Relaxed)
    }

    /// `keep_ms` (a keep-until on the instances' clock, for a request at
    /// `now_ms`) on Redis's clock: plus the shift, or plus the floor while
    /// a record written under the floor may already be gone. One relaxed
    /// load in the common case.
    pub(crate) fn to_redis(&self, keep_ms: i64, now_ms: i64) -> i64 {
        let ahead = keep_ms.saturating_sub(now_ms);
        // A write only when it grows (rarely): no contended line per request.
        if ahead > self.ahead.load(Ordering::Relaxed) {
            self.ahead.fetch_max(ahead, Ordering::Relaxed);
        }
        let shift = self.shift.load(Ordering::Relaxed);
        let floor = self.floor.load(Ordering::Relaxed);
        if floor >= shift {
            return keep_ms.saturating_add(shift);
        }
        // In a transition: Redis's time now, at the latest.
        let redis_now = now_ms
            .saturating_add(self.offset.load(Ordering::Relaxed))
            .saturating_add(self.margin.load(Ordering::Relaxed));
        if keep_ms.saturating_add(floor) > redis_now {
            keep_ms.saturating_add(shift)
        } else {
            // May be gone already: the floor, so the script refuses it
            // (or, if not yet passed, writes it under the floor, which the
            // floor's end covers).
            let k = keep_ms.saturating_add(floor);
            self.floor_until_r.fetch_max(k, Ordering::Relaxed);
            k
        }
    }

    /// Measures the offset: the shortest of three `TIME` round trips.
    pub(crate) async fn measure(
        conn: &ConnectionManager,
        call_timeout: Duration,
    ) -> Result<Reading, StoreError> {
        let mut best: Option<Reading> = None;
        for _ in 0..3 {
            let mut c = conn.clone();
            let sent = system_ms();
            let reply: (i64, i64) =
                tokio::time::timeout(call_timeout, ::redis::cmd("TIME").query_async(&mut c))
                    .await
                    .map_err(|_| StoreError::Timeout)?
                    .map_err(|e| StoreError::Backend(format!("redis {:?} error", e.kind())))?;
            let received = system_ms();
            let trip = received.saturating_sub(sent).max(0);
            let redis_ms = reply
                .0
                .saturating_mul(1_000)
                .saturating_add(reply.1 / 1_000);
            let r = Reading {
                offset_ms: redis_ms.saturating_sub(sent.saturating_add(trip / 2)),
                error_ms: trip / 2 + 1,
                redis_ms,
            };
            if best.map_or(true, |b| r.error_ms < b.error_ms) {
                best = Some(r);
            }
        }
        match best {
            Some(b) if b.error_ms * 2 <= MAX_ROUND_TRIP_MS => Ok(b),
            _ => Err(StoreError::Backend(
                "redis TIME round trips too slow to read its clock".into(),
            )),
        }
    }

    /// One refresh: measure, publish this instance's entry, read the
    /// others', and move the shift. On any failure nothing changes (the
    /// shift in use stays consistent with the records written under it).
    pub(crate) async fn refresh(
        &self,
        conn: &ConnectionManager,
        key: &str,
        call_timeout: Duration,
    ) -> Result<(), StoreError> {
        let r = Self::measure(conn, call_timeout).await?;
        let ahead = self.ahead.load(Ordering::Relaxed);
        let mine = format!("{} {} {}", r.offset_ms, ahead, r.redis_ms);
        let mut c = conn.clone();
        let (_, _, all): ((), (), Vec<(String, String)>) = tokio::time::timeout(
            call_timeout,
            ::redis::pipe()
                .cmd("HSET")
                .arg(key)
                .arg(&self.id)
                .arg(&mine)
                .cmd("PEXPIRE")
                .arg(key)
                .arg(86_400_000)
                .cmd("HGETALL")
                .arg(key)
                .query_async(&mut c),
        )
        .await
        .map_err(|_| StoreError::Timeout)?
        .map_err(|e| StoreError::Backend(format!("redis {:?} error", e.kind())))?;
        let entries: Vec<(String, Entry)> = all
            .into_iter()
            .filter_map(|(f, v)| Some((f, Entry::parse(&v)?)))
            .collect();
        self.apply(r, &entries);
        // Entries of instances gone long enough that no record of theirs
        // can be alive: dropped (best effort).
        let dead: Vec<&str> = entries
            .iter()
            .filter(|(_, e)| {
                e.seen_r
                    .saturating_add(e.ahead_ms.max(0))
                    .saturating_add(FRESH_MS)
                    < r.redis_ms
            })
            .map(|(f, _)| f.as_str())
            .collect();
        if !dead.is_empty() {
            let _: Result<Result<i64, _>, _> = tokio::time::timeout(
                call_timeout,
                ::redis::cmd("HDEL").arg(key).arg(&dead).query_async(&mut c),
            )
            .await;
        }
        Ok(())
    }

    /// Moves the shift after reading `r` and the published `entries`.
    pub(crate) fn apply(&self, r: Reading, entries: &[(String, Entry)]) {
        self.offset.store(r.offset_ms, Ordering::Relaxed);
        self.margin.store(r.error_ms + DRIFT_MS, Ordering::Relaxed);
        let live: Vec<i64> = entries
            .iter()
            .filter(|(_, e)| r.redis_ms.saturating_sub(e.seen_r) <= FRESH_MS)
            .map(|(_, e)| e.offset_ms)
            .chain(std::iter::once(r.offset_ms))
            .collect();
        let target = common_shift(&live, self.threshold);
        // How long a record written now may live, by anyone: the longest
        // keep-until ahead any instance published (or this one sent).
        let ahead = entries
            .iter()
            .map(|(_, e)| e.ahead_ms)
            .chain(std::iter::once(self.ahead.load(Ordering::Relaxed)))
            .max()
            .unwrap_or(0)
            .max(0);
        if !self.started.swap(true, Ordering::Relaxed) {
            // The first reading, before this store wrote anything: the
            // records of the others were written under the common shift
            // they derive from the same entries.
            self.floor.store(target, Ordering::Relaxed);
            self.shift.store(target, Ordering::Relaxed);
            return;
        }
        let shift = self.shift.load(Ordering::Relaxed);
        let floor = self.floor.load(Ordering::Relaxed);
        let until = self.floor_until_r.load(Ordering::Relaxed);
        let in_transition = floor < shift && until > r.redis_ms;
        let lowest = if in_transition { floor } else { shift };
        if target > shift {
            // Records written under the current shift (and the floor) may
            // now be past on Redis's clock: keep the lowest as the floor
            // until every one of them has expired, with a margin of two
            // refreshes for instances that have not switched yet.
            let end = r
                .redis_ms
                .saturating_add(ahead)
                .saturating_add(2 * FRESH_MS)
                .saturating_add(r.error_ms + DRIFT_MS);
            self.floor_until_r.fetch_max(end, Ordering::Relaxed);
            self.floor.store(lowest, Ordering::Relaxed);
            self.shift.store(target, Ordering::Relaxed);
        } else {
            // Falling (or unchanged): records written before live longer
            // than the new shift asks; safe at once.
            self.shift.store(target, Ordering::Relaxed);
            // Still covering older records: the floor stays.
            if !(in_transition && floor < target) {
                self.floor.store(target, Ordering::Relaxed);
            }
        }
    }

    /// Measures before the store serves (so a Redis far off is corrected
    /// from the first request), and starts the periodic refresh, which
    /// ends with the store.
    pub(crate) async fn start<T: Send + Sync + 'static>(
        owner: Weak<T>,
        clock: fn(&T) -> &Self,
        conn: ConnectionManager,
        key: String,
        call_timeout: Duration,
    ) {
        if let Some(o) = owner.upgrade() {
            // A failure here leaves the shift at zero: today's behaviour.
            let _ = clock(&o).refresh(&conn, &key, call_timeout).await;
        }
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                let Some(o) = owner.upgrade() else { return };
                let _ = clock(&o).refresh(&conn, &key, call_timeout).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 15_000;

    #[test]
    fn the_shift_is_the_offset_closest_to_zero() {
        assert_eq!(common_shift(&[], T), 0);
        assert_eq!(common_shift(&[3_600_400, 3_600_900], T), 3_600_000);
        assert_eq!(common_shift(&[-3_600_400, -3_600_900], T), -3_600_000);
        // One instance's clock wrong: the others keep it at zero.
        assert_eq!(common_shift(&[3_600_000, 20, -30], T), 0);
        assert_eq!(common_shift(&[-3_600_000, 40_000], T), 0);
        // Within a quarter of the tolerance: nothing changes.
        assert_eq!(common_shift(&[14_999, 15_500], T), 0);
        assert_eq!(common_shift(&[16_500], T), 16_000);
    }

    fn reading(offset_ms: i64, redis_ms: i64) -> Reading {
        Reading {
            offset_ms,
            error_ms: 1,
            redis_ms,
        }
    }

    #[test]
    fn a_rising_shift_keeps_the_old_as_floor_until_its_records_expire() {
        let c = RedisClock::new(60_000);
        let now = 1_000_000_000i64;
        // Redis right: no shift.
        c.apply(reading(5, now), &[]);
        assert_eq!(c.shift_ms(), 0);
        assert_eq!(c.to_redis(now + 90_000, now), now + 90_000);
        // Redis jumps an hour ahead: the shift follows, but a keep-until
        // that the jump put in the past keeps the floor (refused).
        let h = 3_600_000;
        c.apply(reading(h, now + h), &[]);
        assert_eq!(c.shift_ms(), h);
        assert_eq!(c.to_redis(now + 90_000, now), now + 90_000);
        // One far enough ahead that its record under the floor still
        // lives: the new shift.
        assert_eq!(c.to_redis(now + 2 * h, now), now + 3 * h);
        // Once every record of the floor has expired, the shift alone.
        let later = now + h + 10 * h;
        c.apply(reading(h, later), &[]);
        assert_eq!(c.to_redis(now + 90_000, now), now + 90_000 + h);
    }

    #[test]
    fn a_falling_shift_applies_at_once() {
        let c = RedisClock::new(60_000);
        let h = 3_600_000;
        c.apply(reading(h, h), &[]);
        assert_eq!(c.to_redis(10_000, 0), 10_000 + h);
        c.apply(reading(0, 2), &[]);
        assert_eq!(c.shift_ms(), 0);
        assert_eq!(c.to_redis(10_000, 0), 10_000);
    }

    #[test]
    fn entries_parse_strictly() {
        assert_eq!(
            Entry::parse("-5 90000 1700"),
            Some(Entry {
                offset_ms: -5,
                ahead_ms: 90_000,
                seen_r: 1_700
            })
        );
        assert_eq!(Entry::parse("1 2"), None);
        assert_eq!(Entry::parse("1 2 3 4"), None);
        assert_eq!(Entry::parse("x 2 3"), None);
    }
}
