//! [`WaitingRoom`]: joins, heartbeats and admission on top of the
//! [`Issuer`] and a [`RoomState`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::StatusCode;

use super::control::Control;
use super::door::{DoorPass, DoorVerdict, JoinDoor, DOOR_PASS_HEADER};
use super::hook::{JoinHook, JoinRequest, JoinVerdict};
use super::schedule::{
    estimated_wait_ms, jittered_retry_ms, os_random_u64, AdmissionRule, Liveness, SplitMix,
};
use super::state::{
    BeatRecord, ChainFacts, IssuedRecord, JoinRecord, Joined, Place, RoomState, RoomStats,
};
use super::MemoryRoomState;
use crate::clock::{duration_to_ms, Clock, SystemClock};
use crate::error::{ConfigError, StoreError};
use crate::issuer::{Issuer, JoinDecision, Minted};
use crate::rejection::{Rejection, ReplayReason};
use crate::replay::{MemoryReplayStore, ReplayStore};
use crate::ticket::{Binding, Claims, TicketId};
use crate::verify::{ClientTime, ClockSample, Presented};

/// How often a rejoin reads the chain's facts again when it raced another
/// rejoin or renewal of the same chain, before answering `busy`.
const REJOIN_ATTEMPTS: usize = 3;

/// What a join or heartbeat hands back to the client. `Debug` does not
/// print the ticket.
#[derive(Clone, PartialEq, Eq)]
pub struct RoomTicket {
    /// The ticket to present on the next heartbeat (and, once admitted, on
    /// protected routes).
    pub ticket: String,
    /// The chain's id.
    pub ticket_id: TicketId,
    /// Place in the queue (1 = first); `0` before the opening, when places
    /// are not drawn yet. (The ticket's own `position` claim is 32 bits and
    /// saturates at `u32::MAX`; it is informational.)
    pub position: u64,
    /// Live people waiting in front.
    pub ahead: u64,
    /// Estimated wait until admission; `None` while admission is paused.
    pub estimated_wait: Option<Duration>,
    /// Whether `ticket` is an admitted ticket.
    pub admitted: bool,
    /// Whether this very response carries the chain's first admitted
    /// ticket.
    pub newly_admitted: bool,
    /// When to send the next heartbeat (jittered, well before the
    /// deadline).
    pub retry_after_ms: u64,
    /// The liveness deadline of `ticket` (ms since the epoch).
    pub live_until_ms: i64,
    /// Time left until the queue opens (0 once open).
    pub opens_in_ms: u64,
}

impl fmt::Debug for RoomTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomTicket")
            .field("ticket", &"REDACTED")
            .field("ticket_id", &self.ticket_id)
            .field("position", &self.position)
            .field("ahead", &self.ahead)
            .field("estimated_wait", &self.estimated_wait)
            .field("admitted", &self.admitted)
            .field("newly_admitted", &self.newly_admitted)
            .field("retry_after_ms", &self.retry_after_ms)
            .field("live_until_ms", &self.live_until_ms)
            .field("opens_in_ms", &self.opens_in_ms)
            .finish()
    }
}

/// Why a join or heartbeat was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// The presented ticket (or the client clock at join) was refused; the
    /// state store failing is `store_unavailable` (always fail closed).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The join hook refused the join.
    #[error("{reason}")]
    Refused {
        /// The hook's reason.
        reason: &'static str,
        /// When to try again, in ms, if it can help.
        retry_after_ms: Option<u64>,
    },
    /// The room's waiting capacity is used up.
    #[error("the waiting room is full: please try again in a minute")]
    Full,
    /// This session's first join is still being processed.
    #[error("your place is being set up: please retry in a moment")]
    Busy,
    /// The operator closed the room (sold out, event over); the message is
    /// theirs. `410 Gone`: retrying does not help.
    #[error("{message}")]
    Closed {
        /// The operator's message for the people waiting.
        message: Arc<str>,
    },
    /// The chain is no longer in the room (it left after booking, or was
    /// dropped): the client must rejoin.
    #[error("this place in the queue has ended: please rejoin the queue")]
    Ended,
    /// The join door ([`JoinDoor`]) is at its rate: nothing was written;
    /// come back at the pass's time with the pass. `429`.
    #[error(
        "many people are joining right now: your page joins by itself in about {} s, please keep it open",
        .pass.wait_secs()
    )]
    ComeBack {
        /// The pass and when it goes through.
        pass: DoorPass,
    },
    /// The join carried a door pass the room did not sign for this
    /// session and queue (forged, altered, another session's). `403`;
    /// nothing was written.
    #[error("this pass to the waiting room is not valid here: please rejoin the queue")]
    BadPass,
}

