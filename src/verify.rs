//! [`Policy`] and [`Verifier`]: the one place that says what a valid ticket
//! is. No HTTP here: the tower layer extracts the inputs and calls in.
//!
//! Checks run cheapest first, and shared state is touched last, only for a
//! ticket that passed everything else:
//!
//! 1. presence (`missing`), length, encoding and version (`malformed`),
//! 2. key id (`unknown_key`), MAC (`bad_signature`), claim fields
//!    (`malformed`),
//! 3. queue (`wrong_queue`), kind and admitted-from (`not_admitted`), expiry
//!    (`expired`), liveness deadline (`offline_resumed`), binding
//!    (`binding_mismatch`), client clock: absolute skew (`clock_skew`) then
//!    jump against the chain's baseline (`clock_jump`),
//! 4. the store's epoch and the replay record (`replayed`,
//!    `store_unavailable`).
//!
//! Boundaries: a ticket is expired *at* `expires_at` and dead *at* its
//! liveness deadline (both are exclusive upper bounds); a clock offset
//! exactly at a tolerance passes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::amnesty::Amnesty;
use crate::clock::{duration_to_ms, Clock, MonotonicClock, SystemClock};
use crate::error::{ConfigError, StoreError};
use crate::keys::KeyRing;
use crate::rejection::{MalformedReason, Rejection, RejectionCode, ReplayReason};
use crate::replay::{
    Hold, MemoryReplayStore, ReplayCheck, ReplayMode, ReplayStore, ReplayVerdict, SettleHold,
    Settlement,
};
use crate::ticket::{decode, Claims, QueueId, ScopeId, TicketId, TicketKind};

/// What to do when a check fails: refuse the request, or let it through and
/// report what would have been refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Refuse the request.
    #[default]
    Enforce,
    /// Let the request through; report the finding.
    Monitor,
}

/// Whether requests must carry the client's clock reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientTimeRule {
    /// Clock evidence is checked when present; its absence is not an error
    /// (and never read as an offset of zero).
    #[default]
    Optional,
    /// A request without a client time is `malformed`.
    Required,
}

/// The client's claimed time as sent with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientTime {
    /// Not sent.
    #[default]
    Absent,
    /// Sent, but not Unix epoch milliseconds (garbage, a fraction, out of
    /// range): `malformed`.
    Invalid,
    /// Unix epoch milliseconds.
    Millis(i64),
}

impl ClientTime {
    /// Parses a header value: optional `-`, then 1 to 16 ASCII digits and
    /// nothing else. Reads at most 17 bytes; never allocates.
    pub fn parse(value: &[u8]) -> Self {
        let (negative, digits) = match value {
            [b'-', rest @ ..] => (true, rest),
            _ => (false, value),
        };
        if digits.is_empty() || digits.len() > 16 {
            return Self::Invalid;
        }
        let mut ms: i64 = 0;
        for &d in digits {
            if !d.is_ascii_digit() {
                return Self::Invalid;
            }
            ms = ms * 10 + i64::from(d - b'0');
        }
        Self::Millis(if negative { -ms } else { ms })
    }
}

/// What a request presents: the ticket text, the binding material, and the
/// client's clock. `Debug` does not print the ticket or the binding.
#[derive(Clone, Copy, Default)]
pub struct Presented<'a> {
    /// The ticket text, if any was sent.
    pub ticket: Option<&'a [u8]>,
    /// What the request shows the ticket must be bound to (for example a
    /// session id), if anything.
    pub binding: Option<&'a [u8]>,
    /// The client's claimed time.
    pub client_time: ClientTime,
}

impl fmt::Debug for Presented<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Presented")
            .field("ticket", &self.ticket.map(|_| "REDACTED"))
            .field("binding", &self.binding.map(|_| "REDACTED"))
            .field("client_time", &self.client_time)
            .finish()
    }
}

