//! The join hook: where a host refuses or slows joins (a rate limit, a
//! challenge, proof of work). Joining is free for an attacker, so it must
//! be bounded somewhere.

use std::future::{ready, Future};
use std::time::Duration;

use http::HeaderMap;

use super::http::ClientAddr;
use crate::verify::ClientTime;

/// What the hook sees of a join. `Debug` prints neither the binding nor
/// the headers (they carry cookies).
#[derive(Clone, Copy)]
pub struct JoinContext<'a> {
    /// Server time (ms).
    pub now_ms: i64,
    /// The binding material the ticket will be bound to (a session id).
    pub binding: &'a [u8],
    /// The client's claimed time.
    pub client_time: ClientTime,
    /// The client's address, resolved through the host's trusted proxies
    /// ([`TrustedProxies`](super::http::TrustedProxies)); `None` when the
    /// join was made without one ([`WaitingRoom::join`](super::WaitingRoom::join)).
    pub client_addr: Option<ClientAddr>,
    /// The join request's headers (`User-Agent`, a challenge answer...);
    /// `None` when the join was made without them.
    pub headers: Option<&'a HeaderMap>,
}

impl std::fmt::Debug for JoinContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinContext")
            .field("now_ms", &self.now_ms)
            .field("binding", &"REDACTED")
            .field("client_time", &self.client_time)
            .field("client_addr", &self.client_addr)
            .field("headers", &self.headers.map(|h| h.len()))
            .finish()
    }
}

/// A join as the host's endpoint saw it, for
/// [`WaitingRoom::join_with`](super::WaitingRoom::join_with): the binding
/// and client clock that [`join`](super::WaitingRoom::join) takes, plus
/// what the join hook may judge by (the client's address, the headers).
/// `Debug` prints neither the binding nor the headers.
#[derive(Clone, Copy)]
pub struct JoinRequest<'a> {
    /// The binding material (the session id).
    pub binding: &'a [u8],
    /// The client's claimed time.
    pub client_time: ClientTime,
    /// The client's address (see [`JoinContext::client_addr`]).
    pub client_addr: Option<ClientAddr>,
    /// The request's headers (see [`JoinContext::headers`]).
    pub headers: Option<&'a HeaderMap>,
}

impl std::fmt::Debug for JoinRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("binding", &"REDACTED")
            .field("client_time", &self.client_time)
            .field("client_addr", &self.client_addr)
            .field("headers", &self.headers.map(|h| h.len()))
            .finish()
    }
}

impl<'a> JoinRequest<'a> {
    /// A join of `binding` with the client's clock, nothing else known.
    pub fn new(binding: &'a [u8], client_time: ClientTime) -> Self {
        Self {
            binding,
            client_time,
            client_addr: None,
            headers: None,
        }
    }

    /// With the client's address.
    pub fn client_addr(mut self, addr: ClientAddr) -> Self {
        self.client_addr = Some(addr);
        self
    }

    /// With the request's headers.
    pub fn headers(mut self, headers: &'a HeaderMap) -> Self {
        self.headers = Some(headers);
        self
    }

    /// What the join hook sees of this request at `now_ms`.
    pub fn context(&self, now_ms: i64) -> JoinContext<'a> {
        JoinContext {
            now_ms,
            binding: self.binding,
            client_time: self.client_time,
            client_addr: self.client_addr,
            headers: self.headers,
        }
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
/// Implemented for `()` (allow everything), for `Option<H>` (`None` allows
/// everything), for closures `Fn(&JoinContext) -> JoinVerdict`, and by the
/// example [`PerAddressLimit`](super::http::PerAddressLimit).
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

impl<H: JoinHook> JoinHook for Option<H> {
    fn on_join(&self, join: &JoinContext<'_>) -> impl Future<Output = JoinVerdict> + Send {
        let judged = self.as_ref().map(|hook| hook.on_join(join));
        async move {
            match judged {
                Some(verdict) => verdict.await,
                None => JoinVerdict::Allow,
            }
        }
    }
}
