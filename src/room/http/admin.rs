//! The operator's seat over HTTP: a page and a JSON API behind a bearer
//! token, for a host to mount (the demo serves it at `/admin`).
//!
//! [`Admin::respond`] answers every path under `/admin` from a method, a
//! path, the request headers and the body, so any HTTP stack can mount it:
//!
//! | route | what |
//! |---|---|
//! | `GET /admin` | the page ([`ADMIN_PAGE`]): no secret in it; it asks for the token |
//! | `GET /admin/api/room` | the room's live state and settings |
//! | `POST /admin/api/room` | change any of `admit_per_sec`, `paused`, `opens_at_ms`, `max_admitted`, `max_waiting` |
//! | `POST /admin/api/amnesty` | `{"from_ms", "until_ms"}`: forgive the liveness deadlines in that window |
//! | `DELETE /admin/api/amnesty` | end the amnesty |
//! | `POST /admin/api/close` | `{"message"}`: close the room; joins and heartbeats get `room_closed` (410) |
//! | `DELETE /admin/api/close` | open it again |
//! | `GET /admin/api/live` | everything the page draws: room, counters, offsets, store, clock |
//!
//! Every API call needs `Authorization: Bearer TOKEN`; a missing or wrong
//! token is `401` and changes nothing. The token is compared in constant
//! time (SHA-256 of both sides, then `subtle`) and never printed. The page
//! keeps the token the operator types in `sessionStorage` and sends it as
//! that header on its own fetches: no cookie, so no cross-site request can
//! carry it (no CSRF), and it is gone when the tab closes.
//!
//! A bad value is `400` with a problem document and nothing changes (every
//! value is checked before any is applied); moving the opening time after
//! the opening is `409`.
//!
//! On a room state that keeps the settings for every instance (Redis), a
//! change is written to the shared settings before the answer, so every
//! instance obeys it and shows it within about a second; `GET` reads them
//! again if this instance's view is older than a second. When the store
//! does not answer, the change holds on this instance, the answer says
//! `"shared_pending": true`, and it is written once the store is back.

use std::fmt;
use std::path::Path;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock::Clock;
use crate::health::{ClockReport, ClockVerdict};
use crate::metrics::{MetricsSnapshot, OFFSET_BUCKETS_MS};
use crate::rejection::RejectionCode;
use crate::replay::ReplayStore;
use crate::room::{ControlError, JoinHook, RoomState, RoomStats, WaitingRoom};

/// The operator page: one HTML file with its own small script (charts drawn
/// as inline SVG), no third-party code, nothing loaded from the network.
pub const ADMIN_PAGE: &str = include_str!("admin.html");

/// The largest request body the API reads.
pub const MAX_BODY: usize = 8 * 1024;

/// The shortest token accepted (bytes).
pub const MIN_TOKEN_LEN: usize = 16;

/// The environment variable [`Admin::from_sources`] reads.
pub const TOKEN_ENV: &str = "QUEUEGATE_ADMIN_TOKEN";

/// The operator API, holding the token's hash. `Debug` prints no token.
pub struct Admin {
    token_hash: [u8; 32],
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin").field("token", &"REDACTED").finish()
    }
}

/// What the page shows beside the room: the host's own counters and
/// checks, at the moment of the request.
#[derive(Debug, Clone)]
pub struct LiveInputs {
    /// The crate's counters.
    pub metrics: MetricsSnapshot,
    /// Bookings made so far (the host's own count), if it keeps one.
    pub bookings: Option<u64>,
    /// The last server-clock check and whether the instance is suspect.
    pub clock: Option<ClockReport>,
    /// Whether the state store answered its last use (`None`: unknown).
    pub store_ok: Option<bool>,
}