impl RoomError {
    /// A stable machine code: the rejection's code, or `join_refused`,
    /// `room_full`, `busy`, `ended`, `room_closed`, `come_back`, `bad_pass`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Rejected(r) => r.code().as_str(),
            Self::Refused { .. } => "join_refused",
            Self::Full => "room_full",
            Self::Busy => "busy",
            Self::Ended => "ended",
            Self::Closed { .. } => "room_closed",
            Self::ComeBack { .. } => "come_back",
            Self::BadPass => "bad_pass",
        }
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Rejected(r) => r.status(),
            Self::Refused { .. } | Self::ComeBack { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Full | Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::Ended | Self::Closed { .. } => StatusCode::GONE,
            Self::BadPass => StatusCode::FORBIDDEN,
        }
    }

    /// When to retry, if retrying can help.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Self::Rejected(r) => r.retry_after_ms(),
            Self::Refused { retry_after_ms, .. } => *retry_after_ms,
            Self::Full => Some(60_000),
            Self::Busy => Some(500),
            Self::ComeBack { pass } => Some(pass.retry_after_ms),
            Self::Ended | Self::Closed { .. } | Self::BadPass => None,
        }
    }
}

/// A waiting room for one queue: people join, heart-beat, and are admitted
/// at a set rate, each holding a heartbeat chain of signed tickets.
///
/// Built with [`WaitingRoom::builder`]. All decisions use the issuer's
/// (injected, monotone) clock; admission advances on every join and
/// heartbeat from elapsed time, so no background task is needed (call
/// [`sweep`](Self::sweep) now and then only to free memory).
pub struct WaitingRoom<C = SystemClock, S = MemoryReplayStore, R = MemoryRoomState, H = ()> {
    issuer: Issuer<C, S>,
    state: R,
    hook: H,
    queue: Arc<str>,
    control: Control,
    burst_secs: f64,
    liveness: Liveness,
    rng: SplitMix,
    door: Option<JoinDoor>,
}

impl<C, S, R, H> fmt::Debug for WaitingRoom<C, S, R, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitingRoom")
            .field("queue", &self.queue)
            .field("control", &self.control)
            .field("liveness", &self.liveness)
            .finish_non_exhaustive()
    }
}

/// Builds a [`WaitingRoom`]. Defaults: 50 people per second, no cap on
/// admitted chains or waiting places, open now, [`Liveness::default`], no
/// join hook, one second of admissions saved up at most.
#[must_use]
pub struct WaitingRoomBuilder<C, S, R, H> {
    issuer: Issuer<C, S>,
    state: R,
    hook: H,
    per_sec: f64,
    paused: bool,
    burst_secs: f64,
    max_admitted: Option<u64>,
    max_waiting: Option<u64>,
    opens_at_ms: Option<i64>,
    liveness: Liveness,
    door: Option<JoinDoor>,
}

impl<C, S, R, H> fmt::Debug for WaitingRoomBuilder<C, S, R, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitingRoomBuilder")
            .field("per_sec", &self.per_sec)
            .field("paused", &self.paused)
            .field("max_admitted", &self.max_admitted)
            .field("max_waiting", &self.max_waiting)
            .field("opens_at_ms", &self.opens_at_ms)
            .field("liveness", &self.liveness)
            .finish_non_exhaustive()
    }
}

pub(super) fn check_rate(per_sec: f64) -> Result<f64, ConfigError> {
    if per_sec.is_finite() && per_sec >= 0.0 {
        Ok(per_sec)
    } else {
        Err(ConfigError::Invalid {
            setting: "admit_per_sec",
            reason: "must be a finite number of people per second, 0 or more",
        })
    }
}

impl<C: Clock, S: ReplayStore, R: RoomState> WaitingRoom<C, S, R, ()> {
    /// A builder for a room that issues with `issuer` (which names the
    /// queue) and keeps its state in `state`.
    pub fn builder(issuer: Issuer<C, S>, state: R) -> WaitingRoomBuilder<C, S, R, ()> {
        WaitingRoomBuilder {
            issuer,
            state,
            hook: (),
            per_sec: 50.0,
            paused: false,
            burst_secs: 1.0,
            max_admitted: None,
            max_waiting: None,
            opens_at_ms: None,
            liveness: Liveness::default(),
            door: None,
        }
    }
}

