//! [`JoinDoor`]: the door in front of the room's state at the opening
//! burst. Joins beyond its rate are answered without a store write: a pass
//! signed for the person's session that says "come back at T".

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use subtle::ConstantTimeEq;

use crate::clock::duration_to_ms;
use crate::error::ConfigError;
use crate::keys::KeyRing;
use crate::ticket::QueueId;

/// The request header a join carries its door pass in (the browser client
/// sends it by itself).
pub const DOOR_PASS_HEADER: &str = "queue-door-pass";

/// Pass layout: version (1), come-back time in ms (8, big-endian), tag (24).
const PASS_RAW: usize = 33;
/// Its text: base64url of 33 bytes, no padding, no spare bits.
const PASS_TEXT: usize = 44;
const PASS_VERSION: u8 = 1;
const TAG: usize = PASS_RAW - 9;
const LABEL: &[u8] = b"queuegate/1 door pass:";

/// A pass may be used this much before its time (timers and rounding).
const EARLY_MS: i64 = 250;

/// A rate of joins per instance, beyond which joins are answered without
/// touching the room's state: each one gets a **pass**, signed for its
/// session, that says "come back at T"; coming back with it from T on
/// goes straight through. Set it with
/// [`WaitingRoomBuilder::door`](super::WaitingRoomBuilder::door).
///
/// **The schedule.** The door keeps one number in memory, the time its
/// next free join slot comes (GCRA): a join that fits the rate and the
/// burst goes through; one that does not is given the next free slot, T,
/// plus a random jitter of up to [`jitter`](Self::jitter) (default 1 s),
/// and the slot is kept for it. Passes are handed out in arrival order, so
/// the door is first come, first served; the people coming back at their
/// time use the slots kept for them and are not counted again, so joins
/// reach the state at about the door's rate in all.
///
/// **The pass** is 44 characters: the come-back time and a 192-bit tag
/// (HMAC-SHA256 under a key derived from the room secret for the door
/// only) over the queue, that time and the session it was given to. The
/// pass is in the answer ([`RoomError::ComeBack`](super::RoomError::ComeBack))
/// and comes back in the join's [`DOOR_PASS_HEADER`]. A pass goes through
/// from 250 ms before its time until [`window`](Self::window) (default
/// 60 s) after it, as often as its session likes in that time (each is a
/// rejoin of the same place: one live place per session holds); presented
/// early it is answered with the same pass and the time left; presented
/// late it is ignored and the join queues at the door again. A pass that
/// is not one the room signed for this session and queue (forged, altered,
/// another session's) is refused ([`RoomError::BadPass`](super::RoomError::BadPass)).
/// None of this writes anything, anywhere: any instance with the same
/// secret honours any instance's pass.
///
/// **Per instance.** Each instance keeps its own schedule: N instances let
/// N times the rate through. Give each the share of the rate the state
/// should see.
///
/// **What the door cannot know.** It reads no state, so a person already
/// in line who reloads the page during a burst waits at the door like a
/// newcomer (their place lives until its deadline, at least the room's
/// near deadline), and a person given a time after the opening misses the
/// pre-queue's random draw and joins behind it: choose a rate at which the
/// arrivals before the opening fit. The join hook runs before the door, so
/// a per-address limit stops a bot's repeated joins before they take
/// slots.
pub struct JoinDoor {
    interval_us: i64,
    tolerance_us: i64,
    jitter_ms: u64,
    window_ms: i64,
    /// When the next free slot comes (µs since the epoch).
    next_us: AtomicI64,
    shed: AtomicU64,
    honoured: AtomicU64,
}

impl fmt::Debug for JoinDoor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinDoor")
            .field("interval_us", &self.interval_us)
            .field("tolerance_us", &self.tolerance_us)
            .field("jitter_ms", &self.jitter_ms)
            .field("window_ms", &self.window_ms)
            .field("shed", &self.shed())
            .field("honoured", &self.honoured())
            .finish()
    }
}

