//! The join hook: where a host refuses or slows joins (a rate limit, a
//! challenge, proof of work). Joining is free for an attacker, so it must
//! be bounded somewhere.

use std::future::{ready, Future};
use std::time::Duration;

use crate::verify::ClientTime;

/// What the hook sees of a join. `Debug` does not print the binding.
#[derive(Clone, Copy)]
pub struct JoinContext<'a> {
    /// Server time (ms).
    pub now_ms: i64,
    /// The binding material the ticket will be bound to (a session id).
    pub binding: &'a [u8],
    /// The client's claimed time.
    pub client_time: ClientTime,
}

impl std::fmt::Debug for JoinContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinContext")
            .field("now_ms", &self.now_ms)
            .field("binding", &"REDACTED")
            .field("client_time", &self.client_time)
            .finish()
    }
}

/// The hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinVerdict {
    /// Let the join through.
    Allow,
    /// Refuse it, saying why and when to try again.
    Refuse {
        /// A short reason for the person (shown as is).
        reason: &'static str,
        /// When to try again, if trying again can help.
        retry_after: Option<Duration>,
    },
}

/// Decides whether a join goes ahead. An implementation may also take its
/// time (await a timer or a challenge) to slow joins down.
///
/// Implemented for `()` (allow everything) and for closures
/// `Fn(&JoinContext) -> JoinVerdict`.
pub trait JoinHook: Send + Sync + 'static {
    /// Judges one join.
    fn on_join(&self, join: &JoinContext<'_>) -> impl Future<Output = JoinVerdict> + Send;
}

impl JoinHook for () {
    fn on_join(&self, _join: &JoinContext<'_>) -> impl Future<Output = JoinVerdict> + Send {
        ready(JoinVerdict::Allow)
    }
}

impl<F> JoinHook for F
where
    F: Fn(&JoinContext<'_>) -> JoinVerdict + Send + Sync + 'static,
{
    fn on_join(&self, join: &JoinContext<'_>) -> impl Future<Output = JoinVerdict> + Send {
        ready(self(join))
    }
}