impl Admin {
    /// An API guarded by `token` (at least [`MIN_TOKEN_LEN`] bytes, surrounding
    /// whitespace ignored).
    pub fn new(token: &str) -> Result<Self, String> {
        let token = token.trim();
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the admin token must be at least {MIN_TOKEN_LEN} characters"
            ));
        }
        Ok(Self {
            token_hash: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// The token from `file` if given, else from [`TOKEN_ENV`]; `Ok(None)`
    /// when neither is set (then the page and the API are off: answer
    /// 404). Error messages never contain the token.
    pub fn from_sources(file: Option<&Path>) -> Result<Option<Self>, String> {
        let token = match file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("--admin-token-file {}: {e}", path.display()))?,
            None => match std::env::var(TOKEN_ENV) {
                Ok(t) => t,
                Err(std::env::VarError::NotPresent) => return Ok(None),
                Err(_) => return Err(format!("{TOKEN_ENV} is not valid UTF-8")),
            },
        };
        Self::new(&token).map(Some)
    }

    /// Whether `headers` carry `Authorization: Bearer <the token>`
    /// (constant time in the token's content).
    pub fn authorized(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return false;
        };
        let Some(given) = value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .map(<[u8]>::trim_ascii)
        else {
            return false;
        };
        let hash: [u8; 32] = Sha256::digest(given).into();
        hash.ct_eq(&self.token_hash).into()
    }

    /// Answers a request for `path` (a path under `/admin`). `live` is
    /// called only for an authorized `GET /admin/api/live`.
    pub async fn respond<C, S, R, H>(
        &self,
        room: &WaitingRoom<C, S, R, H>,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        live: impl FnOnce() -> LiveInputs,
    ) -> Response<Bytes>
    where
        C: Clock,
        S: ReplayStore,
        R: RoomState,
        H: JoinHook,
    {
        let path = path.trim_end_matches('/');
        if path == "/admin" {
            return if method == Method::GET || method == Method::HEAD {
                page()
            } else {
                problem(StatusCode::METHOD_NOT_ALLOWED, "use GET")
            };
        }
        if !path.starts_with("/admin/api/") {
            return problem(StatusCode::NOT_FOUND, "no such page");
        }
        if !self.authorized(headers) {
            let mut res = problem(
                StatusCode::UNAUTHORIZED,
                "send Authorization: Bearer with the admin token",
            );
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return res;
        }
        if body.len() > MAX_BODY {
            return problem(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large");
        }
        match (method.as_str(), path) {
            ("GET", "/admin/api/room") => {
                // Another instance's changes: read within about a second.
                let _ = room.sync_controls().await;
                json(StatusCode::OK, room_json(room, room.stats().await.ok()))
            }
            ("POST", "/admin/api/room") => match change_room(room, body) {
                Ok(()) => shared(room).await,
                Err((status, detail)) => problem(status, &detail),
            },
            ("POST", "/admin/api/amnesty") => {
                let fields = match parse_object(body) {
                    Ok(f) => f,
                    Err(e) => return bad(e),
                };
                let (from, until) = match (
                    int_field(&fields, "from_ms"),
                    int_field(&fields, "until_ms"),
                    only_fields(&fields, &["from_ms", "until_ms"]),
                ) {
                    (Ok(Some(f)), Ok(Some(u)), Ok(())) => (f, u),
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return bad(e),
                    _ => return bad("from_ms and until_ms are required".into()),
                };
                match room.declare_amnesty(from, until) {
                    Ok(()) => shared(room).await,
                    Err(e) => bad(e.to_string()),
                }
            }
            ("DELETE", "/admin/api/amnesty") => {
                room.end_amnesty();
                shared(room).await
            }
            ("POST", "/admin/api/close") => {
                let fields = match parse_object(body) {
                    Ok(f) => f,
                    Err(e) => return bad(e),
                };
                let message = match (
                    fields.iter().find(|(k, _)| k == "message"),
                    only_fields(&fields, &["message"]),
                ) {
                    (_, Err(e)) => return bad(e),
                    (Some((_, Json::Str(m))), Ok(())) => m.clone(),
                    _ => return bad("message: a string is required".into()),
                };
                match room.close(&message) {
                    Ok(()) => shared(room).await,
                    Err(e) => bad(e.to_string()),
                }
            }
            ("DELETE", "/admin/api/close") => {
                room.reopen();
                shared(room).await
            }
            ("GET", "/admin/api/live") => {
                let _ = room.sync_controls().await;
                let inputs = live();
                let room_part = room_json(room, room.stats().await.ok());
                json(
                    StatusCode::OK,
                    live_json(room_part, &inputs, room.issuer().now_ms()),
                )
            }
            (
                _,
                "/admin/api/room" | "/admin/api/amnesty" | "/admin/api/close" | "/admin/api/live",
            ) => problem(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
            _ => problem(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }
}

/// After a change: written to the shared settings at once (on a state
/// that keeps them for every instance), then the room as JSON. A store
/// that does not answer leaves the change in force here and pending
/// (`"shared_pending": true`), written when the store is back; an opening
/// that passed meanwhile on the shared settings is `409`.
async fn shared<C, S, R, H>(room: &WaitingRoom<C, S, R, H>) -> Response<Bytes>
where
    C: Clock,
    S: ReplayStore,
    R: RoomState,
    H: JoinHook,
{
    match room.sync_controls().await {
        Err(e @ ControlError::OpeningPassed) => problem(StatusCode::CONFLICT, &e.to_string()),
        _ => json(StatusCode::OK, room_json(room, room.stats().await.ok())),
    }
}

/// Applies a `POST /admin/api/room` body: every value checked first, then
/// the opening time (the only change that can be refused), then the rest.
fn change_room<C, S, R, H>(
    room: &WaitingRoom<C, S, R, H>,
    body: &[u8],
) -> Result<(), (StatusCode, String)>
where
    C: Clock,
    S: ReplayStore,
    R: RoomState,
    H: JoinHook,
{
    let fields = parse_object(body).map_err(refuse)?;
    only_fields(
        &fields,
        &[
            "admit_per_sec",
            "paused",
            "opens_at_ms",
            "max_admitted",
            "max_waiting",
        ],
    )
    .map_err(refuse)?;
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v);
    let rate = match get("admit_per_sec") {
        None => None,
        Some(Json::Num(n)) => match n.parse::<f64>() {
            Ok(x) if x.is_finite() && (0.0..=1e9).contains(&x) => Some(x),
            _ => return Err(refuse("admit_per_sec: a number from 0 to 1e9".into())),
        },
        Some(_) => return Err(refuse("admit_per_sec: a number from 0 to 1e9".into())),
    };
    let paused = match get("paused") {
        None => None,
        Some(Json::Bool(b)) => Some(*b),
        Some(_) => return Err(refuse("paused: true or false".into())),
    };
    let opens_at = int_field(&fields, "opens_at_ms").map_err(refuse)?;
    let cap = |k: &'static str| -> Result<Option<Option<u64>>, (StatusCode, String)> {
        match get(k) {
            None => Ok(None),
            Some(Json::Null) => Ok(Some(None)),
            Some(Json::Num(n)) => n
                .parse::<u64>()
                .map(|v| Some(Some(v)))
                .map_err(|_| refuse(format!("{k}: a whole number 0 or more, or null"))),
            Some(_) => Err(refuse(format!("{k}: a whole number 0 or more, or null"))),
        }
    };
    let (max_admitted, max_waiting) = (cap("max_admitted")?, cap("max_waiting")?);
    if let Some(at) = opens_at {
        if at != room.opens_at_ms() {
            room.set_opens_at_ms(at).map_err(|e| match e {
                ControlError::OpeningPassed => (StatusCode::CONFLICT, e.to_string()),
                other => refuse(other.to_string()),
            })?;
        }
    }
    if let Some(rate) = rate {
        room.set_admit_per_sec(rate)
            .map_err(|e| refuse(e.to_string()))?;
    }
    match paused {
        Some(true) => room.pause(),
        Some(false) => room.resume(),
        None => {}
    }
    if let Some(m) = max_admitted {
        room.set_max_admitted(m);
    }
    if let Some(m) = max_waiting {
        room.set_max_waiting(m);
    }
    Ok(())
}

fn refuse(detail: String) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, detail)
}

