//! Where a request's ticket, binding and clock reading come from.
//!
//! Everything here reads the request head in place: no allocation, and a
//! bounded amount of work whatever the client sends (a 1 MB header or
//! thousands of cookies are refused after a fixed number of bytes).

use std::borrow::Cow;

use http::header::HeaderName;
use http::request::Parts;

use crate::cookie::{cookie_name, find_cookie, CookieLookup};
use crate::error::ConfigError;
use crate::rejection::{MalformedReason, Rejection};
use crate::ticket::ENCODED_LEN;
use crate::verify::ClientTime;

/// The default header that carries the ticket.
pub const DEFAULT_TICKET_HEADER: &str = "queue-ticket";
/// The default cookie that carries the session a ticket is bound to.
pub const DEFAULT_SESSION_COOKIE: &str = "qg_session";
/// The default header that carries the client's clock (Unix epoch ms).
pub const DEFAULT_CLIENT_TIME_HEADER: &str = "queue-client-time";

pub use crate::cookie::{MAX_COOKIE_BYTES, MAX_COOKIE_LINES};

/// Finds the ticket in a request.
///
/// Returns `Ok(None)` when the request carries no ticket (`missing`),
/// `Err` when what it carries cannot be a single ticket (for example two
/// tickets that disagree: [`MalformedReason::Ambiguous`]). The returned
/// bytes borrow from the request head, so extraction allocates nothing.
///
/// Implemented by [`TicketLocation`] (header, cookie, opt-in query string)
/// and by any `fn(&Parts) -> Result<Option<&[u8]>, Rejection>`. Write a
/// host extractor as a `fn` item: a closure cannot name the lifetime that
/// ties its result to its argument.
///
/// ```
/// use http::request::Parts;
/// use queuegate::layer::QueueGateLayer;
/// use queuegate::{MalformedReason, Rejection};
/// # use std::sync::Arc;
/// # use queuegate::{KeyRing, MemoryReplayStore, Policy, SystemClock, Verifier};
///
/// /// `Authorization: Queue <ticket>`.
/// fn from_authorization(parts: &Parts) -> Result<Option<&[u8]>, Rejection> {
///     let Some(value) = parts.headers.get(http::header::AUTHORIZATION) else {
///         return Ok(None);
///     };
///     match value.as_bytes().strip_prefix(b"Queue ") {
///         Some(ticket) => Ok(Some(ticket)),
///         None => Err(Rejection::Malformed { reason: MalformedReason::Encoding }),
///     }
/// }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let keys = Arc::new(KeyRing::new(1, &[7u8; 32])?);
/// # let verifier = Verifier::new(keys, Policy::new("q"), SystemClock, Arc::new(MemoryReplayStore::new()))?;
/// let layer = QueueGateLayer::builder(verifier)
///     .ticket_source(from_authorization)
///     .build()?;
/// # let _ = layer;
/// # Ok(()) }
/// ```
pub trait TicketSource: Send + Sync + 'static {
    /// The presented ticket text, if any.
    fn ticket<'a>(&self, parts: &'a Parts) -> Result<Option<&'a [u8]>, Rejection>;
}

impl<F> TicketSource for F
where
    F: for<'a> Fn(&'a Parts) -> Result<Option<&'a [u8]>, Rejection> + Send + Sync + 'static,
{
    fn ticket<'a>(&self, parts: &'a Parts) -> Result<Option<&'a [u8]>, Rejection> {
        self(parts)
    }
}

/// Finds what a ticket must be bound to (the binding material, for example
/// a session id). `None` means the request shows nothing to bind to, which
/// fails the binding check (`binding_mismatch`).
///
/// Implemented by [`SessionCookie`] (the default, cookie `qg_session`), by
/// [`HeaderBinding`], and by any `fn(&Parts) -> Option<Cow<[u8]>>`.
pub trait BindingSource: Send + Sync + 'static {
    /// The binding material of this request.
    fn binding<'a>(&self, parts: &'a Parts) -> Option<Cow<'a, [u8]>>;
}