/// The rules of one protection scope (typically one layer on one route).
///
/// Defaults are generous, since clock evidence is noisy: 5 minutes of
/// absolute skew (Kerberos's default), 60 s of jump, 10 s of network delay
/// allowed on top for backward moves, 5 s of renewal grace, `session`
/// replay mode, optional client time, every code enforced.
#[derive(Clone)]
#[must_use]
pub struct Policy {
    queue_name: Arc<str>,
    queue: QueueId,
    scope_name: Arc<str>,
    scope: ScopeId,
    replay: ReplayMode,
    client_time: ClientTimeRule,
    max_skew_ms: i64,
    max_jump_ms: i64,
    max_delay_ms: i64,
    renewal_grace_ms: i64,
    store_retry_after_ms: u64,
    hold_ms: i64,
    handler_timeout_ms: i64,
    monitor_single_use: bool,
    modes: [Mode; RejectionCode::COUNT],
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let monitored: Vec<_> = RejectionCode::ALL
            .into_iter()
            .filter(|c| self.mode(*c) == Mode::Monitor)
            .map(RejectionCode::as_str)
            .collect();
        f.debug_struct("Policy")
            .field("queue", &self.queue_name)
            .field("scope", &self.scope_name)
            .field("replay", &self.replay)
            .field("client_time", &self.client_time)
            .field("max_skew_ms", &self.max_skew_ms)
            .field("max_jump_ms", &self.max_jump_ms)
            .field("max_delay_ms", &self.max_delay_ms)
            .field("renewal_grace_ms", &self.renewal_grace_ms)
            .field("hold_ms", &self.hold_ms)
            .field("handler_timeout_ms", &self.handler_timeout_ms)
            .field("monitor_single_use", &self.monitor_single_use)
            .field("monitored", &monitored)
            .finish()
    }
}

impl Policy {
    /// The default policy for the queue named `queue`. The replay scope is
    /// named after the queue; give each single-use action its own
    /// [`scope`](Self::scope).
    pub fn new(queue: &str) -> Self {
        Self {
            queue_name: queue.into(),
            queue: QueueId::from_name(queue),
            scope_name: queue.into(),
            scope: ScopeId::from_name(queue),
            replay: ReplayMode::Session,
            client_time: ClientTimeRule::Optional,
            max_skew_ms: 300_000,
            max_jump_ms: 60_000,
            max_delay_ms: 10_000,
            renewal_grace_ms: 5_000,
            store_retry_after_ms: 2_000,
            hold_ms: 15_000,
            handler_timeout_ms: 10_000,
            monitor_single_use: false,
            modes: [Mode::Enforce; RejectionCode::COUNT],
        }
    }

    /// Names the replay scope (for example `"reserve"`): single-use
    /// consumption is per scope.
    pub fn scope(mut self, name: &str) -> Self {
        self.scope_name = name.into();
        self.scope = ScopeId::from_name(name);
        self
    }

    /// Sets the replay mode.
    pub fn replay(mut self, mode: ReplayMode) -> Self {
        self.replay = mode;
        self
    }

    /// Sets whether a client time is required.
    pub fn client_time(mut self, rule: ClientTimeRule) -> Self {
        self.client_time = rule;
        self
    }

    /// The largest accepted distance between the client's clock and the
    /// server's (forward; backward gets the network-delay bound on top).
    pub fn max_skew(mut self, d: Duration) -> Self {
        self.max_skew_ms = duration_to_ms(d);
        self
    }

    /// The largest accepted move of the client's clock against the chain's
    /// baseline (forward; backward gets the network-delay bound on top).
    pub fn max_jump(mut self, d: Duration) -> Self {
        self.max_jump_ms = duration_to_ms(d);
        self
    }