impl<C: Clock, S: ReplayStore, R: RoomState, H: JoinHook> WaitingRoomBuilder<C, S, R, H> {
    /// People admitted per second (0 pauses admission).
    pub fn admit_per_sec(mut self, per_sec: f64) -> Result<Self, ConfigError> {
        self.per_sec = check_rate(per_sec)?;
        Ok(self)
    }

    /// Caps the admitted chains alive at once (people on the booking form).
    pub fn max_admitted(mut self, max: u64) -> Self {
        self.max_admitted = Some(max);
        self
    }

    /// Caps the waiting places: joins beyond it are refused as
    /// [`RoomError::Full`]. Admitted people have their own capacity, so a
    /// join flood never locks them out.
    pub fn max_waiting(mut self, max: u64) -> Self {
        self.max_waiting = Some(max);
        self
    }

    /// Starts paused (nobody admitted until [`WaitingRoom::resume`]).
    pub fn paused(mut self, paused: bool) -> Self {
        self.paused = paused;
        self
    }

    /// How many seconds' worth of admissions may be saved up while nobody
    /// is waiting (default 1).
    pub fn burst(mut self, seconds: Duration) -> Result<Self, ConfigError> {
        let secs = seconds.as_secs_f64();
        if secs <= 0.0 {
            return Err(ConfigError::Invalid {
                setting: "burst",
                reason: "must be longer than zero",
            });
        }
        self.burst_secs = secs;
        Ok(self)
    }

    /// Opens the queue at `at`: everyone who joins before it is placed in
    /// random order at the opening.
    pub fn opens_at(mut self, at: DateTime<Utc>) -> Self {
        self.opens_at_ms = Some(at.timestamp_millis());
        self
    }

    /// Opens the queue at `ms` milliseconds since the Unix epoch.
    pub fn opens_at_ms(mut self, ms: i64) -> Self {
        self.opens_at_ms = Some(ms);
        self
    }

    /// The liveness deadlines: `near` near the front and while admitted,
    /// at most `max` far from it.
    pub fn liveness(mut self, near: Duration, max: Duration) -> Result<Self, ConfigError> {
        let (near, max) = (duration_to_ms(near), duration_to_ms(max));
        if near <= 0 || max <= 0 {
            return Err(ConfigError::Invalid {
                setting: "liveness",
                reason: "deadlines must be longer than zero",
            });
        }
        self.liveness = Liveness {
            near_ms: near.min(max),
            max_ms: max,
        };
        Ok(self)
    }

    /// Puts a door in front of joins: beyond its rate, a join is answered
    /// with a pass to come back later ([`RoomError::ComeBack`]) and
    /// nothing is written to the state (see [`JoinDoor`]). Default: no
    /// door.
    pub fn door(mut self, door: JoinDoor) -> Self {
        self.door = Some(door);
        self
    }

    /// Sets the join hook (refuse or slow joins).
    pub fn join_hook<H2: JoinHook>(self, hook: H2) -> WaitingRoomBuilder<C, S, R, H2> {
        WaitingRoomBuilder {
            issuer: self.issuer,
            state: self.state,
            hook,
            per_sec: self.per_sec,
            paused: self.paused,
            burst_secs: self.burst_secs,
            max_admitted: self.max_admitted,
            max_waiting: self.max_waiting,
            opens_at_ms: self.opens_at_ms,
            liveness: self.liveness,
            door: self.door,
        }
    }

