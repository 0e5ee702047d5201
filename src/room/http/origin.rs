//! [`CrossSiteGuard`]: refuses state-changing requests that a browser sends
//! on behalf of another site.
//!
//! The rule is on [`CrossSiteGuard`].

use std::fmt;

use http::header::{HeaderName, HOST, ORIGIN};
use http::{HeaderMap, Uri};

use crate::error::ConfigError;

/// The `Sec-Fetch-Site` request header.
pub const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Refuses cross-site browser requests to state-changing room endpoints
/// (join, heartbeat, leave).
///
/// A page on any site can make a visitor's browser post a form to the room
/// (`<form method=post action=https://booking.example/queue/join>`). The
/// `SameSite=Strict` session cookie stays behind, so the room sees a new
/// visitor, and the session cookie it would set in its answer replaces the
/// visitor's own: their next heartbeat is `binding_mismatch` and their place
/// is lost. Browsers say where a request comes from, in a header the page
/// cannot forge, and the guard reads it:
///
/// 1. `Sec-Fetch-Site` (every current browser): `same-origin` and `none` (the
///    person typed the address or used a bookmark) pass; `same-site`,
///    `cross-site` and anything else are refused unless the request's
///    `Origin` is a trusted origin. `same-site` is refused too: a sibling
///    subdomain (`blog.example` next to `booking.example`) is another
///    origin, and may be run by someone else.
/// 2. Without `Sec-Fetch-Site` (older browsers), `Origin` decides: it must be
///    the request's own origin — the scheme the host declares (a server
///    behind a TLS-terminating proxy cannot see it, so it is configured) and
///    the `Host` header (or the HTTP/2 authority), default ports ignored — or
///    a trusted origin. `Origin: null` (sandboxed frames, privacy redirects)
///    is never the room's own page.
/// 3. With neither header the request is not from a browser acting for a
///    page (curl, a native app, a server), and cross-site forgery needs a
///    browser: it passes. Other defences (binding, the join hook) apply.
///
/// This is the rule of Go's `net/http.CrossOriginProtection` and of the
/// Fetch Metadata guidance (web.dev "Protect your resources from web
/// attacks with Fetch Metadata"), with the scheme made explicit. A header
/// given twice is refused: a browser sends each once. The check reads two
/// headers and allocates nothing.
///
/// ```
/// use http::{HeaderMap, Uri};
/// use queuegate::room::http::CrossSiteGuard;
///
/// # fn main() -> Result<(), queuegate::ConfigError> {
/// let guard = CrossSiteGuard::new("https")?.trusted_origin("https://tickets.example")?;
/// let uri: Uri = "/queue/join".parse().unwrap();
/// let mut h = HeaderMap::new();
/// h.insert("host", "booking.example".parse().unwrap());
/// h.insert("origin", "https://booking.example".parse().unwrap());
/// assert!(guard.check(&h, &uri).is_ok());
/// h.insert("sec-fetch-site", "cross-site".parse().unwrap());
/// assert!(guard.check(&h, &uri).is_err());
/// h.insert("origin", "https://tickets.example".parse().unwrap());
/// assert!(guard.check(&h, &uri).is_ok());
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct CrossSiteGuard {
    scheme: &'static str,
    trusted: Vec<OwnedOrigin>,
}

impl fmt::Debug for CrossSiteGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrossSiteGuard")
            .field("scheme", &self.scheme)
            .field("trusted", &self.trusted)
            .finish()
    }
}

impl CrossSiteGuard {
    /// A guard for a site served under `scheme` (`"https"` or `"http"`):
    /// the scheme of the room's public address, which the request cannot
    /// show when TLS ends at a proxy in front.
    pub fn new(scheme: &str) -> Result<Self, ConfigError> {
        let scheme = if scheme.eq_ignore_ascii_case("https") {
            "https"
        } else if scheme.eq_ignore_ascii_case("http") {
            "http"
        } else {
            return Err(ConfigError::Invalid {
                setting: "cross-site guard scheme",
                reason: "must be \"https\" or \"http\"",
            });
        };
        Ok(Self {
            scheme,
            trusted: Vec::new(),
        })
    }

