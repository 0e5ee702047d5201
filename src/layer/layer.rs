//! [`QueueGateLayer`] and its builder.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::extract::{
    BindingSource, ClientTimeHeader, ClientTimeSource, SessionCookie, TicketLocation, TicketSource,
};
use super::hold::HoldRules;
use super::service::QueueGate;
use crate::clock::{Clock, SystemClock};
use crate::error::ConfigError;
use crate::metrics::Metrics;
use crate::replay::{MemoryReplayStore, ReplayStore};
use crate::verify::Verifier;

/// What one layer knows, shared by every clone of its service: the
/// verifier, where inputs come from, the hooks and the counters.
///
/// Only named in type signatures; build it with [`QueueGateBuilder`].
pub struct Gate<C, St, T, B, K, A, R> {
    pub(super) verifier: Verifier<C, St>,
    pub(super) tickets: T,
    pub(super) binding: B,
    pub(super) client_time: K,
    pub(super) on_admit: A,
    pub(super) on_reject: R,
    pub(super) metrics: Metrics,
    /// Whether requests are counted into `metrics` (see
    /// [`QueueGateBuilder::without_metrics`]).
    pub(super) counting: bool,
    pub(super) hold_rules: HoldRules,
}

impl<C, St, T, B, K, A, R> fmt::Debug for Gate<C, St, T, B, K, A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

/// A tower [`Layer`] that verifies the queue ticket of every request before
/// the wrapped service sees it.
///
/// Admitted requests reach the service with the [`Verified`](crate::Verified)
/// ticket in their extensions; refused ones get a response (by default an
/// RFC 9457 problem document, see [`problem_response`](super::problem_response))
/// and never reach it. In monitor mode (per [`Policy`](crate::Policy) and
/// per rejection code) a request that would be refused is let through and
/// counted: with its `Verified` (whose `monitored` names the finding) when
/// the ticket authenticated, otherwise with the [`Rejection`](crate::Rejection)
/// in its request extensions.
///
/// Type parameters: the verifier's clock `C` and replay store `St`, then
/// the [`TicketSource`] `T`, [`BindingSource`] `B`, [`ClientTimeSource`]
/// `K`, [`OnAdmit`](super::OnAdmit) `A` and [`OnReject`](super::OnReject)
/// `R`. Cloning is cheap (an `Arc`).
///
/// ```
/// use std::sync::Arc;
/// use queuegate::layer::QueueGateLayer;
/// use queuegate::{KeyRing, MemoryReplayStore, Metrics, Policy, SystemClock, Verifier};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let keys = Arc::new(KeyRing::new(1, &[7u8; 32])?);
/// let store = Arc::new(MemoryReplayStore::new());
/// let verifier = Verifier::new(keys, Policy::new("concert"), SystemClock, store)?;
/// let metrics = Metrics::new();
/// let layer = QueueGateLayer::builder(verifier)
///     .ticket_cookie("queue_ticket")?
///     .metrics(metrics.clone())
///     .build()?;
/// # let _ = layer;
/// # Ok(()) }
/// ```
#[must_use = "a layer does nothing until it wraps a service"]
pub struct QueueGateLayer<
    C = SystemClock,
    St = MemoryReplayStore,
    T = TicketLocation,
    B = SessionCookie,
    K = ClientTimeHeader,
    A = (),
    R = (),
> {
    gate: Arc<Gate<C, St, T, B, K, A, R>>,
}

impl<C, St, T, B, K, A, R> Clone for QueueGateLayer<C, St, T, B, K, A, R> {
    fn clone(&self) -> Self {
        Self {
            gate: self.gate.clone(),
        }
    }
}

impl<C, St, T, B, K, A, R> fmt::Debug for QueueGateLayer<C, St, T, B, K, A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueGateLayer")
            .field("gate", &self.gate)
            .finish()
    }
}

impl<C: Clock, St: ReplayStore> QueueGateLayer<C, St> {
    /// A layer with every default: ticket in header `queue-ticket`, bound
    /// to cookie `qg_session`, client clock in header `queue-client-time`,
    /// default responses, its own [`Metrics`].
    pub fn new(verifier: Verifier<C, St>) -> Self {
        Self::builder(verifier)
            .build()
            .expect("the default settings are valid")
    }

