//! The one cookie parser: the layer's [`SessionCookie`] binding, its
//! ticket-in-a-cookie source and the room's session endpoints
//! ([`RoomSessions`]) all read cookies through [`find_cookie`], so a cookie
//! header means the same thing to every part of the crate.
//!
//! [`SessionCookie`]: crate::layer::SessionCookie
//! [`RoomSessions`]: crate::room::http::RoomSessions
//!
//! # The rule
//!
//! The `Cookie` request header is read the way browsers write it and the way
//! RFC 6265 §5.2 (and RFC 6265bis) tells a user agent to split a
//! name-value pair, being lenient where servers and proxies differ:
//!
//! - Every `Cookie` header line is read (HTTP/2 may send one line per
//!   cookie), in order; each is split on `;`.
//! - A pair is split at its **first** `=`; a pair without `=` is skipped
//!   (RFC 6265bis would read it as a nameless cookie, which no name matches).
//! - Spaces and tabs around the name and around the value are trimmed, so
//!   `qg_session =ID`, `qg_session= ID` and `qg_session=ID` are the same
//!   cookie. Whitespace inside a value is kept (and makes it a different
//!   value).
//! - A value in double quotes (RFC 6265 `cookie-value` allows `DQUOTE
//!   *cookie-octet DQUOTE`) is read without the quotes.
//! - Names compare exactly, bytes and case (`QG_SESSION` is another cookie).
//! - The same name twice with the **same** value is that value (a browser
//!   sends both when a cookie was set for two paths with one value). The same
//!   name with **different** values is [`CookieLookup::Ambiguous`]: nobody
//!   can tell which one the server set, so neither is used. A cookie set by
//!   a sibling subdomain (cookie tossing) can make a session ambiguous;
//!   a host whose subdomains are not all its own names the cookie with the
//!   `__Host-` prefix, which browsers only accept from the host itself.
//! - An empty value is returned as found; the readers of a session or a
//!   ticket treat it as no cookie (a cleared cookie).
//! - The work is bounded: headers beyond [`MAX_COOKIE_BYTES`] in all or
//!   [`MAX_COOKIE_LINES`] lines are [`CookieLookup::TooLarge`] before a byte
//!   is parsed; nothing is allocated.

use http::header::COOKIE;
use http::HeaderMap;

use crate::error::ConfigError;

/// The most bytes of `Cookie` header values scanned per request, over every
/// `Cookie` header line. A request with more is refused as `malformed`
/// when the ticket is looked for in a cookie (and has no binding when the
/// binding is): real cookie headers stay far below this, and scanning a
/// megabyte per request is an amplification an attacker could use.
pub const MAX_COOKIE_BYTES: usize = 16 * 1024;
/// The most `Cookie` header lines read per request (HTTP/2 may split the
/// cookies of one request into several lines).
pub const MAX_COOKIE_LINES: usize = 64;

/// What [`find_cookie`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieLookup<'a> {
    /// No cookie of that name.
    Absent,
    /// Exactly one value (possibly sent more than once), borrowed from the
    /// header, without surrounding whitespace or quotes. May be empty.
    Found(&'a [u8]),
    /// The cookie appears with different values.
    Ambiguous,
    /// The cookie headers are larger than [`MAX_COOKIE_BYTES`] or span more
    /// than [`MAX_COOKIE_LINES`] lines.
    TooLarge,
}

impl<'a> CookieLookup<'a> {
    /// The value when exactly one non-empty value was found.
    pub fn value(self) -> Option<&'a [u8]> {
        match self {
            Self::Found(v) if !v.is_empty() => Some(v),
            _ => None,
        }
    }
}