    /// The network-delay bound added to backward tolerances: delay only
    /// ever makes a measured offset smaller.
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay_ms = duration_to_ms(d);
        self
    }

    /// How long a just-renewed ticket stays usable while its successor is
    /// unused (a lost heartbeat response).
    pub fn renewal_grace(mut self, d: Duration) -> Self {
        self.renewal_grace_ms = duration_to_ms(d);
        self
    }

    /// The `Retry-After` suggested with `store_unavailable` (default 2 s).
    pub fn store_retry_after(mut self, d: Duration) -> Self {
        self.store_retry_after_ms = d.as_millis().try_into().unwrap_or(u64::MAX);
        self
    }

    /// How long a `single_use` scope holds a chain while its handler runs
    /// (default 15 s). It must be at least the
    /// [handler timeout](Self::handler_timeout): the layer ends a handler
    /// at its timeout and never after its hold, so a retry can never
    /// overtake a running handler. Keep a margin over the timeout (the
    /// default has 5 s) for the store round trips before the handler starts
    /// and for the commit after it ends; with none, a slow store cuts the
    /// handler's time short.
    /// A hold that is not settled (a 5xx, a panic, the timeout, a client
    /// that went away) blocks the chain in this scope until it expires.
    pub fn hold(mut self, d: Duration) -> Self {
        self.hold_ms = duration_to_ms(d);
        self
    }

    /// How long the layer lets a `single_use` handler run before it drops
    /// the handler's future and answers `in_progress` (default 10 s; at
    /// most the [hold](Self::hold)). Dropping a future ends an async
    /// handler at its next `.await`; blocking work it started elsewhere
    /// is not stopped, so keep such work shorter than the hold.
    pub fn handler_timeout(mut self, d: Duration) -> Self {
        self.handler_timeout_ms = duration_to_ms(d);
        self
    }

    /// Allows monitoring `missing`, `replayed` or `in_progress` in a
    /// `single_use` scope (refused by [`validate`](Self::validate)
    /// otherwise). What it lets through, and only while watching before
    /// enforcing: monitored `missing` lets requests with no ticket reach
    /// the handler (no hold is taken: nothing limits them); monitored
    /// `replayed` lets a consumed chain book again, and a stale copy of a
    /// chain through; monitored `in_progress` lets a second request run
    /// while the first still holds the chain (two bookings at once).
    /// Monitoring `store_unavailable` in a `single_use` scope stays refused
    /// whatever this says.
    pub fn allow_monitor_on_single_use(mut self, allow: bool) -> Self {
        self.monitor_single_use = allow;
        self
    }

    /// Enforces or monitors one rejection code.
    pub fn mode_for(mut self, code: RejectionCode, mode: Mode) -> Self {
        self.modes[code.index()] = mode;
        self
    }

    /// Enforces or monitors every rejection code.
    pub fn mode_all(mut self, mode: Mode) -> Self {
        self.modes = [mode; RejectionCode::COUNT];
        self
    }

    /// Checks the policy as a whole. In a `single_use` scope: monitoring
    /// `store_unavailable` (fail-open) is refused, since it could book
    /// twice; monitoring `missing`, `replayed` or `in_progress` is refused
    /// unless [`allow_monitor_on_single_use`](Self::allow_monitor_on_single_use)
    /// says so; the hold must be positive and at least the handler timeout.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.replay != ReplayMode::SingleUse {
            return Ok(());
        }
        if self.mode(RejectionCode::StoreUnavailable) == Mode::Monitor {
            return Err(ConfigError::FailOpenSingleUse);
        }
        if !self.monitor_single_use {
            for code in [
                RejectionCode::Missing,
                RejectionCode::Replayed,
                RejectionCode::InProgress,
            ] {
                if self.mode(code) == Mode::Monitor {
                    return Err(ConfigError::MonitorSingleUse(code.as_str()));
                }
            }
        }
        if self.handler_timeout_ms <= 0 {
            return Err(ConfigError::Invalid {
                setting: "handler_timeout",
                reason: "a single_use scope needs a positive handler timeout",
            });
        }
        if self.hold_ms < self.handler_timeout_ms {
            return Err(ConfigError::Invalid {
                setting: "hold",
                reason: "the hold must last at least the handler timeout, or a retry could overtake a running handler",
            });
        }
        Ok(())
    }

    /// The queue's name.
    pub fn queue_name(&self) -> &str {
        &self.queue_name
    }

    /// The queue's id.
    pub fn queue_id(&self) -> QueueId {
        self.queue
    }

    /// The replay scope's name.
    pub fn scope_name(&self) -> &str {
        &self.scope_name
    }

    /// The replay scope's id.
    pub fn scope_id(&self) -> ScopeId {
        self.scope
    }

    /// The replay mode.
    pub fn replay_mode(&self) -> ReplayMode {
        self.replay
    }

    /// The renewal grace in ms.
    pub fn renewal_grace_ms(&self) -> i64 {
        self.renewal_grace_ms
    }

    /// A `single_use` scope's hold, in ms.
    pub fn hold_ms(&self) -> i64 {
        self.hold_ms
    }

    /// A `single_use` scope's handler timeout.
    pub fn handler_timeout_duration(&self) -> Duration {
        Duration::from_millis(self.handler_timeout_ms.max(0) as u64)
    }

    /// The rejection for a state store that failed, with this policy's
    /// `Retry-After`.
    pub(crate) fn store_unavailable(&self) -> Rejection {
        Rejection::StoreUnavailable {
            retry_after_ms: self.store_retry_after_ms,
        }
    }

    /// How a code is handled.
    pub fn mode(&self, code: RejectionCode) -> Mode {
        self.modes[code.index()]
    }

    /// Whether a code is enforced (refuses the request).
    pub fn enforces(&self, code: RejectionCode) -> bool {
        self.mode(code) == Mode::Enforce
    }

    /// Records `r` as a monitored finding, or returns it if enforced.
    fn flag(&self, found: &mut Option<Rejection>, r: Rejection) -> Result<(), Rejection> {
        if self.enforces(r.code()) {
            Err(r)
        } else {
            found.get_or_insert(r);
            Ok(())
        }
    }

    /// The client-clock checks on a measured `offset` against an optional
    /// chain `baseline`.
    fn check_clock(
        &self,
        offset: i64,
        baseline: Option<i32>,
        found: &mut Option<Rejection>,
    ) -> Result<(), Rejection> {
        let back_skew = self.max_skew_ms.saturating_add(self.max_delay_ms);
        if offset > self.max_skew_ms || offset < back_skew.saturating_neg() {
            let tolerance = if offset > 0 {
                self.max_skew_ms
            } else {
                back_skew
            };
            self.flag(
                found,
                Rejection::ClockSkew {
                    offset_ms: offset,
                    tolerance_ms: tolerance.unsigned_abs(),
                },
            )?;
        }
        if let Some(baseline) = baseline {
            // The baseline is stored saturated to i32 (about ±24.8 days), so
            // compare like with like: a clock steadily further off than that
            // (possible only while clock_skew is monitored) must not read as
            // a jump of the difference. Both values fit i32: no overflow.
            let moved = saturate_offset(offset) - i64::from(baseline);
            let back_jump = self.max_jump_ms.saturating_add(self.max_delay_ms);
            if moved > self.max_jump_ms || moved < back_jump.saturating_neg() {
                let tolerance = if moved > 0 {
                    self.max_jump_ms
                } else {
                    back_jump
                };
                self.flag(
                    found,
                    Rejection::ClockJump {
                        moved_ms: moved,
                        tolerance_ms: tolerance.unsigned_abs(),
                    },
                )?;
            }
        }
        Ok(())
    }

    /// Measures the client clock: its offset from `now_ms`, after the
    /// presence rule.
    fn measure_clock(
        &self,
        client_time: ClientTime,
        now_ms: i64,
        found: &mut Option<Rejection>,
    ) -> Result<Option<i64>, Rejection> {
        match client_time {
            ClientTime::Millis(t) => Ok(Some(t.saturating_sub(now_ms))),
            ClientTime::Invalid => {
                self.flag(found, Rejection::malformed(MalformedReason::ClientTime))?;
                Ok(None)
            }
            ClientTime::Absent => {
                if self.client_time == ClientTimeRule::Required {
                    self.flag(
                        found,
                        Rejection::malformed(MalformedReason::ClientTimeMissing),
                    )?;
                }
                Ok(None)
            }
        }
    }
}