fn page() -> Response<Bytes> {
    let mut res = Response::new(Bytes::from_static(ADMIN_PAGE.as_bytes()));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Its own inline script and styles only; nothing from elsewhere, and
    // no framing by other sites.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

fn json(status: StatusCode, body: String) -> Response<Bytes> {
    let mut res = Response::new(Bytes::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn bad(detail: String) -> Response<Bytes> {
    problem(StatusCode::BAD_REQUEST, &detail)
}

/// A problem document (RFC 9457).
fn problem(status: StatusCode, detail: &str) -> Response<Bytes> {
    let body = format!(
        "{{\"type\":\"about:blank\",\"title\":{},\"status\":{},\"detail\":{}}}",
        quote(status.canonical_reason().unwrap_or("Error")),
        status.as_u16(),
        quote(detail)
    );
    let mut res = json(status, body);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    res
}

fn opt<T: fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "null".to_owned(), |v| v.to_string())
}

fn number(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".to_owned()
    }
}

/// The room as JSON: live counts (when the state answered) and settings.
pub fn room_json<C, S, R, H>(room: &WaitingRoom<C, S, R, H>, stats: Option<RoomStats>) -> String
where
    C: Clock,
    S: ReplayStore,
    R: RoomState,
    H: JoinHook,
{
    let c = room.controls();
    format!(
        "{{\"queue\":{},\"waiting\":{},\"admitted\":{},\"admitted_total\":{},\
         \"admit_per_sec\":{},\"paused\":{},\"opens_at_ms\":{},\"max_admitted\":{},\
         \"max_waiting\":{},\"closed\":{},\"closed_message\":{},\"amnesty\":{},\
         \"store_ok\":{},\"shared_pending\":{}}}",
        quote(room.queue_name()),
        opt(stats.map(|s| s.waiting)),
        opt(stats.map(|s| s.admitted_alive)),
        opt(stats.map(|s| s.admitted_total)),
        number(c.admit_per_sec),
        c.paused,
        opt(c.opens_at_ms),
        opt(c.max_admitted),
        opt(c.max_waiting),
        c.closed.is_some(),
        c.closed.as_deref().map_or_else(|| "null".to_owned(), quote),
        c.amnesty.map_or_else(
            || "null".to_owned(),
            |(f, u)| format!("{{\"from_ms\":{f},\"until_ms\":{u}}}")
        ),
        stats.is_some(),
        room.controls_pending(),
    )
}