impl<F> BindingSource for F
where
    F: for<'a> Fn(&'a Parts) -> Option<Cow<'a, [u8]>> + Send + Sync + 'static,
{
    fn binding<'a>(&self, parts: &'a Parts) -> Option<Cow<'a, [u8]>> {
        self(parts)
    }
}

/// Reads the client's claimed clock from a request.
///
/// Implemented by [`ClientTimeHeader`] (the default, header
/// `queue-client-time` in Unix epoch milliseconds) and by any
/// `Fn(&Parts) -> ClientTime`.
pub trait ClientTimeSource: Send + Sync + 'static {
    /// The client's claimed time. The default reads nothing
    /// ([`ClientTime::Absent`]).
    fn client_time(&self, parts: &Parts) -> ClientTime {
        let _ = parts;
        ClientTime::Absent
    }
}

impl<F> ClientTimeSource for F
where
    F: Fn(&Parts) -> ClientTime + Send + Sync + 'static,
{
    fn client_time(&self, parts: &Parts) -> ClientTime {
        self(parts)
    }
}

/// The ticket in a header (default `queue-ticket`), optionally a cookie,
/// and, only if the host opts in, a query-string parameter.
///
/// A ticket in a URL leaks through access logs, browser history and
/// `Referer`, so the query string is ignored by default: a request whose
/// only ticket is there is `missing`. An empty value counts as no ticket
/// (a cleared cookie). Two ticket headers, or tickets in two places that
/// disagree, are `malformed` (`ambiguous`).
#[derive(Debug, Clone)]
pub struct TicketLocation {
    header: Option<HeaderName>,
    cookie: Option<Box<str>>,
    query: Option<Box<str>>,
}

impl Default for TicketLocation {
    fn default() -> Self {
        Self {
            header: Some(HeaderName::from_static(DEFAULT_TICKET_HEADER)),
            cookie: None,
            query: None,
        }
    }
}

impl TicketLocation {
    /// The default: header `queue-ticket` only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the ticket from header `name` instead of `queue-ticket`.
    pub fn header(mut self, name: &str) -> Result<Self, ConfigError> {
        self.header = Some(header_name(name, "ticket header")?);
        Ok(self)
    }

    /// Does not read the ticket from any header.
    pub fn no_header(mut self) -> Self {
        self.header = None;
        self
    }

    /// Also reads the ticket from cookie `name`.
    pub fn cookie(mut self, name: &str) -> Result<Self, ConfigError> {
        self.cookie = Some(cookie_name(name, "ticket cookie")?);
        Ok(self)
    }

    /// Also reads the ticket from query parameter `name` (opt-in: tickets
    /// in URLs leak through logs and `Referer`). The value is taken as is,
    /// without percent-decoding (base64url needs none).
    pub fn query(mut self, name: &str) -> Result<Self, ConfigError> {
        if name.is_empty() || name.bytes().any(|b| matches!(b, b'&' | b'=' | b'#')) {
            return Err(ConfigError::Invalid {
                setting: "ticket query parameter",
                reason: "must be non-empty without '&', '=' or '#'",
            });
        }
        self.query = Some(name.into());
        Ok(self)
    }
}