impl JoinDoor {
    /// At most `per_sec` joins per second through this instance's door,
    /// as many at once (burst) as one second's worth, at least 1.
    pub fn new(per_sec: f64) -> Result<Self, ConfigError> {
        if !(per_sec.is_finite() && per_sec > 0.0 && per_sec <= 1e6) {
            return Err(ConfigError::Invalid {
                setting: "join door rate",
                reason: "must be more than 0 and at most 1,000,000 joins per second",
            });
        }
        let interval_us = ((1e6 / per_sec).round() as i64).max(1);
        let burst = per_sec.ceil().max(1.0) as i64;
        Ok(Self {
            interval_us,
            tolerance_us: interval_us.saturating_mul(burst - 1),
            jitter_ms: 1_000,
            window_ms: 60_000,
            next_us: AtomicI64::new(i64::MIN),
            shed: AtomicU64::new(0),
            honoured: AtomicU64::new(0),
        })
    }

    /// At most `burst` joins at once (at least 1); the rate stays.
    pub fn burst(mut self, burst: u32) -> Result<Self, ConfigError> {
        if burst == 0 {
            return Err(ConfigError::Invalid {
                setting: "join door burst",
                reason: "must be at least 1",
            });
        }
        self.tolerance_us = self.interval_us.saturating_mul(i64::from(burst) - 1);
        Ok(self)
    }

    /// Spreads the come-back times over up to `jitter` after each slot
    /// (default 1 s; zero for none).
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter_ms = duration_to_ms(jitter).unsigned_abs();
        self
    }

    /// How long after its time a pass still goes through (default 60 s, at
    /// least 1 s): a phone asleep longer queues at the door again.
    pub fn window(mut self, window: Duration) -> Result<Self, ConfigError> {
        let ms = duration_to_ms(window);
        if ms < 1_000 {
            return Err(ConfigError::Invalid {
                setting: "join door window",
                reason: "must be at least one second",
            });
        }
        self.window_ms = ms;
        Ok(self)
    }

    /// Joins answered with a pass so far (nothing written).
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Joins let through on their pass so far.
    pub fn honoured(&self) -> u64 {
        self.honoured.load(Ordering::Relaxed)
    }

    /// Judges one join of `material` (the session) in `queue` at `now_ms`,
    /// with the pass it carries, if any. `random` spreads the come-back
    /// time.
    pub(crate) fn judge(
        &self,
        keys: &KeyRing,
        queue: QueueId,
        material: &[u8],
        presented: Option<&[u8]>,
        now_ms: i64,
        random: u64,
    ) -> DoorVerdict {
        if let Some(text) = presented {
            let Some(at_ms) = open(keys, queue, material, text) else {
                return DoorVerdict::Bad;
            };
            if now_ms < at_ms.saturating_sub(EARLY_MS) {
                return DoorVerdict::ComeBack(DoorPass::new(
                    String::from_utf8_lossy(text).into_owned(),
                    at_ms,
                    now_ms,
                ));
            }
            if now_ms <= at_ms.saturating_add(self.window_ms) {
                self.honoured.fetch_add(1, Ordering::Relaxed);
                return DoorVerdict::Through;
            }
            // Too late: at the door again, like a newcomer.
        }
        let now_us = now_ms.saturating_mul(1_000);
        let mut slot_us = 0;
        let through = self
            .next_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
                let start = next.max(now_us);
                slot_us = start.saturating_sub(self.tolerance_us);
                Some(start.saturating_add(self.interval_us))
            })
            .map(|next| next.max(now_us).saturating_sub(now_us) <= self.tolerance_us)
            .unwrap_or(true);
        if through {
            return DoorVerdict::Through;
        }
        self.shed.fetch_add(1, Ordering::Relaxed);
        let jitter = if self.jitter_ms == 0 {
            0
        } else {
            (random % (self.jitter_ms + 1)) as i64
        };
        let at_ms = (slot_us / 1_000).saturating_add(jitter).max(now_ms);
        DoorVerdict::ComeBack(DoorPass::new(
            seal(keys, queue, material, at_ms),
            at_ms,
            now_ms,
        ))
    }
}

/// What the door says to one join.
#[derive(Debug)]
pub(crate) enum DoorVerdict {
    /// In, now.
    Through,
    /// Come back at the pass's time.
    ComeBack(DoorPass),
    /// The pass presented is not one the room signed for this session.
    Bad,
}

/// The door's answer to a join beyond its rate: a pass and when to come
/// back with it. `Debug` does not print the pass.
#[derive(Clone, PartialEq, Eq)]
pub struct DoorPass {
    /// The pass, to send back in [`DOOR_PASS_HEADER`].
    pub pass: String,
    /// When it goes through (server time, ms since the epoch).
    pub at_ms: i64,
    /// How long from now that is, in ms.
    pub retry_after_ms: u64,
}