/// Finds cookie `name` in every `Cookie` header of `headers`, in place, by
/// the rule in the [module docs](self).
///
/// ```
/// use http::HeaderMap;
/// use queuegate::cookie::{find_cookie, CookieLookup};
///
/// let mut h = HeaderMap::new();
/// h.insert("cookie", "theme=dark; qg_session = abc ".parse().unwrap());
/// assert_eq!(find_cookie(&h, "qg_session"), CookieLookup::Found(b"abc"));
/// h.append("cookie", "qg_session=xyz".parse().unwrap());
/// assert_eq!(find_cookie(&h, "qg_session"), CookieLookup::Ambiguous);
/// ```
pub fn find_cookie<'a>(headers: &'a HeaderMap, name: &str) -> CookieLookup<'a> {
    let name = name.as_bytes();
    let mut total = 0usize;
    for (line, value) in headers.get_all(COOKIE).iter().enumerate() {
        total = total.saturating_add(value.len());
        if line >= MAX_COOKIE_LINES || total > MAX_COOKIE_BYTES {
            return CookieLookup::TooLarge;
        }
    }
    let mut found: Option<&'a [u8]> = None;
    for value in headers.get_all(COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if trim_ows(&pair[..eq]) != name {
                continue;
            }
            let mut v = trim_ows(&pair[eq + 1..]);
            if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
                v = &v[1..v.len() - 1];
            }
            match found {
                Some(previous) if previous != v => return CookieLookup::Ambiguous,
                _ => found = Some(v),
            }
        }
    }
    found.map_or(CookieLookup::Absent, CookieLookup::Found)
}

/// Checks that `name` can be a cookie name (an RFC 7230 token, as RFC 6265
/// requires), for settings that name a cookie.
pub(crate) fn cookie_name(name: &str, setting: &'static str) -> Result<Box<str>, ConfigError> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(ConfigError::Invalid {
            setting,
            reason: "not a valid cookie name (RFC 6265 token)",
        });
    }
    Ok(name.into())
}

/// `s` without leading and trailing spaces and tabs.
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn lookup(lines: &[&str]) -> CookieLookup<'static> {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(COOKIE, HeaderValue::from_str(l).unwrap());
        }
        // Leak the map so the borrowed answer can be returned: tests only.
        let h: &'static HeaderMap = Box::leak(Box::new(h));
        find_cookie(h, "qg_session")
    }

    #[test]
    fn whitespace_quotes_and_order() {
        use CookieLookup::*;
        for (lines, want) in [
            (&["qg_session=abc"][..], Found(&b"abc"[..])),
            (&["qg_session =abc"], Found(b"abc")),
            (&["qg_session= abc "], Found(b"abc")),
            (&["qg_session\t=\tabc\t"], Found(b"abc")),
            (&[" a=1 ;qg_session=abc;b=2"], Found(b"abc")),
            (&["qg_session=\"abc\""], Found(b"abc")),
            (&["qg_session=a=b"], Found(b"a=b")),
            (&["qg_session=a b"], Found(b"a b")),
            (&["qg_session="], Found(b"")),
            (&["a=1", "qg_session=abc"], Found(b"abc")),
            (&["qg_session=abc; qg_session=abc"], Found(b"abc")),
            (&["qg_session=abc", "qg_session=abc"], Found(b"abc")),
            (&["qg_session=abc; qg_session=abd"], Ambiguous),
            (&["qg_session=; qg_session=abc"], Ambiguous),
            (&["qg_session=abc", "qg_session=\"abd\""], Ambiguous),
            (&["QG_SESSION=abc"], Absent),
            (&["xqg_session=abc"], Absent),
            (&["qg_sessionx=abc"], Absent),
            (&["qg_session"], Absent),
            (&["qg_session:abc"], Absent),
            (&[], Absent),
        ] {
            assert_eq!(lookup(lines), want, "{lines:?}");
        }
        assert_eq!(lookup(&["qg_session="]).value(), None);
        assert_eq!(lookup(&["qg_session=x"]).value(), Some(&b"x"[..]));
    }

    #[test]
    fn the_scan_is_bounded() {
        let huge = format!("qg_session=s; {}", "a=b; ".repeat(10_000));
        assert_eq!(lookup(&[huge.as_str()]), CookieLookup::TooLarge);
        let many = vec!["qg_session=s"; MAX_COOKIE_LINES + 1];
        assert_eq!(lookup(&many), CookieLookup::TooLarge);
        let enough = vec!["qg_session=s"; MAX_COOKIE_LINES];
        assert_eq!(lookup(&enough), CookieLookup::Found(b"s"));
    }

    #[test]
    fn names_are_tokens() {
        assert!(cookie_name("qg_session", "x").is_ok());
        assert!(cookie_name("__Host-qg_session", "x").is_ok());
        for bad in ["", "a=b", "a b", "a;b", "é"] {
            assert!(cookie_name(bad, "x").is_err(), "{bad:?}");
        }
    }
}