impl TicketSource for TicketLocation {
    fn ticket<'a>(&self, parts: &'a Parts) -> Result<Option<&'a [u8]>, Rejection> {
        let mut found: Option<&'a [u8]> = None;
        let mut add = |value: &'a [u8]| -> Result<(), Rejection> {
            match found {
                // An empty value (a cleared cookie, a script sending an
                // unset variable) is no ticket: `missing`, not `malformed`.
                _ if value.is_empty() => Ok(()),
                Some(previous) if previous != value => Err(Rejection::Malformed {
                    reason: MalformedReason::Ambiguous,
                }),
                _ => {
                    found = Some(value);
                    Ok(())
                }
            }
        };
        if let Some(name) = &self.header {
            let mut values = parts.headers.get_all(name).iter();
            if let Some(first) = values.next() {
                if values.next().is_some() {
                    // Two ticket headers are ambiguous even when equal: a
                    // client sends exactly one.
                    return Err(Rejection::Malformed {
                        reason: MalformedReason::Ambiguous,
                    });
                }
                add(first.as_bytes())?;
            }
        }
        if let Some(name) = &self.cookie {
            match find_cookie(&parts.headers, name) {
                CookieLookup::Found(value) => add(value)?,
                CookieLookup::Absent => {}
                CookieLookup::Ambiguous => {
                    return Err(Rejection::Malformed {
                        reason: MalformedReason::Ambiguous,
                    })
                }
                CookieLookup::TooLarge => {
                    return Err(Rejection::Malformed {
                        reason: MalformedReason::Length,
                    })
                }
            }
        }
        if let (Some(name), Some(query)) = (&self.query, parts.uri.query()) {
            if let Some(value) = find_query(query.as_bytes(), name.as_bytes())? {
                add(value)?;
            }
        }
        Ok(found)
    }
}

/// The binding is the value of a cookie (default `qg_session`): the session
/// the client joined the queue with. Two cookies of that name that disagree,
/// an empty value, or a cookie header too large to scan, give no binding.
/// The cookie is read by [`find_cookie`](crate::cookie::find_cookie), the
/// same parser the room's endpoints use
/// ([`RoomSessions`](crate::room::http::RoomSessions)), so a session the
/// room recognises is the binding the layer checks, byte for byte.
#[derive(Debug, Clone)]
pub struct SessionCookie {
    name: Box<str>,
}

impl Default for SessionCookie {
    fn default() -> Self {
        Self {
            name: DEFAULT_SESSION_COOKIE.into(),
        }
    }
}

impl SessionCookie {
    /// Binds to cookie `name`.
    pub fn new(name: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            name: cookie_name(name, "binding cookie")?,
        })
    }
}

impl BindingSource for SessionCookie {
    fn binding<'a>(&self, parts: &'a Parts) -> Option<Cow<'a, [u8]>> {
        find_cookie(&parts.headers, &self.name)
            .value()
            .map(Cow::Borrowed)
    }
}

/// The binding is the value of a header (exactly one, non-empty).
#[derive(Debug, Clone)]
pub struct HeaderBinding {
    name: HeaderName,
}

impl HeaderBinding {
    /// Binds to header `name`.
    pub fn new(name: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            name: header_name(name, "binding header")?,
        })
    }
}

impl BindingSource for HeaderBinding {
    fn binding<'a>(&self, parts: &'a Parts) -> Option<Cow<'a, [u8]>> {
        let mut values = parts.headers.get_all(&self.name).iter();
        match (values.next(), values.next()) {
            (Some(v), None) if !v.is_empty() => Some(Cow::Borrowed(v.as_bytes())),
            _ => None,
        }
    }
}

/// The client's clock in a header (default `queue-client-time`), Unix epoch
/// milliseconds parsed by [`ClientTime::parse`]. Two such headers are
/// [`ClientTime::Invalid`].
#[derive(Debug, Clone)]
pub struct ClientTimeHeader {
    name: HeaderName,
}

impl Default for ClientTimeHeader {
    fn default() -> Self {
        Self {
            name: HeaderName::from_static(DEFAULT_CLIENT_TIME_HEADER),
        }
    }
}

impl ClientTimeHeader {
    /// Reads header `name`.
    pub fn new(name: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            name: header_name(name, "client time header")?,
        })
    }
}

impl ClientTimeSource for ClientTimeHeader {
    fn client_time(&self, parts: &Parts) -> ClientTime {
        let mut values = parts.headers.get_all(&self.name).iter();
        match (values.next(), values.next()) {
            (None, _) => ClientTime::Absent,
            (Some(v), None) => ClientTime::parse(v.as_bytes()),
            (Some(_), Some(_)) => ClientTime::Invalid,
        }
    }
}