    /// Builds the room. A key ring of several keys (a rotation under way)
    /// must have a room secret ([`KeyRingBuilder::room_secret`]): places
    /// are found under the room key, and without a room secret that key
    /// follows the signing key, so the rotation would end every place.
    ///
    /// [`KeyRingBuilder::room_secret`]: crate::KeyRingBuilder::room_secret
    pub fn build(self) -> Result<WaitingRoom<C, S, R, H>, ConfigError> {
        let keys = self.issuer.verifier().keys();
        if keys.key_ids().nth(1).is_some() && !keys.has_room_secret() {
            return Err(ConfigError::Invalid {
                setting: "room_secret",
                reason: "a key ring of several keys is a rotation: give it a room secret \
                         (KeyRingBuilder::room_secret) kept across rotations, or the \
                         rotation ends every place in the room",
            });
        }
        let opens_at_ms = self.opens_at_ms.unwrap_or(i64::MIN);
        self.state
            .share_amnesty(self.issuer.verifier().amnesty().clone());
        Ok(WaitingRoom {
            queue: self.issuer.verifier().policy().queue_name().into(),
            issuer: self.issuer,
            state: self.state,
            hook: self.hook,
            control: Control::new(
                self.per_sec,
                self.paused,
                self.max_admitted,
                self.max_waiting,
                opens_at_ms,
            ),
            burst_secs: self.burst_secs,
            liveness: self.liveness,
            rng: SplitMix::from_os(),
            door: self.door,
        })
    }
}

impl<C: Clock, S: ReplayStore, R: RoomState, H: JoinHook> WaitingRoom<C, S, R, H> {
    /// The issuer.
    pub fn issuer(&self) -> &Issuer<C, S> {
        &self.issuer
    }

    /// The state.
    pub fn state(&self) -> &R {
        &self.state
    }

    /// The queue's name.
    pub fn queue_name(&self) -> &str {
        &self.queue
    }

    /// The liveness deadlines in use.
    pub fn liveness(&self) -> Liveness {
        self.liveness
    }

    /// The join door, if the room has one (its counts: [`JoinDoor::shed`],
    /// [`JoinDoor::honoured`]).
    pub fn door(&self) -> Option<&JoinDoor> {
        self.door.as_ref()
    }

    /// The run-time settings (see the `control` module).
    pub(super) fn control(&self) -> &Control {
        &self.control
    }

    /// The most admissions saved up while nobody waits, at `per_sec`.
    pub(super) fn burst_for(&self, per_sec: f64) -> f64 {
        (per_sec * self.burst_secs).max(1.0)
    }

    pub(super) fn rule(&self, now_ms: i64) -> AdmissionRule {
        let per_sec = if self.is_paused() {
            0.0
        } else {
            self.admit_per_sec()
        };
        // The opening shuffle's seed comes straight from the OS (not from
        // the jitter sequence, whose outputs clients see), until a state
        // operation after the opening time has run: from then on the state
        // has opened and ignores the seed.
        let opens_at_ms = self.control.opens_at_ms();
        let shuffle_seed = if now_ms >= opens_at_ms && !self.control.opened() {
            os_random_u64()
        } else {
            0
        };
        AdmissionRule {
            now_ms,
            per_sec,
            burst: self.burst_for(per_sec),
            max_admitted: self.control.max_admitted(),
            opens_at_ms,
            shuffle_seed,
        }
    }

    fn note_opened(&self, rule: &AdmissionRule) {
        if rule.is_open() {
            self.control.note_opened();
        }
    }

    /// A state store failure: `store_unavailable` with the policy's
    /// `Retry-After` (always fail closed).
    fn store_failed(&self, _: StoreError) -> RoomError {
        RoomError::Rejected(self.issuer.verifier().policy().store_unavailable())
    }

    /// The room binding: under the long-lived room key, so a rotation of
    /// the signing key does not move anyone's place.
    fn bind(&self, material: &[u8]) -> Binding {
        self.issuer
            .verifier()
            .keys()
            .room_bind(self.issuer.verifier().policy().queue_id(), material)
    }

    /// What the room decides for a place: deadline, estimate, admission.
    fn decide(&self, place: &Place, rule: &AdmissionRule) -> (JoinDecision, u64) {
        let near = self.liveness.near_ms.min(self.liveness.max_ms);
        let until_open = rule.opens_at_ms.saturating_sub(rule.now_ms).max(0);
        let (live_for, wait, retry) = if place.admitted {
            let live = near;
            (live, Some(0), jittered_retry_ms(live, self.rng.next_u64()))
        } else if place.position == 0 {
            // Before the opening: come back just after it, spread over a
            // second, so the first heartbeat after the shuffle shows the
            // place drawn.
            let live = until_open
                .saturating_add(near)
                .clamp(near, self.liveness.max_ms);
            let retry = jittered_retry_ms(live, self.rng.next_u64())
                .min(until_open.unsigned_abs() + self.rng.next_u64() % 1_000);
            (live, Some(until_open), retry)
        } else {
            let wait = estimated_wait_ms(place.ahead, rule.per_sec, until_open);
            let live = self.liveness.live_for_ms(false, wait);
            (live, wait, jittered_retry_ms(live, self.rng.next_u64()))
        };
        let decision = JoinDecision {
            // The ticket's claim is 32 bits: it saturates (informational).
            position: u32::try_from(place.position).unwrap_or(u32::MAX),
            live_for: Duration::from_millis(live_for.unsigned_abs()),
            estimated_wait: Duration::from_millis(wait.unwrap_or(live_for).unsigned_abs()),
            admit: place.admitted,
        };
        (decision, retry)
    }