/// The median of the offset histogram (ms), interpolated inside its bucket
/// (the open-ended outer buckets answer their bound).
pub fn median_offset_ms(buckets: &[u64]) -> Option<i64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let half = total as f64 / 2.0;
    let mut seen = 0.0;
    for (k, &n) in buckets.iter().enumerate() {
        let next = seen + n as f64;
        if next >= half && n > 0 {
            let upper = OFFSET_BUCKETS_MS.get(k).copied();
            let lower = k
                .checked_sub(1)
                .and_then(|j| OFFSET_BUCKETS_MS.get(j))
                .copied();
            return Some(match (lower, upper) {
                (Some(lo), Some(hi)) => {
                    let frac = (half - seen) / n as f64;
                    lo + ((hi - lo) as f64 * frac).round() as i64
                }
                (None, Some(hi)) => hi,
                (Some(lo), None) => lo,
                (None, None) => 0,
            });
        }
        seen = next;
    }
    None
}

fn live_json(room: String, live: &LiveInputs, now_ms: i64) -> String {
    let m = &live.metrics;
    let rejections = RejectionCode::ALL
        .iter()
        .map(|c| format!("{}:{}", quote(c.as_str()), m.rejections(*c)))
        .collect::<Vec<_>>()
        .join(",");
    let bounds = OFFSET_BUCKETS_MS
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let buckets = m
        .offset_buckets
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let clock = live.clock.map_or_else(
        || "null".to_owned(),
        |r| {
            format!(
                "{{\"verdict\":{},\"redis_offset_ms\":{},\"clients_offset_ms\":{},\"client_samples\":{}}}",
                quote(match r.verdict {
                    ClockVerdict::Consistent => "consistent",
                    ClockVerdict::Suspect => "suspect",
                    ClockVerdict::ReferencesDisagree => "references_disagree",
                }),
                opt(r.redis_offset_ms),
                opt(r.clients_offset_ms),
                r.client_samples
            )
        },
    );
    format!(
        "{{\"now_ms\":{now_ms},\"room\":{room},\"room_admitted_total\":{},\"admissions_total\":{},\
         \"bookings_total\":{},\"rejections_total\":{{{rejections}}},\
         \"offsets\":{{\"bounds_ms\":[{bounds}],\"buckets\":[{buckets}],\"count\":{},\"median_ms\":{}}},\
         \"store_ok\":{},\"clock\":{clock}}}",
        m.room_admitted,
        m.admissions,
        opt(live.bookings),
        m.offset_count,
        opt(median_offset_ms(&m.offset_buckets)),
        opt(live.store_ok),
    )
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '<' => out.push_str("\\u003c"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A value of a flat JSON object.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    /// A number, as written (checked to be JSON number syntax).
    Num(String),
    Bool(bool),
    Null,
    Str(String),
}

fn only_fields(fields: &[(String, Json)], allowed: &[&str]) -> Result<(), String> {
    match fields.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        Some((k, _)) => Err(format!(
            "unknown field {}: expected any of {}",
            quote(k),
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

fn int_field(fields: &[(String, Json)], key: &str) -> Result<Option<i64>, String> {
    match fields.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
        None => Ok(None),
        Some(Json::Num(n)) => n
            .parse::<i64>()
            .map(Some)
            .map_err(|_| format!("{key}: a whole number of ms since the epoch")),
        Some(_) => Err(format!("{key}: a whole number of ms since the epoch")),
    }
}

/// Parses a flat JSON object (values: numbers, booleans, null, strings).
/// Nested values, duplicate keys and trailing text are refused.
fn parse_object(body: &[u8]) -> Result<Vec<(String, Json)>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_owned())?;
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let err =
        || "the body must be one JSON object of numbers, booleans, null and strings".to_owned();
    p.ws();
    if !p.eat(b'{') {
        return Err(err());
    }
    let mut out: Vec<(String, Json)> = Vec::new();
    p.ws();
    if !p.eat(b'}') {
        loop {
            p.ws();
            let key = p.string().ok_or_else(err)?;
            p.ws();
            if !p.eat(b':') {
                return Err(err());
            }
            p.ws();
            let value = p.value().ok_or_else(err)?;
            if out.iter().any(|(k, _)| *k == key) {
                return Err(format!("field {} given twice", quote(&key)));
            }
            out.push((key, value));
            p.ws();
            if p.eat(b',') {
                continue;
            }
            if p.eat(b'}') {
                break;
            }
            return Err(err());
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return Err(err());
    }
    Ok(out)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<Json> {
        match self.peek()? {
            b'"' => self.string().map(Json::Str),
            b't' => self.literal(b"true").then_some(Json::Bool(true)),
            b'f' => self.literal(b"false").then_some(Json::Bool(false)),
            b'n' => self.literal(b"null").then_some(Json::Null),
            b'-' | b'0'..=b'9' => self.number().map(Json::Num),
            _ => None,
        }
    }

    /// JSON number syntax: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<String> {
        let start = self.i;
        self.eat(b'-');
        let digits = |p: &mut Self| {
            let from = p.i;
            while matches!(p.peek(), Some(b'0'..=b'9')) {
                p.i += 1;
            }
            p.i - from
        };
        if self.eat(b'0') {
            if matches!(self.peek(), Some(b'0'..=b'9')) {
                return None;
            }
        } else if digits(self) == 0 {
            return None;
        }
        if self.eat(b'.') && digits(self) == 0 {
            return None;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            let _ = self.eat(b'+') || self.eat(b'-');
            if digits(self) == 0 {
                return None;
            }
        }
        // ASCII only, by construction.
        Some(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn string(&mut self) -> Option<String> {
        if !self.eat(b'"') {
            return None;
        }
        let mut out = Vec::new();
        loop {
            let b = self.peek()?;
            self.i += 1;
            match b {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4)?;
                            self.i += 4;
                            let code =
                                u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                            // Surrogates (pairs included) are refused: the
                            // API's strings need none.
                            char::from_u32(code)?
                        }
                        _ => return None,
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                0..=0x1f => return None,
                _ => out.push(b),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flat_objects_and_refuses_the_rest() {
        let ok =
            parse_object(br#" { "a": 1.5e3, "b": true, "c": null, "d": "x\"\u00e9" } "#).unwrap();
        assert_eq!(ok[0], ("a".into(), Json::Num("1.5e3".into())));
        assert_eq!(ok[1], ("b".into(), Json::Bool(true)));
        assert_eq!(ok[2], ("c".into(), Json::Null));
        assert_eq!(ok[3], ("d".into(), Json::Str("x\"é".into())));
        assert!(parse_object(b"{}").unwrap().is_empty());
        for bad in [
            &b""[..],
            b"[]",
            b"{",
            b"{\"a\":}",
            b"{\"a\":01}",
            b"{\"a\":1,}",
            b"{\"a\":{}}",
            b"{\"a\":1} x",
            b"{\"a\":1,\"a\":2}",
            b"{\"a\":\"\\ud800\"}",
            b"{\"a\":\"\x01\"}",
            b"{\"a\":-}",
            b"{\"a\":1.}",
            b"{\"a\":tru}",
            b"\xff",
        ] {
            assert!(
                parse_object(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn token_is_checked_and_never_printed() {
        let admin = Admin::new("  correct-horse-battery-staple \n").unwrap();
        assert!(!format!("{admin:?}").contains("horse"));
        let mut h = HeaderMap::new();
        assert!(!admin.authorized(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer correct-horse-battery-staple"),
        );
        assert!(admin.authorized(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer correct-horse-battery-stapl"),
        );
        assert!(!admin.authorized(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic correct-horse-battery-staple"),
        );
        assert!(!admin.authorized(&h));
        let e = Admin::new("short").unwrap_err();
        assert!(!e.contains("short"), "{e}");
    }

    #[test]
    fn median_of_the_histogram() {
        let mut b = [0u64; OFFSET_BUCKETS_MS.len() + 1];
        assert_eq!(median_offset_ms(&b), None);
        // Everything in (-1 s, 1 s]: the middle of that bucket.
        b[6] = 10;
        assert_eq!(median_offset_ms(&b), Some(0));
        // Most clocks 30..60 s ahead: the median moves there.
        b[9] = 30;
        let m = median_offset_ms(&b).unwrap();
        assert!((30_000..=60_000).contains(&m), "{m}");
    }

    #[test]
    fn quotes_json_strings() {
        assert_eq!(quote("a\"b\\c\n<"), r#""a\"b\\c\u000a\u003c""#);
    }
}
