//! [`RoomService`]: the room's endpoints as one tower service.

use std::convert::Infallible;
use std::fmt;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE, X_CONTENT_TYPE_OPTIONS,
};
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::client::CLIENT_JS;
use super::client_addr::TrustedProxies;
use super::response::{json_response, place_response, room_problem_response, RoomBody};
use super::session::{JoinSession, RoomSessions, SessionRefusal};
use crate::clock::Clock;
use crate::error::ConfigError;
use crate::metrics::Metrics;
use crate::rejection::{MalformedReason, Rejection, RejectionCode};
use crate::replay::ReplayStore;
use crate::room::schedule::estimated_wait_ms;
use crate::room::{JoinHook, JoinRequest, RoomError, RoomState, WaitingRoom};
use crate::verify::{ClientTime, Presented};

/// The header carrying the ticket on a heartbeat (and on protected routes).
pub const TICKET_HEADER: &str = "queue-ticket";
/// The header carrying the client's clock (ms since the epoch), as evidence.
pub const CLIENT_TIME_HEADER: &str = "queue-client-time";

/// The address of the connection's peer, in the request extensions, for a
/// host that drives [`RoomService`] with hyper directly (axum's
/// `ConnectInfo<SocketAddr>` is read as well, with the `axum` feature).
/// The service resolves the client's address from it through
/// [`TrustedProxies`]; without either, the join hook sees no address.
///
/// ```
/// use queuegate::room::http::PeerAddr;
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(PeerAddr("192.0.2.7:50000".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Where the room's endpoints get the session the tickets are bound to.
///
/// [`RoomSessions`] (signed, server-issued ids in a cookie, cross-site
/// requests refused) is the default; a host with its own sessions (a login
/// cookie it already checks) implements this instead. Both methods must
/// refuse cross-site browser requests (see
/// [`CrossSiteGuard`](super::CrossSiteGuard)) and must never replace a
/// live session.
pub trait SessionSource: Send + Sync + 'static {
    /// The session a join goes ahead with (see [`RoomSessions::join`]).
    fn join(&self, headers: &HeaderMap, uri: &Uri) -> Result<JoinSession, SessionRefusal>;

    /// The valid session of any other request, if it carries one (see
    /// [`RoomSessions::check`]).
    fn check<'a>(
        &self,
        headers: &'a HeaderMap,
        uri: &Uri,
    ) -> Result<Option<&'a [u8]>, SessionRefusal>;
}

impl SessionSource for RoomSessions {
    fn join(&self, headers: &HeaderMap, uri: &Uri) -> Result<JoinSession, SessionRefusal> {
        RoomSessions::join(self, headers, uri)
    }

    fn check<'a>(
        &self,
        headers: &'a HeaderMap,
        uri: &Uri,
    ) -> Result<Option<&'a [u8]>, SessionRefusal> {
        RoomSessions::check(self, headers, uri)
    }
}

/// Builds a [`RoomService`]: the room, where its sessions come from, its
/// base path, the proxies in front, the counters.
#[must_use]
pub struct RoomEndpoints<C, S, R, H, Src = RoomSessions> {
    room: Arc<WaitingRoom<C, S, R, H>>,
    sessions: Src,
    proxies: TrustedProxies,
    base: Box<str>,
    metrics: Option<Metrics>,
}

impl<C, S, R, H, Src> fmt::Debug for RoomEndpoints<C, S, R, H, Src> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomEndpoints")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl<C, S, R, H> RoomEndpoints<C, S, R, H, RoomSessions>
where
    C: Clock,
    S: ReplayStore,
    R: RoomState,
    H: JoinHook,
{
    /// The endpoints of `room` under `/queue`, with sessions from
    /// `sessions`, no trusted proxies (the peer is the client) and no
    /// counters.
    pub fn new(room: Arc<WaitingRoom<C, S, R, H>>, sessions: RoomSessions) -> Self {
        Self {
            room,
            sessions,
            proxies: TrustedProxies::new(),
            base: "/queue".into(),
            metrics: None,
        }
    }
}