/// The client's clock is never read: every request is [`ClientTime::Absent`].
impl ClientTimeSource for () {}

pub(crate) fn header_name(name: &str, setting: &'static str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| ConfigError::Invalid {
        setting,
        reason: "not a valid HTTP header name",
    })
}

/// Finds parameter `name` in a query string, in place. A query longer than
/// a few tickets is not scanned (the ticket is refused as `malformed`).
fn find_query<'a>(query: &'a [u8], name: &[u8]) -> Result<Option<&'a [u8]>, Rejection> {
    const MAX_QUERY: usize = 8 * ENCODED_LEN + 1024;
    if query.len() > MAX_QUERY {
        return Err(Rejection::Malformed {
            reason: MalformedReason::Length,
        });
    }
    let mut found: Option<&'a [u8]> = None;
    for pair in query.split(|&b| b == b'&') {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        if key != name {
            continue;
        }
        match found {
            Some(previous) if previous != value => {
                return Err(Rejection::Malformed {
                    reason: MalformedReason::Ambiguous,
                })
            }
            _ => found = Some(value),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::COOKIE;
    use http::Request;

    fn parts(build: impl FnOnce(http::request::Builder) -> http::request::Builder) -> Parts {
        build(Request::builder().uri("/book"))
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn malformed(reason: MalformedReason) -> Rejection {
        Rejection::Malformed { reason }
    }

    #[test]
    fn header_is_the_default_source() {
        let loc = TicketLocation::new();
        let p = parts(|b| b.header("queue-ticket", "abc"));
        assert_eq!(loc.ticket(&p).unwrap(), Some(&b"abc"[..]));
        assert_eq!(loc.ticket(&parts(|b| b)).unwrap(), None);
        let two = parts(|b| {
            b.header("queue-ticket", "abc")
                .header("queue-ticket", "abc")
        });
        assert_eq!(
            loc.ticket(&two).unwrap_err(),
            malformed(MalformedReason::Ambiguous)
        );
    }

    #[test]
    fn query_is_ignored_unless_opted_in() {
        let p = parts(|b| b.uri("/book?queue_ticket=abc&x=1"));
        assert_eq!(TicketLocation::new().ticket(&p).unwrap(), None);
        let loc = TicketLocation::new().query("queue_ticket").unwrap();
        assert_eq!(loc.ticket(&p).unwrap(), Some(&b"abc"[..]));
        let clash = parts(|b| {
            b.uri("/book?queue_ticket=abc")
                .header("queue-ticket", "xyz")
        });
        assert_eq!(
            loc.ticket(&clash).unwrap_err(),
            malformed(MalformedReason::Ambiguous)
        );
        let twice = parts(|b| b.uri("/book?queue_ticket=abc&queue_ticket=abd"));
        assert_eq!(
            loc.ticket(&twice).unwrap_err(),
            malformed(MalformedReason::Ambiguous)
        );
    }

    #[test]
    fn cookie_and_header_must_agree() {
        let loc = TicketLocation::new().cookie("qt").unwrap();
        let same = parts(|b| {
            b.header("queue-ticket", "abc")
                .header("cookie", "a=1; qt=abc")
        });
        assert_eq!(loc.ticket(&same).unwrap(), Some(&b"abc"[..]));
        let differ = parts(|b| b.header("queue-ticket", "abc").header("cookie", "qt=abd"));
        assert_eq!(
            loc.ticket(&differ).unwrap_err(),
            malformed(MalformedReason::Ambiguous)
        );
        let only_cookie = parts(|b| b.header("cookie", "x=y").header("cookie", "qt=\"abc\""));
        assert_eq!(loc.ticket(&only_cookie).unwrap(), Some(&b"abc"[..]));
        // A cleared cookie or an empty header is no ticket.
        let cleared = parts(|b| b.header("queue-ticket", "").header("cookie", "qt="));
        assert_eq!(loc.ticket(&cleared).unwrap(), None);
        let cleared = parts(|b| b.header("queue-ticket", "abc").header("cookie", "qt="));
        assert_eq!(loc.ticket(&cleared).unwrap(), Some(&b"abc"[..]));
    }

    #[test]
    fn cookie_scan_is_bounded() {
        let huge = format!("qg_session=s; {}", "a=b; ".repeat(10_000));
        let p = parts(|b| b.header("cookie", huge.as_str()));
        assert_eq!(SessionCookie::default().binding(&p), None);
        let loc = TicketLocation::new().no_header().cookie("qt").unwrap();
        assert_eq!(
            loc.ticket(&p).unwrap_err(),
            malformed(MalformedReason::Length)
        );
        let mut many = parts(|b| b);
        for _ in 0..=MAX_COOKIE_LINES {
            many.headers
                .append(COOKIE, http::HeaderValue::from_static("qg_session=s"));
        }
        assert_eq!(SessionCookie::default().binding(&many), None);
    }

    #[test]
    fn session_cookie_binding() {
        let b = SessionCookie::default();
        let p = parts(|r| r.header("cookie", " other=1 ;qg_session = s-42 ; z=9"));
        assert_eq!(b.binding(&p).as_deref(), Some(&b"s-42"[..]));
        let clash = parts(|r| r.header("cookie", "qg_session=a; qg_session=b"));
        assert_eq!(b.binding(&clash), None);
        let prefix = parts(|r| r.header("cookie", "xqg_session=a"));
        assert_eq!(b.binding(&prefix), None);
    }

    #[test]
    fn client_time_header() {
        let k = ClientTimeHeader::default();
        assert_eq!(k.client_time(&parts(|b| b)), ClientTime::Absent);
        let p = parts(|b| b.header("queue-client-time", "1700000000000"));
        assert_eq!(k.client_time(&p), ClientTime::Millis(1_700_000_000_000));
        let p = parts(|b| b.header("queue-client-time", "soon"));
        assert_eq!(k.client_time(&p), ClientTime::Invalid);
        let p = parts(|b| {
            b.header("queue-client-time", "1")
                .header("queue-client-time", "1")
        });
        assert_eq!(k.client_time(&p), ClientTime::Invalid);
    }

    #[test]
    fn bad_names_fail_at_setup() {
        assert!(TicketLocation::new().header("bad header").is_err());
        assert!(TicketLocation::new().cookie("a=b").is_err());
        assert!(TicketLocation::new().query("").is_err());
        assert!(SessionCookie::new("").is_err());
        assert!(ClientTimeHeader::new("x\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn extraction_never_panics_and_borrows_from_the_input(
            cookie in "(qt=|qg_session=|; |[ -~]){0,100}",
            query in "(qt=|&|[A-Za-z0-9_=%.~-]){0,100}",
            header in "[ -~]{0,300}",
        ) {
            let p = parts(|b| {
                b.uri(format!("/book?{query}").as_str())
                    .header("cookie", cookie.as_str())
                    .header("queue-ticket", header.as_str())
            });
            let loc = TicketLocation::new()
                .cookie("qt")
                .unwrap()
                .query("qt")
                .unwrap();
            let within = |v: &[u8]| {
                let raw = [
                    p.headers["cookie"].as_bytes(),
                    p.headers["queue-ticket"].as_bytes(),
                    p.uri.query().unwrap_or("").as_bytes(),
                ];
                raw.iter().any(|r| {
                    let (start, end) = (r.as_ptr() as usize, r.as_ptr() as usize + r.len());
                    let at = v.as_ptr() as usize;
                    v.is_empty() || (at >= start && at + v.len() <= end)
                })
            };
            if let Ok(Some(t)) = loc.ticket(&p) {
                proptest::prop_assert!(within(t));
            }
            if let Some(b) = SessionCookie::default().binding(&p) {
                proptest::prop_assert!(matches!(b, Cow::Borrowed(_)));
                proptest::prop_assert!(within(&b));
            }
        }
    }
}