    /// A builder starting from the defaults of [`new`](Self::new).
    pub fn builder(verifier: Verifier<C, St>) -> QueueGateBuilder<C, St> {
        QueueGateBuilder {
            verifier,
            tickets: TicketLocation::default(),
            binding: SessionCookie::default(),
            client_time: ClientTimeHeader::default(),
            on_admit: (),
            on_reject: (),
            metrics: Metrics::new(),
            counting: true,
            hold_rules: HoldRules::default(),
        }
    }
}

impl<C, St, T, B, K, A, R> QueueGateLayer<C, St, T, B, K, A, R> {
    /// The counters this layer writes.
    pub fn metrics(&self) -> &Metrics {
        &self.gate.metrics
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier<C, St> {
        &self.gate.verifier
    }
}

impl<S, C, St, T, B, K, A, R> Layer<S> for QueueGateLayer<C, St, T, B, K, A, R> {
    type Service = QueueGate<S, C, St, T, B, K, A, R>;

    fn layer(&self, inner: S) -> Self::Service {
        QueueGate::from_parts(inner, self.gate.clone())
    }
}

/// Builds a [`QueueGateLayer`]. Settings that can be wrong return
/// `Result<Self, ConfigError>`, so a bad header name fails at startup, not
/// at the first request.
#[must_use = "a builder does nothing until `build` is called"]
pub struct QueueGateBuilder<
    C = SystemClock,
    St = MemoryReplayStore,
    T = TicketLocation,
    B = SessionCookie,
    K = ClientTimeHeader,
    A = (),
    R = (),
> {
    verifier: Verifier<C, St>,
    tickets: T,
    binding: B,
    client_time: K,
    on_admit: A,
    on_reject: R,
    metrics: Metrics,
    counting: bool,
    hold_rules: HoldRules,
}

impl<C, St, T, B, K, A, R> fmt::Debug for QueueGateBuilder<C, St, T, B, K, A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueGateBuilder")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl<C, St, B, K, A, R> QueueGateBuilder<C, St, TicketLocation, B, K, A, R> {
    fn map_location(
        mut self,
        f: impl FnOnce(TicketLocation) -> Result<TicketLocation, ConfigError>,
    ) -> Result<Self, ConfigError> {
        self.tickets = f(self.tickets)?;
        Ok(self)
    }

    /// Reads the ticket from header `name` instead of `queue-ticket`.
    pub fn ticket_header(self, name: &str) -> Result<Self, ConfigError> {
        self.map_location(|l| l.header(name))
    }

    /// Reads the ticket from no header (only from a cookie or the query).
    pub fn no_ticket_header(self) -> Self {
        let mut this = self;
        this.tickets = this.tickets.no_header();
        this
    }

    /// Also reads the ticket from cookie `name`. A header and a cookie that
    /// disagree are `malformed` (ambiguous).
    pub fn ticket_cookie(self, name: &str) -> Result<Self, ConfigError> {
        self.map_location(|l| l.cookie(name))
    }

    /// Also reads the ticket from query parameter `name`. Off by default:
    /// tickets in URLs leak through access logs, history and `Referer`.
    pub fn allow_query_ticket(self, name: &str) -> Result<Self, ConfigError> {
        self.map_location(|l| l.query(name))
    }
}

// Every type parameter is a hook the host may replace; aliases would only
// hide which one a method changes.
#[allow(clippy::type_complexity)]
impl<C, St, T, B, K, A, R> QueueGateBuilder<C, St, T, B, K, A, R> {
    /// Replaces where the ticket comes from with a host extractor.
    pub fn ticket_source<T2: TicketSource>(
        self,
        tickets: T2,
    ) -> QueueGateBuilder<C, St, T2, B, K, A, R> {
        QueueGateBuilder {
            verifier: self.verifier,
            tickets,
            binding: self.binding,
            client_time: self.client_time,
            on_admit: self.on_admit,
            on_reject: self.on_reject,
            metrics: self.metrics,
            counting: self.counting,
            hold_rules: self.hold_rules,
        }
    }

    /// Binds tickets to cookie `name` instead of `qg_session`.
    pub fn binding_cookie(
        self,
        name: &str,
    ) -> Result<QueueGateBuilder<C, St, T, SessionCookie, K, A, R>, ConfigError> {
        Ok(self.binding(SessionCookie::new(name)?))
    }

    /// Replaces what tickets are bound to with a host hook.
    pub fn binding<B2: BindingSource>(
        self,
        binding: B2,
    ) -> QueueGateBuilder<C, St, T, B2, K, A, R> {
        QueueGateBuilder {
            verifier: self.verifier,
            tickets: self.tickets,
            binding,
            client_time: self.client_time,
            on_admit: self.on_admit,
            on_reject: self.on_reject,
            metrics: self.metrics,
            counting: self.counting,
            hold_rules: self.hold_rules,
        }
    }

