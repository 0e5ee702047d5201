//! The operator's controls of a running room: pause and resume, the
//! admission rate, the caps, the opening time, an [`Amnesty`] over a store
//! outage, and closing the room with a message. Every change is counted
//! (`queuegate_room_control_changes_total{setting}`) and, with the
//! `tracing` feature, reported as an event with the old and the new value.
//!
//! The settings live here, per instance, as relaxed atomics read on every
//! join and heartbeat. A state that keeps the room's settings for every
//! instance (the Redis room, see [`RoomState::write_controls`]) makes them
//! one control for the whole room:
//!
//! - A change made here is applied here at once and marked pending; it is
//!   written to the shared settings before this instance's next join or
//!   heartbeat, or at once by [`WaitingRoom::sync_controls`] (the admin
//!   API calls it after every change). A write that fails stays pending
//!   and is tried again.
//! - Every operation first adopts the shared values this instance's state
//!   last read (its admission tick reads them at most about once a second,
//!   with no extra call), except those of its own changes still pending.
//!   So every instance obeys, and shows, a change made through any of them
//!   within about a second of its next operation.
//! - The first operation seeds the shared settings from this instance's
//!   configuration if the room has none yet; otherwise the shared values
//!   win (the Redis state logs a warning when they differ).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::engine::{check_rate, WaitingRoom};
use super::hook::JoinHook;
use super::state::{ControlWrite, RoomState};
use crate::amnesty::{Amnesty, AmnestyError};
use crate::clock::Clock;
use crate::error::{ConfigError, StoreError};
use crate::replay::ReplayStore;

/// The longest closing message, in bytes.
pub const MAX_CLOSE_MESSAGE: usize = 500;

/// A setting the operator changed (the `setting` label of
/// `queuegate_room_control_changes_total`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// The admission rate.
    AdmitPerSec,
    /// Pause or resume.
    Paused,
    /// The cap on admitted chains.
    MaxAdmitted,
    /// The cap on waiting places.
    MaxWaiting,
    /// The opening time.
    OpensAt,
    /// The amnesty window.
    Amnesty,
    /// Closing or reopening the room.
    Closed,
}

impl Setting {
    const ALL: [Setting; 7] = [
        Self::AdmitPerSec,
        Self::Paused,
        Self::MaxAdmitted,
        Self::MaxWaiting,
        Self::OpensAt,
        Self::Amnesty,
        Self::Closed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AdmitPerSec => "admit_per_sec",
            Self::Paused => "paused",
            Self::MaxAdmitted => "max_admitted",
            Self::MaxWaiting => "max_waiting",
            Self::OpensAt => "opens_at",
            Self::Amnesty => "amnesty",
            Self::Closed => "closed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn bit(self) -> u32 {
        1 << self.index()
    }

    fn of_bits(bits: u32) -> Vec<Setting> {
        Self::ALL
            .into_iter()
            .filter(|s| bits & s.bit() != 0)
            .collect()
    }
}

const ALL_BITS: u32 = (1 << Setting::ALL.len()) - 1;

/// Whether the state keeps the settings for every instance.
const SHARING_UNKNOWN: u8 = 0;
const SHARING_YES: u8 = 1;
const SHARING_NO: u8 = 2;

/// Why a control change was refused; nothing changed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A value out of range.
    #[error("{setting}: {reason}")]
    Invalid {
        /// The setting.
        setting: &'static str,
        /// What is wrong with the value.
        reason: &'static str,
    },
    /// The opening has happened: its time can no longer move.
    #[error("the queue has opened already: its opening time can no longer move")]
    OpeningPassed,
    /// A bad amnesty window.
    #[error(transparent)]
    Amnesty(#[from] AmnestyError),
    /// The shared settings could not be written or read: the change holds
    /// on this instance and is written when the store answers again.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The room's settings at one moment, as the operator sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlSnapshot {
    /// People admitted per second (also while paused).
    pub admit_per_sec: f64,
    /// Whether admission is paused.
    pub paused: bool,
    /// The cap on admitted chains alive at once.
    pub max_admitted: Option<u64>,
    /// The cap on waiting places.
    pub max_waiting: Option<u64>,
    /// When the queue opens (ms since the epoch; `None` = always open).
    pub opens_at_ms: Option<i64>,
    /// The closing message while the room is closed.
    pub closed: Option<Arc<str>>,
    /// The amnesty window `(from_ms, until_ms)`, if one was declared.
    pub amnesty: Option<(i64, i64)>,
}