impl<C, S, R, H, Src> RoomEndpoints<C, S, R, H, Src>
where
    C: Clock,
    S: ReplayStore,
    R: RoomState,
    H: JoinHook,
    Src: SessionSource,
{
    /// Serves the endpoints under `base` instead of `/queue`: a path that
    /// starts with `/` and does not end with one (`""` serves them at the
    /// root). The client's `base` option must match.
    pub fn base(mut self, base: &str) -> Result<Self, ConfigError> {
        let ok = base.is_empty()
            || (base.starts_with('/')
                && !base.ends_with('/')
                && base
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'%')));
        if !ok {
            return Err(ConfigError::Invalid {
                setting: "room base path",
                reason: "expected a path such as /queue (no trailing slash), or empty",
            });
        }
        self.base = base.into();
        Ok(self)
    }

    /// Resolves the client's address through these proxies (for the join
    /// hook's [`JoinContext::client_addr`](crate::room::JoinContext::client_addr)).
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.proxies = proxies;
        self
    }

    /// Counts ticket refusals (by code) in these counters, as the layer
    /// does, and feeds the client-clock offset histogram (which
    /// [`ClockCheck`](crate::health::ClockCheck) reads) from heartbeats:
    /// once per chain, for an authentic ticket (MAC and binding verified)
    /// that passed or was refused for a reason of time (`expired`,
    /// `offline_resumed`, `clock_skew`, `clock_jump`: what a server clock
    /// far off does to every honest ticket).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Takes sessions from `sessions` instead (a host's own session).
    pub fn sessions<Src2: SessionSource>(self, sessions: Src2) -> RoomEndpoints<C, S, R, H, Src2> {
        RoomEndpoints {
            room: self.room,
            sessions,
            proxies: self.proxies,
            base: self.base,
            metrics: self.metrics,
        }
    }

    /// The service.
    pub fn build(self) -> RoomService<C, S, R, H, Src> {
        RoomService {
            inner: Arc::new(Inner {
                room: self.room,
                sessions: self.sessions,
                proxies: self.proxies,
                base: self.base,
                metrics: self.metrics,
            }),
        }
    }

    /// An axum `Router` with the five routes (merge it into the host's):
    /// the service at `{base}/join`, `{base}/heartbeat`, `{base}/leave`,
    /// `{base}/status` and `{base}/client.js`. For the client's address,
    /// serve with `into_make_service_with_connect_info::<SocketAddr>()`.
    #[cfg(feature = "axum")]
    pub fn router<St>(self) -> axum::Router<St>
    where
        St: Clone + Send + Sync + 'static,
        WaitingRoom<C, S, R, H>: Send + Sync,
    {
        let service = self.build();
        let base = service.inner.base.clone();
        ROUTES
            .iter()
            .fold(axum::Router::new(), |router, (path, _)| {
                router.route_service(&format!("{base}{path}"), service.clone())
            })
    }
}

/// The routes under the base path, with their methods.
const ROUTES: [(&str, Route); 5] = [
    ("/join", Route::Join),
    ("/heartbeat", Route::Heartbeat),
    ("/leave", Route::Leave),
    ("/status", Route::Status),
    ("/client.js", Route::ClientJs),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Join,
    Heartbeat,
    Leave,
    Status,
    ClientJs,
}

impl Route {
    fn allows(self, method: &Method) -> bool {
        match self {
            Self::Join | Self::Heartbeat | Self::Leave => method == Method::POST,
            Self::Status | Self::ClientJs => method == Method::GET || method == Method::HEAD,
        }
    }

    fn allow_header(self) -> &'static str {
        match self {
            Self::Join | Self::Heartbeat | Self::Leave => "POST",
            Self::Status | Self::ClientJs => "GET, HEAD",
        }
    }
}