impl DoorPass {
    fn new(pass: String, at_ms: i64, now_ms: i64) -> Self {
        Self {
            pass,
            at_ms,
            retry_after_ms: at_ms.saturating_sub(now_ms).max(0).unsigned_abs(),
        }
    }

    /// The wait in whole seconds, rounded up (at least 1).
    pub fn wait_secs(&self) -> u64 {
        self.retry_after_ms.div_ceil(1000).max(1)
    }
}

impl fmt::Debug for DoorPass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DoorPass")
            .field("pass", &"REDACTED")
            .field("at_ms", &self.at_ms)
            .field("retry_after_ms", &self.retry_after_ms)
            .finish()
    }
}

fn tag(keys: &KeyRing, queue: QueueId, material: &[u8], head: &[u8; 9]) -> [u8; 32] {
    keys.door_tag(&[LABEL, &queue.0, head, material])
}

fn seal(keys: &KeyRing, queue: QueueId, material: &[u8], at_ms: i64) -> String {
    let mut raw = [0u8; PASS_RAW];
    raw[0] = PASS_VERSION;
    raw[1..9].copy_from_slice(&at_ms.to_be_bytes());
    let head: [u8; 9] = raw[..9].try_into().expect("9 bytes");
    raw[9..].copy_from_slice(&tag(keys, queue, material, &head)[..TAG]);
    encode(&raw)
}

/// The come-back time of `text` if it is a pass the room signed for
/// `material` in `queue`.
fn open(keys: &KeyRing, queue: QueueId, material: &[u8], text: &[u8]) -> Option<i64> {
    let raw = decode(text)?;
    if raw[0] != PASS_VERSION {
        return None;
    }
    let head: [u8; 9] = raw[..9].try_into().expect("9 bytes");
    let expected = tag(keys, queue, material, &head);
    if !bool::from(expected[..TAG].ct_eq(&raw[9..])) {
        return None;
    }
    Some(i64::from_be_bytes(raw[1..9].try_into().expect("8 bytes")))
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode(raw: &[u8; PASS_RAW]) -> String {
    let mut text = String::with_capacity(PASS_TEXT);
    for three in raw.chunks_exact(3) {
        let n = u32::from(three[0]) << 16 | u32::from(three[1]) << 8 | u32::from(three[2]);
        for i in 0..4 {
            text.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize]));
        }
    }
    text
}