    /// The scheme the room is served under.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// Also lets requests from `origin` through (for example the host's
    /// main site, which embeds a "join the queue" button). `origin` is
    /// `scheme://host` or `scheme://host:port`, with no path (not even
    /// `/`), no user and no query, as browsers send it; case and default
    /// ports do not matter. Anything else fails here, at setup.
    ///
    /// Trust a site only to *send people to* the room, and prefer a link
    /// (a navigation to the room's page) to a form that posts to the join:
    /// a request from another site never carries a `SameSite=Strict`
    /// session cookie, so a join posted from a trusted origin looks like a
    /// first visit, and the new session it is given replaces the one the
    /// person may already hold.
    pub fn trusted_origin(mut self, origin: &str) -> Result<Self, ConfigError> {
        let parsed = parse_origin(origin.as_bytes()).ok_or(ConfigError::Invalid {
            setting: "trusted origin",
            reason: "must be scheme://host or scheme://host:port, with no path (no trailing /)",
        })?;
        let owned = OwnedOrigin {
            scheme: String::from_utf8_lossy(parsed.scheme)
                .to_ascii_lowercase()
                .into(),
            host: String::from_utf8_lossy(parsed.host)
                .to_ascii_lowercase()
                .into(),
            port: parsed.port,
        };
        if !self.trusted.contains(&owned) {
            self.trusted.push(owned);
        }
        Ok(self)
    }

    /// Whether a request with these headers (and this URI, for the HTTP/2
    /// authority) may change state, by the rule above.
    pub fn check(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), CrossSite> {
        let origin = match single(headers, &ORIGIN) {
            One::Absent => None,
            One::Value(v) => Some(v),
            One::Twice => return Err(CrossSite::new(CrossSiteReason::Ambiguous)),
        };
        match single(headers, &SEC_FETCH_SITE) {
            One::Value(b"same-origin" | b"none") => Ok(()),
            One::Value(site) => {
                if origin.is_some_and(|o| self.is_trusted(o)) {
                    return Ok(());
                }
                Err(CrossSite::new(match site {
                    b"same-site" => CrossSiteReason::SameSite,
                    b"cross-site" => CrossSiteReason::CrossSite,
                    _ => CrossSiteReason::UnknownFetchSite,
                }))
            }
            One::Twice => Err(CrossSite::new(CrossSiteReason::Ambiguous)),
            One::Absent => match origin {
                None => Ok(()),
                Some(o) if self.is_own(o, headers, uri) || self.is_trusted(o) => Ok(()),
                Some(_) => Err(CrossSite::new(CrossSiteReason::ForeignOrigin)),
            },
        }
    }

    fn is_trusted(&self, origin: &[u8]) -> bool {
        let Some(o) = parse_origin(origin) else {
            return false;
        };
        self.trusted.iter().any(|t| {
            o.scheme.eq_ignore_ascii_case(t.scheme.as_bytes())
                && o.host.eq_ignore_ascii_case(t.host.as_bytes())
                && o.port == t.port
        })
    }

    /// Whether `origin` is the request's own: the declared scheme and the
    /// `Host` header (or the URI's authority when there is no `Host`).
    fn is_own(&self, origin: &[u8], headers: &HeaderMap, uri: &Uri) -> bool {
        let Some(o) = parse_origin(origin) else {
            return false;
        };
        let authority = match single(headers, &HOST) {
            One::Value(h) => h,
            One::Absent => match uri.authority() {
                Some(a) => a.as_str().as_bytes(),
                None => return false,
            },
            One::Twice => return false,
        };
        let Some((host, port)) = split_authority(authority, default_port(self.scheme.as_bytes()))
        else {
            return false;
        };
        o.scheme.eq_ignore_ascii_case(self.scheme.as_bytes())
            && o.host.eq_ignore_ascii_case(host)
            && o.port == port
    }
}