/// The room's endpoints as a tower service (build it with
/// [`RoomEndpoints`]); it answers every request itself and never reads the
/// request body:
///
/// | route | what it does |
/// |---|---|
/// | `POST {base}/join` | joins; sets the session cookie only for a new session (a live one is never replaced); the join hook sees the client's address and headers |
/// | `POST {base}/heartbeat` | renews the chain: header `queue-ticket` (exactly one) |
/// | `POST {base}/leave` | ends the session's chain (`204`); no-op without a valid session |
/// | `GET {base}/status` | reads without renewing or writing anything (below) |
/// | `GET {base}/client.js` | the browser client, [`CLIENT_JS`] |
///
/// Join and heartbeat answer `200` with `application/json`
/// `{"ticket","position","ahead","admitted","retry_after_ms","estimated_wait_ms","opens_in_ms"}`
/// ([`place_response`](super::place_response)); every refusal is an
/// `application/problem+json` document with `code`, `detail` and, where
/// waiting helps, `Retry-After` in whole seconds rounded up
/// ([`room_problem_response`](super::room_problem_response)). Each
/// endpoint takes `queue-client-time` as evidence (SPEC §8.4). Join,
/// heartbeat, leave and status refuse a request a browser sends for
/// another site (`cross_site`, 403), through the [`SessionSource`].
///
/// **Status** needs the session cookie and the `queue-ticket` header, like
/// a heartbeat, and checks the ticket the same way (signature, binding,
/// liveness, clock) but writes nothing: the chain is not renewed, its
/// deadline does not move, the replay state is not read. It answers
/// `{"position","ahead","admitted","estimated_wait_ms","live_for_ms","opens_in_ms","waiting","paused"}`:
/// `position` is the ticket's own (as of its last renewal), `ahead` is at
/// most `position - 1 - admitted so far` (an upper bound: places ahead
/// whose holder left are counted until swept; `null` before the opening),
/// `live_for_ms` is the time left before the next heartbeat must arrive.
/// Without a ticket it answers only the room's `waiting`, `paused` and
/// `opens_in_ms`. It is for pages and tools that look without taking part
/// (a second tab, a status widget); the waiting page itself heart-beats.
///
/// **The peer address** comes from the request extensions: [`PeerAddr`]
/// (insert it when serving with hyper), or, with the `axum` feature,
/// axum's `ConnectInfo<SocketAddr>`. It is resolved through the
/// [`TrustedProxies`]; without it the join hook sees no address.
///
/// The future of join, heartbeat, leave and status is boxed (one
/// allocation, next to an HMAC and a state operation); the client script,
/// 404 and 405 answer without one.
pub struct RoomService<C, S, R, H, Src = RoomSessions> {
    inner: Arc<Inner<C, S, R, H, Src>>,
}

impl<C, S, R, H, Src> Clone for RoomService<C, S, R, H, Src> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<C, S, R, H, Src> fmt::Debug for RoomService<C, S, R, H, Src> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomService")
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

struct Inner<C, S, R, H, Src> {
    room: Arc<WaitingRoom<C, S, R, H>>,
    sessions: Src,
    proxies: TrustedProxies,
    base: Box<str>,
    metrics: Option<Metrics>,
}

impl<C, S, R, H, Src> RoomService<C, S, R, H, Src> {
    /// The room behind the endpoints.
    pub fn room(&self) -> &Arc<WaitingRoom<C, S, R, H>> {
        &self.inner.room
    }
}

type Answer = Response<Bytes>;

pin_project! {
    /// The response future of [`RoomService`].
    pub struct RoomFuture {
        #[pin]
        kind: Kind,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind {
        Ready { response: Option<Answer> },
        Room { future: Pin<Box<dyn Future<Output = Answer> + Send>> },
    }
}

impl fmt::Debug for RoomFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RoomFuture")
    }
}

impl Future for RoomFuture {
    type Output = Result<Response<RoomBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let answer = match self.project().kind.project() {
            KindProj::Ready { response } => response.take().expect("polled after completion"),
            KindProj::Room { future } => match future.as_mut().poll(cx) {
                Poll::Ready(a) => a,
                Poll::Pending => return Poll::Pending,
            },
        };
        Poll::Ready(Ok(answer.map(RoomBody::new)))
    }
}

fn ready(response: Answer) -> RoomFuture {
    RoomFuture {
        kind: Kind::Ready {
            response: Some(response),
        },
    }
}

impl<C, S, R, H, Src, B> Service<Request<B>> for RoomService<C, S, R, H, Src>
where
    C: Clock,
    S: ReplayStore,
    R: RoomState,
    H: JoinHook,
    Src: SessionSource,
    WaitingRoom<C, S, R, H>: Send + Sync,
{
    type Response = Response<RoomBody>;
    type Error = Infallible;
    type Future = RoomFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> RoomFuture {
        // The body is never read: every input is in the headers.
        let (parts, _body) = req.into_parts();
        let route = parts
            .uri
            .path()
            .strip_prefix(&*self.inner.base)
            .and_then(|rest| ROUTES.iter().find(|(p, _)| *p == rest))
            .map(|(_, r)| *r);
        let Some(route) = route else {
            return ready(plain(StatusCode::NOT_FOUND, "not found"));
        };
        if !route.allows(&parts.method) {
            let mut res = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            res.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(route.allow_header()));
            return ready(res);
        }
        let inner = self.inner.clone();
        match route {
            Route::ClientJs => ready(client_js()),
            Route::Leave => boxed(async move { inner.leave(&parts).await }),
            Route::Join => boxed(async move { inner.join(&parts).await }),
            Route::Heartbeat => boxed(async move { inner.heartbeat(&parts).await }),
            Route::Status => boxed(async move { inner.status(&parts).await }),
        }
    }
}