    fn answer(
        &self,
        ticket: String,
        claims: &Claims,
        place: &Place,
        (decision, retry_after_ms): (JoinDecision, u64),
        rule: &AdmissionRule,
        newly_admitted: bool,
    ) -> RoomTicket {
        let until_open = rule.opens_at_ms.saturating_sub(rule.now_ms).max(0);
        let admitted = claims.is_admitted();
        RoomTicket {
            ticket,
            ticket_id: claims.ticket_id,
            position: place.position,
            ahead: if admitted { 0 } else { place.ahead },
            estimated_wait: if admitted {
                Some(Duration::ZERO)
            } else if rule.paused() && place.position != 0 {
                None
            } else {
                Some(decision.estimated_wait)
            },
            admitted,
            newly_admitted,
            retry_after_ms,
            live_until_ms: claims.live_until_ms,
            opens_in_ms: until_open.unsigned_abs(),
        }
    }

    /// Joins the queue for the client identified by `binding` (a session
    /// id). A client that already holds a live chain keeps it, never gets a
    /// second place: it gets the chain's next ticket, re-minted with its
    /// client clock as the new baseline (see [`Issuer::rejoin`]), at its
    /// current place (also after the replay store lost the chain's records:
    /// a waiting chain is re-minted under the store's new epoch). An
    /// admitted chain whose records the store lost (a restart, a Redis that
    /// came back empty, a fenced Cluster shard) cannot be re-minted, since
    /// it may have booked: it ends, and the join starts a new chain at the
    /// back. The join hook sees no address or headers:
    /// see [`join_with`](Self::join_with).
    pub async fn join(
        &self,
        binding: &[u8],
        client_time: ClientTime,
    ) -> Result<RoomTicket, RoomError> {
        self.join_with(&JoinRequest::new(binding, client_time))
            .await
    }

    /// Joins like [`join`](Self::join), with what the endpoint knows of the
    /// request (the client's address, the headers) for the join hook.
    pub async fn join_with(&self, request: &JoinRequest<'_>) -> Result<RoomTicket, RoomError> {
        let now = self.issuer.now_ms();
        self.settle_controls(now).await;
        if let Some(message) = self.control.closed() {
            return Err(RoomError::Closed { message });
        }
        let (binding, client_time) = (request.binding, request.client_time);
        let ctx = request.context(now);
        if let JoinVerdict::Refuse {
            reason,
            retry_after,
        } = self.hook.on_join(&ctx).await
        {
            return Err(RoomError::Refused {
                reason,
                retry_after_ms: retry_after.map(|d| duration_to_ms(d).unsigned_abs()),
            });
        }
        // Beyond the door's rate: a pass to come back later, nothing
        // written. After the hook, so a per-address limit stops a bot's
        // repeated joins before they take the door's slots.
        if let Some(door) = &self.door {
            let presented = request
                .headers
                .and_then(|h| h.get(DOOR_PASS_HEADER))
                .map(|v| v.as_bytes());
            let queue = self.issuer.verifier().policy().queue_id();
            let keys = self.issuer.verifier().keys();
            match door.judge(keys, queue, binding, presented, now, self.rng.next_u64()) {
                DoorVerdict::Through => {}
                DoorVerdict::ComeBack(pass) => return Err(RoomError::ComeBack { pass }),
                DoorVerdict::Bad => return Err(RoomError::BadPass),
            }
        }
        // A clock far off is refused before any state is touched.
        self.issuer.verifier().check_join_clock(client_time, now)?;
        let bound = self.bind(binding);
        let rule = self.rule(now);
        let record = JoinRecord {
            binding: bound,
            live_until_ms: now.saturating_add(self.liveness.near_ms),
            max_waiting: self.control.max_waiting(),
        };
        // A rejoin that races another rejoin or renewal of the same chain
        // (the chain moved on between reading its facts and advancing it)
        // reads the facts again, a few times at most.
        for _ in 0..REJOIN_ATTEMPTS - 1 {
            match self
                .join_once(binding, client_time, bound, &record, &rule)
                .await
            {
                Err(RoomError::Busy) => {}
                done => return done,
            }
        }
        self.join_once(binding, client_time, bound, &record, &rule)
            .await
    }