/// A client clock offset measured on an authenticated request (its ticket's
/// MAC and binding verified), whatever the rest of the check concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClockSample {
    /// The chain the ticket belongs to (one observation per chain).
    pub(crate) chain: TicketId,
    /// Client time minus server time (ms).
    pub(crate) offset_ms: i64,
}

/// A measured clock offset as the ticket stores it: saturated to `i32`.
pub(crate) fn saturate_offset(offset: i64) -> i64 {
    offset.clamp(i64::from(i32::MIN), i64::from(i32::MAX))
}

/// A ticket that passed verification (possibly with monitored findings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The authenticated claims.
    pub claims: Claims,
    /// The first finding that a monitored code let through, if any: the
    /// request would have been refused in enforce mode.
    pub monitored: Option<Rejection>,
    /// The client-clock offset measured on this request (client minus
    /// server time, ms), if a client time was sent.
    pub client_offset_ms: Option<i64>,
    /// The server time the checks used.
    pub now_ms: i64,
    /// Whether this request's binding material verified against the
    /// ticket's binding (SPEC.md §8 step 13 passed, not merely monitored).
    /// With the ticket id, it is what identifies the chain's own client:
    /// a single-use chain consumed before and presented again by a request
    /// whose binding verified is a retry by the same client (SPEC.md §10).
    pub binding_verified: bool,
    /// In a `single_use` scope, the key a handler makes its side effects
    /// idempotent on (the scope and the chain): a handler whose refusals
    /// release the hold, or whose failures the same client may retry after
    /// the hold expires, must not act twice for the same key.
    pub idempotency_key: Option<IdempotencyKey>,
    /// In a `single_use` scope, the hold this request took on the chain
    /// (see [`Hold`]); `None` once it was refused or when no hold applies.
    pub hold: Option<Hold>,
}