const NO_CAP: u64 = u64::MAX;

fn cap(raw: u64) -> Option<u64> {
    (raw != NO_CAP).then_some(raw)
}

/// Settings that change while the room runs, and the count of changes.
pub(super) struct Control {
    per_sec_bits: AtomicU64,
    paused: AtomicBool,
    max_admitted: AtomicU64,
    max_waiting: AtomicU64,
    opens_at_ms: AtomicI64,
    /// Whether a state operation has run after the opening time.
    opened: AtomicBool,
    closed: AtomicBool,
    message: Mutex<Option<Arc<str>>>,
    changes: [AtomicU64; Setting::ALL.len()],
    /// Settings changed here and not yet written to the shared settings.
    pending: AtomicU32,
    /// Settings being written now (not overwritten by shared values).
    inflight: AtomicU32,
    /// `SHARING_*`: learnt at the first write.
    sharing: AtomicU8,
    /// The number of the shared settings last adopted.
    seen: AtomicU64,
    /// When an operation's write of the settings last failed.
    write_failed_ms: AtomicI64,
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Control")
            .field("per_sec", &self.per_sec())
            .field("paused", &self.paused())
            .field("max_admitted", &self.max_admitted())
            .field("max_waiting", &self.max_waiting())
            .field("opens_at_ms", &self.opens_at_ms())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Control {
    pub(super) fn new(
        per_sec: f64,
        paused: bool,
        max_admitted: Option<u64>,
        max_waiting: Option<u64>,
        opens_at_ms: i64,
    ) -> Self {
        Self {
            per_sec_bits: AtomicU64::new(per_sec.to_bits()),
            paused: AtomicBool::new(paused),
            max_admitted: AtomicU64::new(max_admitted.unwrap_or(NO_CAP)),
            max_waiting: AtomicU64::new(max_waiting.unwrap_or(NO_CAP)),
            opens_at_ms: AtomicI64::new(opens_at_ms),
            opened: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            message: Mutex::new(None),
            changes: Default::default(),
            pending: AtomicU32::new(0),
            inflight: AtomicU32::new(0),
            sharing: AtomicU8::new(SHARING_UNKNOWN),
            seen: AtomicU64::new(0),
            write_failed_ms: AtomicI64::new(i64::MIN),
        }
    }

    pub(super) fn per_sec(&self) -> f64 {
        f64::from_bits(self.per_sec_bits.load(Ordering::Relaxed))
    }

    pub(super) fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    pub(super) fn max_admitted(&self) -> Option<u64> {
        cap(self.max_admitted.load(Ordering::Relaxed))
    }

    pub(super) fn max_waiting(&self) -> Option<u64> {
        cap(self.max_waiting.load(Ordering::Relaxed))
    }

    pub(super) fn opens_at_ms(&self) -> i64 {
        self.opens_at_ms.load(Ordering::Relaxed)
    }

    pub(super) fn opened(&self) -> bool {
        self.opened.load(Ordering::Relaxed)
    }

    pub(super) fn note_opened(&self) {
        self.opened.store(true, Ordering::Relaxed);
    }

    /// The closing message, if the room is closed: one relaxed load while
    /// open (the hot path).
    pub(super) fn closed(&self) -> Option<Arc<str>> {
        if !self.closed.load(Ordering::Relaxed) {
            return None;
        }
        self.message
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn count(&self, setting: Setting) {
        self.changes[setting.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the state shares the settings (known after the first write).
    pub(super) fn shared(&self) -> bool {
        self.sharing.load(Ordering::Relaxed) == SHARING_YES
    }

    fn set_closed(&self, message: Option<Arc<str>>) -> Option<Arc<str>> {
        let mut slot = self.message.lock().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::replace(&mut *slot, message);
        self.closed.store(slot.is_some(), Ordering::Relaxed);
        old
    }
}

fn show_cap(c: Option<u64>) -> String {
    c.map_or_else(|| "none".to_owned(), |c| c.to_string())
}

impl<C: Clock, S: ReplayStore, R: RoomState, H: JoinHook> WaitingRoom<C, S, R, H> {
    /// Marks `setting` as this instance's, before its value changes, so
    /// adopting the shared values meanwhile does not undo the change (a
    /// change then refused writes the unchanged value again: harmless).
    fn mine(&self, setting: Setting) {
        self.control()
            .pending
            .fetch_or(setting.bit(), Ordering::Relaxed);
    }

    fn changed(&self, setting: Setting, old: &dyn fmt::Display, new: &dyn fmt::Display) {
        self.control().count(setting);
        #[cfg(feature = "tracing")]
        tracing::info!(
            queue = self.queue_name(),
            setting = setting.as_str(),
            old = %old,
            new = %new,
            "queuegate room setting changed"
        );
        #[cfg(not(feature = "tracing"))]
        let _ = (old, new);
    }

    /// The settings now: on a state that shares them, the shared values as
    /// this instance last read them (at most about a second old while the
    /// room has traffic; [`sync_controls`](Self::sync_controls) reads them
    /// again if older), with this instance's own changes not yet written.
    pub fn controls(&self) -> ControlSnapshot {
        self.adopt_shared();
        self.local_controls()
    }

    fn local_controls(&self) -> ControlSnapshot {
        let c = self.control();
        let opens = c.opens_at_ms();
        ControlSnapshot {
            admit_per_sec: c.per_sec(),
            paused: c.paused(),
            max_admitted: c.max_admitted(),
            max_waiting: c.max_waiting(),
            opens_at_ms: (opens != i64::MIN).then_some(opens),
            closed: c.closed(),
            amnesty: self.amnesty().window(),
        }
    }

    /// Writes this instance's pending changes to the shared settings (on a
    /// state that keeps them for every instance) and reads the shared
    /// settings again if this instance's view is older than about a
    /// second, then adopts them. Cheap to call every second (the demo does,
    /// so an instance without traffic stays current); a no-op on a state
    /// that does not share settings. A write refused (the opening passed)
    /// or failed (the store is down; the change stays pending) is the
    /// error.
    pub async fn sync_controls(&self) -> Result<(), ControlError> {
        let now = self.issuer().now_ms();
        let written = self.write_pending(now).await;
        let read = if self.control().shared() {
            let rule = self.rule(now);
            self.state()
                .refresh_controls(self.queue_name(), &rule)
                .await
        } else {
            Ok(())
        };
        self.adopt_shared();
        written?;
        read.map_err(ControlError::from)
    }

    /// Before a join or heartbeat: the seed or the pending changes written
    /// (one relaxed load when there is nothing to write), the shared
    /// values adopted. A failed write stays pending; the operation goes on.
    pub(super) async fn settle_controls(&self, now_ms: i64) {
        let c = self.control();
        match c.sharing.load(Ordering::Relaxed) {
            SHARING_NO => return,
            SHARING_YES if c.pending.load(Ordering::Relaxed) == 0 => {}
            // A write failed less than a second ago (the store is down):
            // the operations do not each wait for another one.
            _ if now_ms >= c.write_failed_ms.load(Ordering::Relaxed)
                && now_ms
                    < c.write_failed_ms
                        .load(Ordering::Relaxed)
                        .saturating_add(1_000) => {}
            _ => {
                if let Err(ControlError::Store(_)) = self.write_pending(now_ms).await {
                    c.write_failed_ms.store(now_ms, Ordering::Relaxed);
                }
            }
        }
        self.adopt_shared();
    }

    /// Seeds the shared settings (first call), then writes the pending
    /// changes.
    async fn write_pending(&self, now_ms: i64) -> Result<(), ControlError> {
        let c = self.control();
        match c.sharing.load(Ordering::Relaxed) {
            SHARING_NO => return Ok(()),
            SHARING_UNKNOWN => match self.write_bits(now_ms, true, ALL_BITS).await? {
                false => {
                    c.sharing.store(SHARING_NO, Ordering::Relaxed);
                    return Ok(());
                }
                true => c.sharing.store(SHARING_YES, Ordering::Relaxed),
            },
            _ => {}
        }
        let bits = c.pending.swap(0, Ordering::Relaxed);
        if bits == 0 {
            return Ok(());
        }
        match self.write_bits(now_ms, false, bits).await {
            Ok(_) => Ok(()),
            Err(ControlError::OpeningPassed) => {
                // Refused: the shared opening time stands; adopt it again.
                c.seen.store(0, Ordering::Relaxed);
                Err(ControlError::OpeningPassed)
            }
            Err(e) => {
                c.pending.fetch_or(bits, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// One write of the settings in `bits`; whether the state shares them.
    async fn write_bits(&self, now_ms: i64, seed: bool, bits: u32) -> Result<bool, ControlError> {
        let c = self.control();
        c.inflight.fetch_or(bits, Ordering::Relaxed);
        let values = self.local_controls();
        let write = ControlWrite {
            seed,
            changed: Setting::of_bits(bits),
            burst: self.burst_for(values.admit_per_sec),
            values,
        };
        let done = self
            .state()
            .write_controls(self.queue_name(), now_ms, &write)
            .await;
        c.inflight.fetch_and(!bits, Ordering::Relaxed);
        done.map(|shared| shared.is_some())
    }

    /// Adopts the shared settings the state last read, if they changed
    /// since last adopted, except this instance's changes not yet written.
    /// Not counted as changes (the instance that made them counted them).
    pub(super) fn adopt_shared(&self) {
        let c = self.control();
        if c.sharing.load(Ordering::Relaxed) != SHARING_YES {
            return;
        }
        let Some((number, shared)) = self
            .state()
            .shared_controls(self.queue_name(), c.seen.load(Ordering::Relaxed))
        else {
            return;
        };
        let mine = c.pending.load(Ordering::Relaxed) | c.inflight.load(Ordering::Relaxed);
        let take = |s: Setting| mine & s.bit() == 0;
        if take(Setting::AdmitPerSec) {
            c.per_sec_bits
                .store(shared.admit_per_sec.to_bits(), Ordering::Relaxed);
        }
        if take(Setting::Paused) {
            c.paused.store(shared.paused, Ordering::Relaxed);
        }
        if take(Setting::MaxAdmitted) {
            c.max_admitted
                .store(shared.max_admitted.unwrap_or(NO_CAP), Ordering::Relaxed);
        }
        if take(Setting::MaxWaiting) {
            c.max_waiting
                .store(shared.max_waiting.unwrap_or(NO_CAP), Ordering::Relaxed);
        }
        if take(Setting::OpensAt) {
            c.opens_at_ms
                .store(shared.opens_at_ms.unwrap_or(i64::MIN), Ordering::Relaxed);
        }
        if take(Setting::Closed) && c.closed() != shared.closed {
            c.set_closed(shared.closed.clone());
        }
        if take(Setting::Amnesty) && self.amnesty().window() != shared.amnesty {
            match shared.amnesty {
                // Checked when it was declared.
                Some((from, until)) => {
                    let _ = self.amnesty().declare(from, until);
                }
                None => self.amnesty().clear(),
            }
        }
        c.seen.store(number, Ordering::Relaxed);
    }

    /// Whether changes made through this instance wait to be written to
    /// the shared settings (the store did not answer; see
    /// [`sync_controls`](Self::sync_controls)).
    pub fn controls_pending(&self) -> bool {
        let c = self.control();
        c.shared() && (c.pending.load(Ordering::Relaxed) | c.inflight.load(Ordering::Relaxed)) != 0
    }

    /// The admission rate (people per second), paused or not.
    pub fn admit_per_sec(&self) -> f64 {
        self.control().per_sec()
    }

    /// Changes the admission rate while running. Admissions already earned
    /// are kept; the new rate counts from the next operation.
    pub fn set_admit_per_sec(&self, per_sec: f64) -> Result<(), ConfigError> {
        let per_sec = check_rate(per_sec)?;
        self.mine(Setting::AdmitPerSec);
        let old = f64::from_bits(
            self.control()
                .per_sec_bits
                .swap(per_sec.to_bits(), Ordering::Relaxed),
        );
        self.changed(Setting::AdmitPerSec, &old, &per_sec);
        Ok(())
    }

    /// Stops admitting (heartbeats go on; places are kept).
    pub fn pause(&self) {
        self.mine(Setting::Paused);
        let old = self.control().paused.swap(true, Ordering::Relaxed);
        self.changed(Setting::Paused, &old, &true);
    }

    /// Admits again, at the current rate, with nothing saved up from the
    /// pause.
    pub fn resume(&self) {
        self.mine(Setting::Paused);
        let old = self.control().paused.swap(false, Ordering::Relaxed);
        self.changed(Setting::Paused, &old, &false);
    }

    /// Whether admission is paused.
    pub fn is_paused(&self) -> bool {
        self.control().paused()
    }

    /// Caps the admitted chains alive at once (`None`: no cap).
    pub fn set_max_admitted(&self, max: Option<u64>) {
        self.mine(Setting::MaxAdmitted);
        let old = self
            .control()
            .max_admitted
            .swap(max.unwrap_or(NO_CAP), Ordering::Relaxed);
        self.changed(Setting::MaxAdmitted, &show_cap(cap(old)), &show_cap(max));
    }

    /// Caps the waiting places (`None`: no cap); joins beyond it are
    /// refused as `room_full`.
    pub fn set_max_waiting(&self, max: Option<u64>) {
        self.mine(Setting::MaxWaiting);
        let old = self
            .control()
            .max_waiting
            .swap(max.unwrap_or(NO_CAP), Ordering::Relaxed);
        self.changed(Setting::MaxWaiting, &show_cap(cap(old)), &show_cap(max));
    }

    /// When the queue opens (ms since the epoch; `i64::MIN` = always open).
    pub fn opens_at_ms(&self) -> i64 {
        self.control().opens_at_ms()
    }

    /// Moves the opening time (ms since the epoch). Refused once the
    /// opening has happened (its time has passed on this instance's clock,
    /// or the state has opened); a time already past opens the queue at
    /// the next operation.
    pub fn set_opens_at_ms(&self, at_ms: i64) -> Result<(), ControlError> {
        let c = self.control();
        let now = self.issuer().now_ms();
        let old = c.opens_at_ms();
        if c.opened() || now >= old {
            return Err(ControlError::OpeningPassed);
        }
        self.mine(Setting::OpensAt);
        c.opens_at_ms
            .compare_exchange(old, at_ms, Ordering::Relaxed, Ordering::Relaxed)
            .map_err(|_| ControlError::OpeningPassed)?;
        self.changed(Setting::OpensAt, &old, &at_ms);
        Ok(())
    }

    /// The amnesty shared by this room's verifier and state; give it to
    /// every other verifier of the room
    /// ([`Verifier::with_amnesty`](crate::Verifier::with_amnesty)).
    pub fn amnesty(&self) -> &Arc<Amnesty> {
        self.issuer().verifier().amnesty()
    }

    /// Forgives the liveness deadlines in `[from_ms, until_ms]` until
    /// `until_ms` (see [`Amnesty`]); replaces an earlier window.
    pub fn declare_amnesty(&self, from_ms: i64, until_ms: i64) -> Result<(), ControlError> {
        let old = self.amnesty().window();
        self.mine(Setting::Amnesty);
        self.amnesty().declare(from_ms, until_ms)?;
        self.changed(
            Setting::Amnesty,
            &show_window(old),
            &show_window(Some((from_ms, until_ms))),
        );
        Ok(())
    }

    /// Ends the amnesty at once.
    pub fn end_amnesty(&self) {
        let old = self.amnesty().window();
        self.mine(Setting::Amnesty);
        self.amnesty().clear();
        self.changed(Setting::Amnesty, &show_window(old), &"none");
    }

    /// Closes the room (sold out, event over): every join and heartbeat
    /// is refused as `room_closed` with `message` for the people waiting.
    /// The message is 1 to [`MAX_CLOSE_MESSAGE`] bytes without control
    /// characters.
    pub fn close(&self, message: &str) -> Result<(), ControlError> {
        let message = message.trim();
        if message.is_empty()
            || message.len() > MAX_CLOSE_MESSAGE
            || message.chars().any(char::is_control)
        {
            return Err(ControlError::Invalid {
                setting: "message",
                reason: "must be 1 to 500 bytes of text without control characters",
            });
        }
        self.mine(Setting::Closed);
        let old = self.control().set_closed(Some(message.into()));
        self.changed(Setting::Closed, &old.as_deref().unwrap_or("open"), &message);
        Ok(())
    }

    /// Opens a closed room again.
    pub fn reopen(&self) {
        self.mine(Setting::Closed);
        let old = self.control().set_closed(None);
        self.changed(Setting::Closed, &old.as_deref().unwrap_or("open"), &"open");
    }

    /// The closing message while the room is closed.
    pub fn closed_message(&self) -> Option<Arc<str>> {
        self.control().closed()
    }

    /// How many times `setting` was changed.
    pub fn control_changes(&self, setting: Setting) -> u64 {
        self.control().changes[setting.index()].load(Ordering::Relaxed)
    }

    /// `queuegate_room_control_changes_total{setting}` and the
    /// `queuegate_room_paused`, `queuegate_room_closed` and
    /// `queuegate_room_before_opening` gauges (the shared values on a state
    /// that shares them), as Prometheus text.
    pub fn render_control_prometheus(&self) -> String {
        let mut out = String::from(
            "# HELP queuegate_room_control_changes_total Changes of the room's settings by the operator.\n\
             # TYPE queuegate_room_control_changes_total counter\n",
        );
        for s in Setting::ALL {
            out.push_str(&format!(
                "queuegate_room_control_changes_total{{setting=\"{}\"}} {}\n",
                s.as_str(),
                self.control_changes(s)
            ));
        }
        let c = self.controls();
        let before_opening = c.opens_at_ms.is_some_and(|at| self.issuer().now_ms() < at);
        for (name, help, on) in [
            (
                "queuegate_room_paused",
                "Whether admission is paused.",
                c.paused,
            ),
            (
                "queuegate_room_closed",
                "Whether the room is closed.",
                c.closed.is_some(),
            ),
            (
                "queuegate_room_before_opening",
                "Whether the room's opening time is still ahead (people wait in the pre-queue).",
                before_opening,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}\n",
                u8::from(on)
            ));
        }
        out
    }
}

fn show_window(w: Option<(i64, i64)>) -> String {
    w.map_or_else(|| "none".to_owned(), |(a, b)| format!("{a}..={b}"))
}