    /// One attempt of [`join`](Self::join) after the hook and the clock.
    async fn join_once(
        &self,
        binding: &[u8],
        client_time: ClientTime,
        bound: Binding,
        record: &JoinRecord,
        rule: &AdmissionRule,
    ) -> Result<RoomTicket, RoomError> {
        let rule = *rule;
        let now = rule.now_ms;
        let mut joined = self
            .state
            .join(&self.queue, record, &rule)
            .await
            .map_err(|e| self.store_failed(e))?;
        self.note_opened(&rule);
        if let Joined::Existing(Place {
            chain: Some(chain), ..
        }) = joined
        {
            if chain.expires_at_ms <= now {
                // Alive by its deadline but past its expiry: nothing of it
                // can be minted any more. A new chain takes its place.
                self.state
                    .leave(&self.queue, &bound)
                    .await
                    .map_err(|e| self.store_failed(e))?;
                joined = self
                    .state
                    .join(&self.queue, record, &rule)
                    .await
                    .map_err(|e| self.store_failed(e))?;
            }
        }
        match joined {
            Joined::Full => Err(RoomError::Full),
            Joined::Existing(Place { chain: None, .. }) => Err(RoomError::Busy),
            Joined::Existing(
                place @ Place {
                    chain: Some(chain), ..
                },
            ) => {
                // The same client again (a reloaded page, or a ticket refused
                // for its clock): the chain's next ticket, re-minted from its
                // facts with the clock measured now as the new baseline. The
                // place is kept.
                let (decision, retry) = self.decide(&place, &rule);
                let minted = match self
                    .issuer
                    .rejoin(binding, client_time, &chain, &decision)
                    .await
                {
                    Ok(m) => m,
                    // The replay store lost the records of this admitted
                    // chain (a restart, a Redis that came back empty, a
                    // fenced Cluster shard) or its facts carry no epoch: it
                    // may have booked, so it cannot go on, and its place
                    // goes with it. This join starts a new chain, as
                    // a join after `ended` would (at the back).
                    Err(Rejection::Replayed {
                        reason: ReplayReason::StateReset,
                        ..
                    }) => {
                        self.state
                            .leave(&self.queue, &bound)
                            .await
                            .map_err(|e| self.store_failed(e))?;
                        return match self
                            .state
                            .join(&self.queue, record, &rule)
                            .await
                            .map_err(|e| self.store_failed(e))?
                        {
                            Joined::New(place) => {
                                self.start_chain(binding, client_time, bound, &place, &rule)
                                    .await
                            }
                            Joined::Full => Err(RoomError::Full),
                            // Another join of this client made a place
                            // meanwhile: read it again.
                            Joined::Existing(_) => Err(RoomError::Busy),
                        };
                    }
                    // A renewal of this chain is in flight and not yet
                    // recorded: try again in a moment.
                    Err(Rejection::Replayed { .. }) => return Err(RoomError::Busy),
                    Err(r) => return Err(r.into()),
                };
                self.record(bound, &minted).await?;
                let newly = minted.claims.is_admitted() && chain.admitted_from_ms.is_none();
                Ok(self.answer(
                    minted.ticket,
                    &minted.claims,
                    &place,
                    (decision, retry),
                    &rule,
                    newly,
                ))
            }
            Joined::New(place) => {
                self.start_chain(binding, client_time, bound, &place, &rule)
                    .await
            }
        }
    }

    /// Mints the first ticket of a new chain for the new `place` of
    /// `bound` and records it (the place is given up if minting fails).
    async fn start_chain(
        &self,
        binding: &[u8],
        client_time: ClientTime,
        bound: Binding,
        place: &Place,
        rule: &AdmissionRule,
    ) -> Result<RoomTicket, RoomError> {
        let (decision, retry) = self.decide(place, rule);
        let minted = match self.issuer.join(binding, client_time, &decision) {
            Ok(m) => m,
            Err(r) => {
                let _ = self.state.leave(&self.queue, &bound).await;
                return Err(r.into());
            }
        };
        self.record(bound, &minted).await?;
        let newly = minted.claims.is_admitted();
        Ok(self.answer(
            minted.ticket,
            &minted.claims,
            place,
            (decision, retry),
            rule,
            newly,
        ))
    }