/// Why a request was taken for a cross-site one.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossSiteReason {
    /// `Sec-Fetch-Site: cross-site` from an origin not trusted.
    CrossSite,
    /// `Sec-Fetch-Site: same-site` (a sibling subdomain) not trusted.
    SameSite,
    /// A `Sec-Fetch-Site` value this guard does not know.
    UnknownFetchSite,
    /// No `Sec-Fetch-Site`, and an `Origin` that is neither the request's
    /// own nor trusted (`null` included).
    ForeignOrigin,
    /// `Sec-Fetch-Site` or `Origin` sent twice.
    Ambiguous,
}

/// A cross-site request to a state-changing endpoint, refused: code
/// `cross_site`, status 403. Nothing about the request is echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this request came from another site, not from the waiting room's own page: \
     open the waiting room directly to join the queue"
)]
pub struct CrossSite {
    reason: CrossSiteReason,
}

impl CrossSite {
    fn new(reason: CrossSiteReason) -> Self {
        Self { reason }
    }

    /// What gave the request away.
    pub fn reason(&self) -> CrossSiteReason {
        self.reason
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnedOrigin {
    scheme: Box<str>,
    host: Box<str>,
    port: u16,
}

enum One<'a> {
    Absent,
    Value(&'a [u8]),
    Twice,
}

fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> One<'a> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => One::Absent,
        (Some(v), None) => One::Value(v.as_bytes()),
        (Some(_), Some(_)) => One::Twice,
    }
}

/// An origin's parts, borrowed: the port is the explicit one or the
/// scheme's default (0 for a scheme without one and no port given).
struct Origin<'a> {
    scheme: &'a [u8],
    host: &'a [u8],
    port: u16,
}

fn default_port(scheme: &[u8]) -> u16 {
    if scheme.eq_ignore_ascii_case(b"https") {
        443
    } else if scheme.eq_ignore_ascii_case(b"http") {
        80
    } else {
        0
    }
}

/// Parses `scheme://host[:port]` (RFC 6454 serialisation), with nothing
/// after the authority.
fn parse_origin(text: &[u8]) -> Option<Origin<'_>> {
    let sep = text.windows(3).position(|w| w == b"://")?;
    let (scheme, authority) = (&text[..sep], &text[sep + 3..]);
    let scheme_char = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.');
    if scheme.is_empty() || !scheme[0].is_ascii_alphabetic() || !scheme.iter().all(scheme_char) {
        return None;
    }
    let (host, port) = split_authority(authority, default_port(scheme))?;
    Some(Origin { scheme, host, port })
}