    /// Reads the client's clock from header `name` instead of
    /// `queue-client-time`.
    pub fn client_time_header(
        self,
        name: &str,
    ) -> Result<QueueGateBuilder<C, St, T, B, ClientTimeHeader, A, R>, ConfigError> {
        Ok(self.client_time(ClientTimeHeader::new(name)?))
    }

    /// Replaces how the client's clock is read with a host hook (`()`
    /// never reads it).
    pub fn client_time<K2: ClientTimeSource>(
        self,
        client_time: K2,
    ) -> QueueGateBuilder<C, St, T, B, K2, A, R> {
        QueueGateBuilder {
            verifier: self.verifier,
            tickets: self.tickets,
            binding: self.binding,
            client_time,
            on_admit: self.on_admit,
            on_reject: self.on_reject,
            metrics: self.metrics,
            counting: self.counting,
            hold_rules: self.hold_rules,
        }
    }

    /// Runs `hook` on every admission (see [`OnAdmit`](super::OnAdmit)).
    pub fn on_admit<A2>(self, hook: A2) -> QueueGateBuilder<C, St, T, B, K, A2, R> {
        QueueGateBuilder {
            verifier: self.verifier,
            tickets: self.tickets,
            binding: self.binding,
            client_time: self.client_time,
            on_admit: hook,
            on_reject: self.on_reject,
            metrics: self.metrics,
            counting: self.counting,
            hold_rules: self.hold_rules,
        }
    }

    /// Lets `hook` replace rejection responses (see
    /// [`OnReject`](super::OnReject)).
    pub fn on_reject<R2>(self, hook: R2) -> QueueGateBuilder<C, St, T, B, K, A, R2> {
        QueueGateBuilder {
            verifier: self.verifier,
            tickets: self.tickets,
            binding: self.binding,
            client_time: self.client_time,
            on_admit: self.on_admit,
            on_reject: hook,
            metrics: self.metrics,
            counting: self.counting,
            hold_rules: self.hold_rules,
        }
    }

    /// In a `single_use` scope: which handler responses commit the hold
    /// (consume the chain). Default: 2xx. See [`HoldRules`].
    pub fn commit_when(
        mut self,
        f: impl Fn(http::StatusCode) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.hold_rules = self.hold_rules.commit_when(f);
        self
    }

    /// In a `single_use` scope: which handler responses (not in the
    /// success set) the host declares free of side effects, releasing the
    /// hold at once so the person may retry immediately (for example its
    /// own "slot taken" 409). Default: none; a response carrying
    /// [`NoSideEffects`](super::NoSideEffects) always releases. A handler
    /// whose refusals release must be idempotent on
    /// [`Verified::idempotency_key`](crate::Verified::idempotency_key).
    pub fn release_when(
        mut self,
        f: impl Fn(http::StatusCode, &http::HeaderMap) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.hold_rules = self.hold_rules.release_when(f);
        self
    }

    /// Writes counters into `metrics` (share one handle between layers and
    /// the waiting room to expose one set).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self.counting = true;
        self
    }

    /// Counts nothing: no admission, rejection or monitored counter, no
    /// client-clock offset, so [`QueueGateLayer::metrics`] stays at zero.
    /// For a host that counts in its own [`OnAdmit`](super::OnAdmit) /
    /// [`OnReject`](super::OnReject) hooks, or a second layer on a route
    /// whose requests another layer already counts. The counters are
    /// relaxed atomic increments (a few nanoseconds; see `BENCHMARKS.md`),
    /// so this is not a speed setting. A later [`metrics`](Self::metrics)
    /// turns counting back on.
    pub fn without_metrics(mut self) -> Self {
        self.counting = false;
        self
    }

    /// Builds the layer. Fails if the verifier's policy is invalid.
    pub fn build(self) -> Result<QueueGateLayer<C, St, T, B, K, A, R>, ConfigError>
    where
        C: Clock,
        St: ReplayStore,
    {
        self.verifier.policy().validate()?;
        Ok(QueueGateLayer {
            gate: Arc::new(Gate {
                verifier: self.verifier,
                tickets: self.tickets,
                binding: self.binding,
                client_time: self.client_time,
                on_admit: self.on_admit,
                on_reject: self.on_reject,
                metrics: self.metrics,
                counting: self.counting,
                hold_rules: self.hold_rules,
            }),
        })
    }
}