    /// Records a ticket just minted for the chain of `bound`.
    async fn record(&self, bound: Binding, minted: &Minted) -> Result<(), RoomError> {
        self.state
            .record(
                &self.queue,
                &IssuedRecord {
                    binding: bound,
                    chain: ChainFacts::of(&minted.claims),
                    live_until_ms: minted.claims.live_until_ms,
                },
            )
            .await
            .map_err(|e| self.store_failed(e))
    }

    /// Renews a chain: checks the presented ticket with every rule of the
    /// issuer (liveness, sequence and its retry grace, binding, client
    /// clock), asks the state where the chain stands, and issues the next
    /// ticket, an admitted one once the turn has come.
    pub async fn heartbeat(&self, presented: &Presented<'_>) -> Result<RoomTicket, RoomError> {
        self.heartbeat_sampled(presented, &mut None).await
    }

    /// [`heartbeat`](Self::heartbeat), also handing back the client clock
    /// offset measured on the ticket once it proved authentic and bound,
    /// even when a later rule refused it (the endpoints feed it to the
    /// offset histogram the server-clock check reads).
    pub(crate) async fn heartbeat_sampled(
        &self,
        presented: &Presented<'_>,
        sample: &mut Option<ClockSample>,
    ) -> Result<RoomTicket, RoomError> {
        self.settle_controls(self.issuer.now_ms()).await;
        // A closed room tells everyone waiting, whatever they present.
        if let Some(message) = self.control.closed() {
            return Err(RoomError::Closed { message });
        }
        let verified = match self.issuer.check_sampled(presented, sample) {
            // A deadline that passed during a store outage: an amnesty
            // declared through another instance may forgive it, and this
            // instance may not have read it yet (its reads failed during
            // the outage). Read the shared settings (at most once a second:
            // the tick's pace) and judge again; while they cannot be read,
            // the answer is the store's outage, not the person's.
            Err(Rejection::OfflineResumed { .. }) if self.control.shared() => {
                let rule = self.rule(self.issuer.now_ms());
                let read = self.state.refresh_controls(&self.queue, &rule).await;
                self.adopt_shared();
                match (self.issuer.check_sampled(presented, sample), read) {
                    (Err(Rejection::OfflineResumed { .. }), Err(e)) => {
                        return Err(self.store_failed(e))
                    }
                    (checked, _) => checked?,
                }
            }
            checked => checked?,
        };
        let material = presented.binding.unwrap_or_default();
        let bound = self.bind(material);
        let rule = self.rule(verified.now_ms);
        let beat = BeatRecord {
            binding: bound,
            ticket_id: verified.claims.ticket_id,
        };
        let place = self
            .state
            .beat(&self.queue, &beat, &rule)
            .await
            .map_err(|e| self.store_failed(e))?;
        self.note_opened(&rule);
        let place = place.ok_or(RoomError::Ended)?;
        let (decision, retry) = self.decide(&place, &rule);
        let minted = self.issuer.renew(&verified, material, &decision).await?;
        self.record(bound, &minted).await?;
        let newly = minted.claims.is_admitted() && !verified.claims.is_admitted();
        Ok(self.answer(
            minted.ticket,
            &minted.claims,
            &place,
            (decision, retry),
            &rule,
            newly,
        ))
    }

    /// Ends the chain of `binding` (for example once the booking is made),
    /// freeing its admitted slot at once.
    pub async fn leave(&self, binding: &[u8]) -> Result<(), StoreError> {
        let bound = self.bind(binding);
        self.state.leave(&self.queue, &bound).await
    }

    /// Drops dead chains from the state; returns how many. Only frees
    /// memory: admission skips dead places by itself.
    pub async fn sweep(&self) -> Result<u64, StoreError> {
        self.state.sweep(&self.queue, self.issuer.now_ms()).await
    }

    /// Counts for operators.
    pub async fn stats(&self) -> Result<RoomStats, StoreError> {
        self.state.stats(&self.queue, self.issuer.now_ms()).await
    }
}