/// Strict base64url of exactly 44 characters: one encoding per pass.
fn decode(text: &[u8]) -> Option<[u8; PASS_RAW]> {
    if text.len() != PASS_TEXT {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        }))
    };
    let mut raw = [0u8; PASS_RAW];
    for (four, three) in text.chunks_exact(4).zip(raw.chunks_exact_mut(3)) {
        let mut n = 0u32;
        for &c in four {
            n = n << 6 | value(c)?;
        }
        three.copy_from_slice(&n.to_be_bytes()[1..]);
    }
    Some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> KeyRing {
        KeyRing::new(1, &[7u8; 32]).unwrap()
    }

    const Q: QueueId = QueueId(*b"queue-id");

    fn pass_of(v: DoorVerdict) -> DoorPass {
        match v {
            DoorVerdict::ComeBack(p) => p,
            other => panic!("expected a pass, got {other:?}"),
        }
    }

    #[test]
    fn beyond_the_burst_each_join_gets_the_next_slot_in_order() {
        let (k, t0) = (keys(), 1_700_000_000_000);
        let door = JoinDoor::new(10.0)
            .unwrap()
            .burst(2)
            .unwrap()
            .jitter(Duration::ZERO);
        for _ in 0..2 {
            assert!(matches!(
                door.judge(&k, Q, b"s", None, t0, 0),
                DoorVerdict::Through
            ));
        }
        let times: Vec<i64> = (0..5)
            .map(|_| pass_of(door.judge(&k, Q, b"s", None, t0, 0)).at_ms)
            .collect();
        assert_eq!(times, [t0 + 100, t0 + 200, t0 + 300, t0 + 400, t0 + 500]);
        assert_eq!(door.shed(), 5);
        // A second later the schedule has caught up: one goes through again.
        assert!(matches!(
            door.judge(&k, Q, b"s", None, t0 + 1_000, 0),
            DoorVerdict::Through
        ));
    }

    #[test]
    fn a_pass_goes_through_at_its_time_for_its_session_only() {
        let (k, t0) = (keys(), 1_700_000_000_000);
        let door = JoinDoor::new(1.0).unwrap();
        assert!(matches!(
            door.judge(&k, Q, b"me", None, t0, 0),
            DoorVerdict::Through
        ));
        let p = pass_of(door.judge(&k, Q, b"me", None, t0, 123));
        assert_eq!(
            p.at_ms,
            t0 + 1_000 + 123,
            "slot, plus 123 % (1 s + 1) of jitter"
        );
        assert_eq!(p.pass.len(), PASS_TEXT);
        assert!(!format!("{p:?}").contains(&p.pass));
        let pass = p.pass.as_bytes();
        // Early: the same pass again, the slot not taken twice.
        let early = pass_of(door.judge(&k, Q, b"me", Some(pass), t0 + 500, 9));
        assert_eq!(
            (early.pass.as_str(), early.at_ms),
            (p.pass.as_str(), p.at_ms)
        );
        assert_eq!(early.retry_after_ms, (p.at_ms - t0 - 500) as u64);
        // On time: through, even though the schedule is full.
        let full = door.next_us.load(Ordering::Relaxed);
        assert!(matches!(
            door.judge(&k, Q, b"me", Some(pass), p.at_ms, 0),
            DoorVerdict::Through
        ));
        assert_eq!(
            door.next_us.load(Ordering::Relaxed),
            full,
            "not counted again"
        );
        assert_eq!(door.honoured(), 1);
        // Another session, another queue, another key: refused.
        assert!(matches!(
            door.judge(&k, Q, b"you", Some(pass), p.at_ms, 0),
            DoorVerdict::Bad
        ));
        let q2 = QueueId(*b"other-q!");
        assert!(matches!(
            door.judge(&k, q2, b"me", Some(pass), p.at_ms, 0),
            DoorVerdict::Bad
        ));
        let k2 = KeyRing::new(1, &[8u8; 32]).unwrap();
        assert!(matches!(
            door.judge(&k2, Q, b"me", Some(pass), p.at_ms, 0),
            DoorVerdict::Bad
        ));
        // Late: at the door again.
        let late = p.at_ms + 60_001;
        assert!(!matches!(
            door.judge(&k, Q, b"me", Some(pass), late, 0),
            DoorVerdict::Bad
        ));
        assert_eq!(door.honoured(), 1);
    }

    #[test]
    fn every_altered_pass_is_refused() {
        let (k, t0) = (keys(), 1_700_000_000_000);
        let door = JoinDoor::new(1.0).unwrap();
        let _ = door.judge(&k, Q, b"me", None, t0, 0);
        let p = pass_of(door.judge(&k, Q, b"me", None, t0, 0));
        for i in 0..PASS_TEXT {
            for c in [b'A', b'z', b'-', b'_'] {
                let mut t = p.pass.clone().into_bytes();
                if t[i] == c {
                    continue;
                }
                t[i] = c;
                assert!(
                    matches!(
                        door.judge(&k, Q, b"me", Some(&t), p.at_ms, 0),
                        DoorVerdict::Bad
                    ),
                    "{i} {c}"
                );
            }
        }
        // A pass for an earlier time, signed: its time is in the tag.
        let mut raw = decode(p.pass.as_bytes()).unwrap();
        raw[1..9].copy_from_slice(&(p.at_ms - 10_000).to_be_bytes());
        let moved = encode(&raw);
        assert!(matches!(
            door.judge(&k, Q, b"me", Some(moved.as_bytes()), t0, 0),
            DoorVerdict::Bad
        ));
        for junk in [&b""[..], b"x", &[0xff; 44], &[b'A'; 45]] {
            assert!(matches!(
                door.judge(&k, Q, b"me", Some(junk), t0, 0),
                DoorVerdict::Bad
            ));
        }
    }

    #[test]
    fn settings_fail_early() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 2e6] {
            assert!(JoinDoor::new(bad).is_err(), "{bad}");
        }
        assert!(JoinDoor::new(5.0).unwrap().burst(0).is_err());
        assert!(JoinDoor::new(5.0)
            .unwrap()
            .window(Duration::from_millis(10))
            .is_err());
    }
}