/// Splits `host[:port]` (the host possibly an `[IPv6]` literal) into the
/// host and the port (`default` when none is given). `None` for anything
/// that is not a plain authority: empty, a user part, a path, a bad port.
fn split_authority(authority: &[u8], default: u16) -> Option<(&[u8], u16)> {
    let host_char = |b: &u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
            )
    };
    let (host, rest) = if authority.first() == Some(&b'[') {
        let close = authority.iter().position(|&b| b == b']')?;
        let inner = &authority[1..close];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.')
        {
            return None;
        }
        (&authority[..=close], &authority[close + 1..])
    } else {
        let colon = authority.iter().position(|&b| b == b':');
        let (h, r) = authority.split_at(colon.unwrap_or(authority.len()));
        if h.is_empty() || !h.iter().all(host_char) {
            return None;
        }
        (h, r)
    };
    let port = match rest {
        [] => default,
        [b':', digits @ ..] if !digits.is_empty() && digits.len() <= 5 => {
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let n: u32 = digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'));
            u16::try_from(n).ok()?
        }
        _ => return None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn check(guard: &CrossSiteGuard, pairs: &[(&str, &str)]) -> Result<(), CrossSiteReason> {
        let uri: Uri = "/queue/join".parse().unwrap();
        guard.check(&headers(pairs), &uri).map_err(|e| e.reason())
    }

    #[test]
    fn fetch_metadata_decides_first() {
        let g = CrossSiteGuard::new("https").unwrap();
        let host = ("host", "booking.example");
        assert_eq!(
            check(&g, &[host, ("sec-fetch-site", "same-origin")]),
            Ok(())
        );
        assert_eq!(check(&g, &[host, ("sec-fetch-site", "none")]), Ok(()));
        // A browser's own word beats an Origin that looks like ours.
        for (site, reason) in [
            ("cross-site", CrossSiteReason::CrossSite),
            ("same-site", CrossSiteReason::SameSite),
            ("Same-Origin", CrossSiteReason::UnknownFetchSite),
            ("", CrossSiteReason::UnknownFetchSite),
        ] {
            let got = check(
                &g,
                &[
                    host,
                    ("sec-fetch-site", site),
                    ("origin", "https://booking.example"),
                ],
            );
            assert_eq!(got, Err(reason), "{site:?}");
        }
        let twice = [
            host,
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert_eq!(check(&g, &twice), Err(CrossSiteReason::Ambiguous));
    }

    #[test]
    fn origin_is_the_fallback_and_compared_with_the_declared_scheme_and_host() {
        let g = CrossSiteGuard::new("https").unwrap();
        let own = |host: &str, origin: &str| check(&g, &[("host", host), ("origin", origin)]);
        assert_eq!(own("booking.example", "https://booking.example"), Ok(()));
        assert_eq!(
            own("Booking.Example:443", "https://booking.example"),
            Ok(())
        );
        assert_eq!(
            own("booking.example", "HTTPS://BOOKING.EXAMPLE:443"),
            Ok(())
        );
        assert_eq!(own("[::1]:8443", "https://[::1]:8443"), Ok(()));
        for (host, origin) in [
            ("booking.example", "http://booking.example"),
            ("booking.example", "https://booking.example:8443"),
            ("booking.example", "https://evil.example"),
            ("booking.example", "https://booking.example.evil"),
            ("booking.example", "https://booking.example/"),
            ("booking.example", "null"),
            ("booking.example", ""),
            ("booking.example", "https://user@booking.example"),
            ("booking.example:x", "https://booking.example"),
        ] {
            assert_eq!(
                own(host, origin),
                Err(CrossSiteReason::ForeignOrigin),
                "{host} {origin}"
            );
        }
        // No Host: the HTTP/2 authority.
        let h = headers(&[("origin", "https://booking.example")]);
        let uri: Uri = "https://booking.example/queue/join".parse().unwrap();
        assert!(g.check(&h, &uri).is_ok());
        let uri: Uri = "/queue/join".parse().unwrap();
        assert!(g.check(&h, &uri).is_err());
        // Neither header: not a browser acting for a page.
        assert_eq!(check(&g, &[("host", "booking.example")]), Ok(()));
        assert_eq!(check(&g, &[]), Ok(()));
    }

    #[test]
    fn trusted_origins() {
        let g = CrossSiteGuard::new("http")
            .unwrap()
            .trusted_origin("https://WWW.example.org:443")
            .unwrap()
            .trusted_origin("http://localhost:8080")
            .unwrap();
        for site in ["cross-site", "same-site"] {
            for origin in ["https://www.example.org", "http://localhost:8080"] {
                let got = check(&g, &[("sec-fetch-site", site), ("origin", origin)]);
                assert_eq!(got, Ok(()), "{site} {origin}");
            }
            for origin in ["http://www.example.org", "http://localhost:8081", "null"] {
                let got = check(&g, &[("sec-fetch-site", site), ("origin", origin)]);
                assert!(got.is_err(), "{site} {origin}");
            }
        }
        assert_eq!(
            check(
                &g,
                &[
                    ("host", "booking.example"),
                    ("origin", "http://localhost:8080")
                ]
            ),
            Ok(())
        );
    }

    #[test]
    fn bad_settings_fail_at_setup() {
        assert!(CrossSiteGuard::new("ftp").is_err());
        assert!(CrossSiteGuard::new("HTTPS").is_ok());
        let g = CrossSiteGuard::new("https").unwrap();
        for bad in [
            "",
            "null",
            "example.org",
            "https://",
            "https://example.org/",
            "https://example.org/path",
            "https://example.org?q",
            "https://user@example.org",
            "https://example.org:99999",
            "https://example.org:",
            "://example.org",
            "https://exa mple.org",
        ] {
            assert!(g.clone().trusted_origin(bad).is_err(), "{bad:?}");
        }
    }
}
