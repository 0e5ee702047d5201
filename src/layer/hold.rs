//! How a handler's response settles the hold of a `single_use` scope.
//!
//! A `single_use` scope takes a [`Hold`](crate::Hold) on the chain before
//! the handler runs. When the handler's response is known, [`HoldRules`]
//! decide: a response in the host's success set (default: 2xx) commits
//! (the chain is consumed for the scope), a response the host declares
//! free of side effects releases the hold at once (the person can retry
//! immediately), and anything else (a 5xx, a 4xx the host did not declare)
//! keeps the hold until it expires, after which only the same client may
//! retry. A handler that panics, times out, or whose response future is
//! dropped (the client went away) keeps the hold too.
//!
//! A handler whose refusals release, or whose failures may be retried after
//! the hold, must be idempotent on
//! [`Verified::idempotency_key`](crate::Verified::idempotency_key): the
//! layer guarantees at most one *successful* completion per chain and
//! scope, not that a failed attempt did nothing.

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, Response, StatusCode};

use crate::replay::Settlement;

/// Put in a response's extensions by a `single_use` handler to declare that
/// it refused without side effects (for example "slot already taken"): the
/// hold is released at once, whatever the status.
///
/// ```
/// use http::{Response, StatusCode};
/// use queuegate::layer::NoSideEffects;
///
/// let mut res = Response::new(String::from("slot taken"));
/// *res.status_mut() = StatusCode::CONFLICT;
/// res.extensions_mut().insert(NoSideEffects);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoSideEffects;

type CommitFn = dyn Fn(StatusCode) -> bool + Send + Sync;
type ReleaseFn = dyn Fn(StatusCode, &HeaderMap) -> bool + Send + Sync;

/// Which responses commit and which release a `single_use` hold. A
/// success (default: 2xx) commits; a response the host declares free of
/// side effects ([`NoSideEffects`], or its release predicate) releases;
/// anything else keeps the hold until it expires. Set with
/// [`QueueGateBuilder::commit_when`](super::QueueGateBuilder::commit_when)
/// and [`QueueGateBuilder::release_when`](super::QueueGateBuilder::release_when).
#[derive(Clone)]
pub struct HoldRules {
    commit: Arc<CommitFn>,
    release: Arc<ReleaseFn>,
}

impl fmt::Debug for HoldRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HoldRules").finish_non_exhaustive()
    }
}

impl Default for HoldRules {
    /// Commit on 2xx; release only on [`NoSideEffects`].
    fn default() -> Self {
        Self {
            commit: Arc::new(|s: StatusCode| s.is_success()),
            release: Arc::new(|_: StatusCode, _: &HeaderMap| false),
        }
    }
}

impl HoldRules {
    pub(super) fn commit_when(
        mut self,
        f: impl Fn(StatusCode) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.commit = Arc::new(f);
        self
    }

    pub(super) fn release_when(
        mut self,
        f: impl Fn(StatusCode, &HeaderMap) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.release = Arc::new(f);
        self
    }

    /// How `response` settles a hold: `None` keeps it until it expires.
    /// [`NoSideEffects`] releases first (the handler said so), then the
    /// success set commits, then the release predicate releases.
    pub fn settlement<B>(&self, response: &Response<B>) -> Option<Settlement> {
        let status = response.status();
        if response.extensions().get::<NoSideEffects>().is_some() {
            Some(Settlement::Release)
        } else if (self.commit)(status) {
            Some(Settlement::Commit)
        } else if (self.release)(status, response.headers()) {
            Some(Settlement::Release)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(status: u16) -> Response<()> {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r
    }

    #[test]
    fn defaults_commit_2xx_and_keep_the_rest() {
        let rules = HoldRules::default();
        assert_eq!(rules.settlement(&res(200)), Some(Settlement::Commit));
        assert_eq!(rules.settlement(&res(201)), Some(Settlement::Commit));
        for s in [302, 400, 409, 500, 503] {
            assert_eq!(rules.settlement(&res(s)), None, "{s}");
        }
        let mut free = res(409);
        free.extensions_mut().insert(NoSideEffects);
        assert_eq!(rules.settlement(&free), Some(Settlement::Release));
    }

    #[test]
    fn host_rules_apply() {
        let rules = HoldRules::default()
            .commit_when(|s| s == StatusCode::CREATED)
            .release_when(|s, _| s == StatusCode::CONFLICT);
        assert_eq!(rules.settlement(&res(201)), Some(Settlement::Commit));
        assert_eq!(rules.settlement(&res(200)), None);
        assert_eq!(rules.settlement(&res(409)), Some(Settlement::Release));
        assert_eq!(rules.settlement(&res(500)), None);
    }
}