fn boxed(f: impl Future<Output = Answer> + Send + 'static) -> RoomFuture {
    RoomFuture {
        kind: Kind::Room {
            future: Box::pin(f),
        },
    }
}

fn plain(status: StatusCode, text: &'static str) -> Answer {
    let mut res = Response::new(Bytes::from_static(text.as_bytes()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

fn client_js() -> Answer {
    let mut res = Response::new(Bytes::from_static(CLIENT_JS.as_bytes()));
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    res
}

/// Whether a heartbeat whose ticket proved authentic (MAC and binding)
/// tells the offset histogram something about the server's clock: it
/// passed every check, or it was refused for a reason of time, which is
/// what a server clock far off does to every honest ticket. A ticket
/// refused for another reason (a replayed copy, another queue) is left
/// out, as a refused request is on protected routes.
fn clock_evidence<T>(outcome: &Result<T, RoomError>) -> bool {
    match outcome {
        Err(RoomError::Rejected(r)) => matches!(
            r.code(),
            RejectionCode::Expired
                | RejectionCode::OfflineResumed
                | RejectionCode::ClockSkew
                | RejectionCode::ClockJump
        ),
        // Checked; the state then answered (a place, ended, unavailable).
        _ => true,
    }
}

/// The `queue-client-time` header: absent, one value, or invalid (twice).
fn client_time(headers: &HeaderMap) -> ClientTime {
    let mut values = headers.get_all(CLIENT_TIME_HEADER).iter();
    match (values.next(), values.next()) {
        (None, _) => ClientTime::Absent,
        (Some(v), None) => ClientTime::parse(v.as_bytes()),
        _ => ClientTime::Invalid,
    }
}

/// The `queue-ticket` header: a second one is `malformed` (`ambiguous`):
/// which of the two would be the person's?
fn ticket(headers: &HeaderMap) -> Result<Option<&[u8]>, RoomError> {
    let mut tickets = headers.get_all(TICKET_HEADER).iter();
    match (tickets.next(), tickets.next()) {
        (Some(_), Some(_)) => Err(RoomError::Rejected(Rejection::Malformed {
            reason: MalformedReason::Ambiguous,
        })),
        (t, _) => Ok(t.map(|v| v.as_bytes())),
    }
}

impl<C, S, R, H, Src> Inner<C, S, R, H, Src>
where
    C: Clock,
    S: ReplayStore,
    R: RoomState,
    H: JoinHook,
    Src: SessionSource,
{
    fn refused(&self, e: &RoomError) -> Answer {
        if let (Some(m), RoomError::Rejected(r)) = (&self.metrics, e) {
            m.record_rejection(r.code());
        }
        room_problem_response(e)
    }

    fn session_refused(&self, e: &SessionRefusal) -> Answer {
        if let (Some(m), SessionRefusal::Rejected(r)) = (&self.metrics, e) {
            m.record_rejection(r.code());
        }
        e.problem_response()
    }

    fn peer(&self, parts: &Parts) -> Option<SocketAddr> {
        if let Some(PeerAddr(a)) = parts.extensions.get::<PeerAddr>() {
            return Some(*a);
        }
        #[cfg(feature = "axum")]
        if let Some(axum::extract::ConnectInfo(a)) = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
        {
            return Some(*a);
        }
        None
    }

    async fn join(&self, parts: &Parts) -> Answer {
        let session = match self.sessions.join(&parts.headers, &parts.uri) {
            Ok(s) => s,
            Err(e) => return self.session_refused(&e),
        };
        let mut request = JoinRequest::new(session.id().as_bytes(), client_time(&parts.headers))
            .headers(&parts.headers);
        if let Some(peer) = self.peer(parts) {
            request = request.client_addr(self.proxies.resolve(peer.ip(), &parts.headers));
        }
        match self.room.join_with(&request).await {
            Ok(t) => {
                let mut res = place_response(&t);
                // Only a new session gets a cookie: a live one is never
                // replaced.
                if let Some(cookie) = session.set_cookie() {
                    res.headers_mut().insert(SET_COOKIE, cookie.clone());
                }
                res
            }
            Err(e) => self.refused(&e),
        }
    }

    async fn heartbeat(&self, parts: &Parts) -> Answer {
        let session = match self.sessions.check(&parts.headers, &parts.uri) {
            Ok(s) => s,
            Err(e) => return self.session_refused(&e),
        };
        let ticket = match ticket(&parts.headers) {
            Ok(t) => t,
            Err(e) => return self.refused(&e),
        };
        let presented = Presented {
            ticket,
            binding: session,
            client_time: client_time(&parts.headers),
        };
        let mut sample = None;
        let outcome = self.room.heartbeat_sampled(&presented, &mut sample).await;
        if let (Some(m), Some(s)) = (&self.metrics, sample) {
            if clock_evidence(&outcome) {
                m.observe_chain_offset_ms(s.chain, s.offset_ms);
            }
        }
        match outcome {
            Ok(t) => place_response(&t),
            Err(e) => self.refused(&e),
        }
    }

    async fn leave(&self, parts: &Parts) -> Answer {
        let session = match self.sessions.check(&parts.headers, &parts.uri) {
            Ok(s) => s,
            Err(e) => return self.session_refused(&e),
        };
        // Without a valid session there is nothing to end: the same answer
        // as a leave that ended a chain.
        let Some(session) = session else {
            return no_content();
        };
        match self.room.leave(session).await {
            Ok(()) => no_content(),
            Err(_) => self.refused(&RoomError::Rejected(
                self.room.issuer().verifier().policy().store_unavailable(),
            )),
        }
    }

    async fn status(&self, parts: &Parts) -> Answer {
        let session = match self.sessions.check(&parts.headers, &parts.uri) {
            Ok(s) => s,
            Err(e) => return self.session_refused(&e),
        };
        let ticket = match ticket(&parts.headers) {
            Ok(t) => t,
            Err(e) => return self.refused(&e),
        };
        let room = &self.room;
        let verified = match ticket {
            None => None,
            Some(t) => {
                let presented = Presented {
                    ticket: Some(t),
                    binding: session,
                    client_time: client_time(&parts.headers),
                };
                match room.issuer().check(&presented) {
                    Ok(v) => Some(v),
                    Err(r) => return self.refused(&RoomError::Rejected(r)),
                }
            }
        };
        let stats = match room.stats().await {
            Ok(s) => s,
            Err(_) => {
                return self.refused(&RoomError::Rejected(
                    room.issuer().verifier().policy().store_unavailable(),
                ))
            }
        };
        let now = room.issuer().now_ms();
        let until_open = room.opens_at_ms().saturating_sub(now).max(0);
        let per_sec = if room.is_paused() {
            0.0
        } else {
            room.admit_per_sec()
        };
        let mut json = String::with_capacity(192);
        json.push('{');
        if let Some(v) = verified {
            let c = &v.claims;
            let admitted = c.is_admitted();
            let ahead = if admitted {
                Some(0)
            } else if c.position == 0 {
                None
            } else {
                Some(
                    u64::from(c.position)
                        .saturating_sub(1)
                        .saturating_sub(stats.admitted_total)
                        .min(stats.waiting),
                )
            };
            let wait = match ahead {
                Some(0) if admitted => Some(0),
                Some(a) => estimated_wait_ms(a, per_sec, until_open),
                None => Some(until_open),
            };
            let _ = write!(
                json,
                "\"position\":{},\"ahead\":{},\"admitted\":{admitted},\"estimated_wait_ms\":{},\"live_for_ms\":{},",
                c.position,
                opt(ahead.map(|a| a as i64)),
                opt(wait),
                c.live_until_ms.saturating_sub(now).max(0),
            );
        }
        let _ = write!(
            json,
            "\"opens_in_ms\":{until_open},\"waiting\":{},\"paused\":{}}}",
            stats.waiting,
            room.is_paused()
        );
        json_response(StatusCode::OK, json)
    }
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "null".to_owned(), |v| v.to_string())
}

fn no_content() -> Answer {
    let mut res = Response::new(Bytes::new());
    *res.status_mut() = StatusCode::NO_CONTENT;
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