/// What a `single_use` handler makes its side effects idempotent on: the
/// scope and the chain (every ticket of one person's place in line).
/// `Display` writes `<scope>.<ticket id>` in hex, for a database key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    /// The protection scope.
    pub scope: ScopeId,
    /// The chain.
    pub ticket_id: TicketId,
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.scope, self.ticket_id)
    }
}

/// Verifies tickets for one [`Policy`].
///
/// [`verify`](Self::verify) runs every check. The tower layer uses the three
/// steps separately so that its future needs no boxing:
/// [`check`](Self::check) (everything but shared state, synchronous),
/// [`replay`](Self::replay) (the store's future, if the policy keeps replay
/// state), then [`finish`](Self::finish).
///
/// A structural failure (`missing`, `malformed` text, `unknown_key`,
/// `bad_signature`) stops verification and is returned as `Err` whatever
/// its mode: the caller consults [`Policy::enforces`] to decide whether to
/// let a monitored one through. A failure of a claim check in a monitored
/// code does not stop the later checks (a monitored clock finding must not
/// skip the replay check); it is reported in [`Verified::monitored`].
pub struct Verifier<C = SystemClock, S = MemoryReplayStore> {
    keys: Arc<KeyRing>,
    policy: Policy,
    clock: MonotonicClock<C>,
    store: Arc<S>,
    amnesty: Arc<Amnesty>,
}

impl<C: Clone, S> Clone for Verifier<C, S> {
    fn clone(&self) -> Self {
        Self {
            keys: self.keys.clone(),
            policy: self.policy.clone(),
            clock: self.clock.clone(),
            store: self.store.clone(),
            amnesty: self.amnesty.clone(),
        }
    }
}

impl<C, S> fmt::Debug for Verifier<C, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<C: Clock, S: ReplayStore> Verifier<C, S> {
    /// A verifier for `policy`, with its clock made monotone.
    pub fn new(
        keys: Arc<KeyRing>,
        policy: Policy,
        clock: C,
        store: Arc<S>,
    ) -> Result<Self, ConfigError> {
        policy.validate()?;
        Ok(Self {
            keys,
            policy,
            clock: MonotonicClock::new(clock),
            store,
            amnesty: Arc::new(Amnesty::new()),
        })
    }

    /// Shares `amnesty` (the operator's forgiveness window for liveness
    /// deadlines) with this verifier: give every verifier of a room, and
    /// its state, the same one (the room's
    /// [`WaitingRoom::amnesty`](crate::room::WaitingRoom::amnesty)).
    #[must_use]
    pub fn with_amnesty(mut self, amnesty: Arc<Amnesty>) -> Self {
        self.amnesty = amnesty;
        self
    }

    /// The amnesty this verifier consults before refusing a passed
    /// liveness deadline (`offline_resumed`).
    pub fn amnesty(&self) -> &Arc<Amnesty> {
        &self.amnesty
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The key ring.
    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    /// The replay store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The server time as this verifier sees it (monotone).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Every check. In a `single_use` scope an accepted ticket takes a hold
    /// on its chain ([`Verified::hold`]): settle it with
    /// [`settle`](Self::settle) once the action's outcome is known (the
    /// tower layer does this itself), or it blocks the chain until it
    /// expires.
    pub async fn verify(&self, presented: &Presented<'_>) -> Result<Verified, Rejection> {
        let checked = self.check(presented)?;
        match self.replay(&checked) {
            None => Ok(checked),
            Some(fut) => self.finish(checked, fut.await),
        }
    }

    /// Every check that needs no shared state, for a protected route (the
    /// ticket must be admitted).
    pub fn check(&self, presented: &Presented<'_>) -> Result<Verified, Rejection> {
        self.check_at(presented, self.clock.now_ms(), true)
    }

    /// The replay check's future, or `None` when the policy keeps no replay
    /// state ([`ReplayMode::Off`]).
    pub fn replay(&self, checked: &Verified) -> Option<S::CheckFuture> {
        let consume = match self.policy.replay {
            ReplayMode::Off => return None,
            ReplayMode::Session => false,
            ReplayMode::SingleUse => true,
        };
        let c = &checked.claims;
        Some(self.store.check(&ReplayCheck {
            scope: self.policy.scope,
            ticket_id: c.ticket_id,
            sequence: c.sequence,
            kind: c.kind,
            same_client: checked.binding_verified,
            live_until_ms: c.live_until_ms,
            expires_at_ms: c.expires_at_ms,
            now_ms: checked.now_ms,
            grace_ms: self.policy.renewal_grace_ms,
            hold: if consume { checked.hold } else { None },
            epoch: c.epoch,
        }))
    }

    /// Settles the hold a `single_use` check took (see [`Hold`]): `None`
    /// when `verified` holds nothing. The store starts the work at once;
    /// dropping the future does not undo it.
    pub fn settle(&self, verified: &Verified, settlement: Settlement) -> Option<S::SettleFuture> {
        let hold = verified.hold?;
        let c = &verified.claims;
        Some(self.store.settle(&SettleHold {
            scope: self.policy.scope,
            ticket_id: c.ticket_id,
            kind: c.kind,
            hold,
            settlement,
            expires_at_ms: c.expires_at_ms,
            now_ms: self.clock.now_ms(),
        }))
    }

    /// Applies the replay store's answer.
    pub fn finish(
        &self,
        mut checked: Verified,
        answer: Result<ReplayVerdict, StoreError>,
    ) -> Result<Verified, Rejection> {
        let finding = match answer {
            Ok(ReplayVerdict::Fresh) => return Ok(checked),
            Ok(ReplayVerdict::Replayed(reason)) => Rejection::Replayed {
                // The store answered same/other client from
                // `ReplayCheck::same_client` (this request's binding check).
                reason,
                ticket_id: checked.claims.ticket_id,
            },
            Ok(ReplayVerdict::InProgress { until_ms }) => Rejection::InProgress {
                retry_after_ms: until_ms
                    .saturating_sub(checked.now_ms)
                    .max(1)
                    .unsigned_abs(),
            },
            Err(_) => self.policy.store_unavailable(),
        };
        // Whatever a monitored finding lets through, no hold was taken.
        checked.hold = None;
        self.policy.flag(&mut checked.monitored, finding)?;
        Ok(checked)
    }

    /// The stateless checks at `now_ms`. `require_admitted` is false for the
    /// issuer, which renews waiting tickets too.
    pub(crate) fn check_at(
        &self,
        presented: &Presented<'_>,
        now_ms: i64,
        require_admitted: bool,
    ) -> Result<Verified, Rejection> {
        self.check_at_sampled(presented, now_ms, require_admitted, &mut None)
    }

    /// [`check_at`](Self::check_at), also handing back the client clock's
    /// offset once the ticket is authentic and bound to this client, even
    /// when a later rule refuses it: a server clock an hour off refuses
    /// every honest ticket (`offline_resumed`, `clock_skew`), and those
    /// refusals are exactly the evidence the server-clock check needs.
    pub(crate) fn check_at_sampled(
        &self,
        presented: &Presented<'_>,
        now_ms: i64,
        require_admitted: bool,
        sample: &mut Option<ClockSample>,
    ) -> Result<Verified, Rejection> {
        let policy = &self.policy;
        let text = presented.ticket.ok_or(Rejection::Missing)?;
        let ticket = decode(text)?;
        let bound = self.keys.verify_bound(&ticket, presented.binding)?;
        let claims = ticket.claims()?;
        if let (true, ClientTime::Millis(t)) = (bound, presented.client_time) {
            *sample = Some(ClockSample {
                chain: claims.ticket_id,
                offset_ms: t.saturating_sub(now_ms),
            });
        }
        let mut found = None;

        if claims.queue != policy.queue {
            policy.flag(&mut found, Rejection::WrongQueue)?;
        }
        if require_admitted
            && (claims.kind != TicketKind::Admitted || now_ms < claims.admitted_from_ms)
        {
            let wait = claims.admitted_from_ms.saturating_sub(now_ms).max(1_000);
            policy.flag(
                &mut found,
                Rejection::NotAdmitted {
                    retry_after_ms: wait.unsigned_abs(),
                },
            )?;
        }
        if now_ms >= claims.expires_at_ms {
            policy.flag(
                &mut found,
                Rejection::Expired {
                    expired_for_ms: now_ms.saturating_sub(claims.expires_at_ms).unsigned_abs(),
                },
            )?;
        }
        // A passed deadline the operator forgave (an amnesty over a store
        // outage) is not a resumed offline client.
        if now_ms >= claims.live_until_ms && !self.amnesty.forgives(claims.live_until_ms, now_ms) {
            policy.flag(
                &mut found,
                Rejection::OfflineResumed {
                    late_by_ms: now_ms.saturating_sub(claims.live_until_ms).unsigned_abs(),
                },
            )?;
        }
        if !bound {
            policy.flag(&mut found, Rejection::BindingMismatch)?;
        }
        let offset = policy.measure_clock(presented.client_time, now_ms, &mut found)?;
        if let Some(offset) = offset {
            policy.check_clock(offset, claims.clock_offset_ms, &mut found)?;
        }
        if policy.replay != ReplayMode::Off
            && !self.store.checks_epoch()
            && claims.epoch != self.store.epoch()
        {
            policy.flag(
                &mut found,
                Rejection::Replayed {
                    reason: ReplayReason::StateReset,
                    ticket_id: claims.ticket_id,
                },
            )?;
        }
        let single_use = policy.replay == ReplayMode::SingleUse;
        Ok(Verified {
            idempotency_key: single_use.then_some(IdempotencyKey {
                scope: policy.scope,
                ticket_id: claims.ticket_id,
            }),
            hold: single_use.then(|| Hold::new(now_ms.saturating_add(policy.hold_ms))),
            claims,
            monitored: found,
            client_offset_ms: offset,
            now_ms,
            binding_verified: bound,
        })
    }

    /// Measures and checks a client clock with no chain baseline (a join).
    pub(crate) fn check_join_clock(
        &self,
        client_time: ClientTime,
        now_ms: i64,
    ) -> Result<Option<i64>, Rejection> {
        let mut found = None;
        let offset = self.policy.measure_clock(client_time, now_ms, &mut found)?;
        if let Some(offset) = offset {
            self.policy.check_clock(offset, None, &mut found)?;
        }
        Ok(offset)
    }
}
