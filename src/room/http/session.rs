//! Sessions for the room's endpoints: server-issued, signed session ids in
//! a cookie that a cross-site request can neither use nor replace.
//!
//! A waiting-room ticket is bound to the client's session id (the layer's
//! [`SessionCookie`](crate::layer::SessionCookie) binding), so the session
//! cookie is what a person's place hangs on. Three rules keep it:
//!
//! 1. **Cross-site requests are refused** before anything else
//!    ([`CrossSiteGuard`]): a form on another site posting to the join
//!    arrives without the `SameSite=Strict` cookie, and answering it with a
//!    new session would replace the visitor's cookie and end their place.
//!    Refused with `cross_site` (403) and no cookie.
//! 2. **A valid session cookie is never replaced.** [`RoomSessions::join`]
//!    sets a cookie only when the request carries no valid session; a
//!    refused request (cross-site, or two different session cookies) sets
//!    none.
//! 3. **Session ids are issued by the server and signed.** A client cannot
//!    choose its own: a made-up or edited id is not a session, and the join
//!    answers it like a first visit, with a new signed id. (Signing stops
//!    forged ids; how many places one client may hold is the join hook's
//!    business, see [`PerAddressLimit`](super::PerAddressLimit).)
//!
//! # The session id
//!
//! 33 bytes, written as 44 characters of base64url without padding (valid
//! in a cookie as is, and short enough that the layer's binding check stays
//! in one SHA-256 block beside the ticket MAC):
//!
//! ```text
//! key_id (1) || random (16, from the OS) || tag (16)
//! tag = HMAC-SHA256(K_session[key_id], "queuegate/1 session:" || key_id || random)[0..16]
//! K_session = HMAC-SHA256(secret, "queuegate/1 key:session")
//! ```
//!
//! Decoding is strict (one encoding per id), the tag is compared in
//! constant time, and the binding material of the tickets is the id's text.
//!
//! # Which key signs sessions
//!
//! Not the ticket keys. Ticket keys rotate on a schedule measured in ticket
//! lifetimes (SPEC §3: a retired key's tickets are `unknown_key`), while a
//! session cookie lives as long as the browser session, and the place in
//! the queue hangs on it: a session that stopped verifying after a ticket
//! key was retired would make the next join hand out a new session — a new
//! place at the back — to someone still in line. So sessions have their own
//! small key ring, [`SessionKeys`], derived under its own purpose label from
//! a secret that changes rarely. It rotates the same way as the ticket
//! ring, on its own schedule: add the new secret verify-only everywhere, make
//! it sign, and retire the old one only when no browser session can still
//! hold an id it signed. A host may derive it from the same secret as the
//! ticket keys (the purpose label keeps the keys apart); the demo does.

use std::fmt;

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode, Uri};
use subtle::ConstantTimeEq;

use super::origin::{CrossSite, CrossSiteGuard};
use crate::cookie::{cookie_name, find_cookie, CookieLookup};
use crate::error::ConfigError;
use crate::keys::{MacKey, MIN_KEY_LEN};
use crate::layer::DEFAULT_SESSION_COOKIE;
use crate::layer::{problem_response, PROBLEM_JSON, PROBLEM_TYPE_PREFIX};
use crate::rejection::{MalformedReason, Rejection};

/// Length of a session id's text: 44 base64url characters (33 bytes).
pub const SESSION_ID_LEN: usize = 44;
const RAW_LEN: usize = 33;
const RANDOM_LEN: usize = 16;
const TAG_LEN: usize = 16;
const LABEL: &[u8] = b"queuegate/1 session:";

/// The keys that sign and verify session ids: one signs, others only
/// verify (rotation). `Debug` prints key ids only.
///
/// ```
/// use queuegate::room::http::SessionKeys;
///
/// # fn main() -> Result<(), queuegate::ConfigError> {
/// let keys = SessionKeys::new(1, &[9u8; 32])?;
/// let id = keys.mint();
/// assert_eq!(id.len(), 44);
/// assert!(keys.verify(id.as_bytes()));
/// assert!(!keys.verify(b"00112233445566778899aabbccddeeff"));
/// // Rotation: the new key signs, the old one still verifies.
/// let rotated = SessionKeys::new(2, &[10u8; 32])?.verify_only_key(1, &[9u8; 32])?;
/// assert!(rotated.verify(id.as_bytes()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SessionKeys {
    keys: Vec<(u8, MacKey)>,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("signing_key_id", &self.keys[0].0)
            .field(
                "key_ids",
                &self.keys.iter().map(|k| k.0).collect::<Vec<_>>(),
            )
            .field("secrets", &"REDACTED")
            .finish()
    }
}

fn session_key(key_id: u8, secret: &[u8]) -> Result<MacKey, ConfigError> {
    if secret.len() < MIN_KEY_LEN {
        return Err(ConfigError::KeyTooShort {
            key_id,
            len: secret.len(),
        });
    }
    let derived = MacKey::new(secret).tag(&[b"queuegate/1 key:", b"session"]);
    Ok(MacKey::new(&derived))
}

impl SessionKeys {
    /// Keys with one signing key, `secret` (at least 32 bytes) under id
    /// `key_id`.
    pub fn new(key_id: u8, secret: &[u8]) -> Result<Self, ConfigError> {
        Ok(Self {
            keys: vec![(key_id, session_key(key_id, secret)?)],
        })
    }

    /// Adds a key that verifies ids but signs none (the previous key while
    /// it is rotated out, or the next one before it signs).
    pub fn verify_only_key(mut self, key_id: u8, secret: &[u8]) -> Result<Self, ConfigError> {
        if self.keys.iter().any(|k| k.0 == key_id) {
            return Err(ConfigError::DuplicateKeyId(key_id));
        }
        self.keys.push((key_id, session_key(key_id, secret)?));
        Ok(self)
    }

    /// The id of the key that signs.
    pub fn signing_key_id(&self) -> u8 {
        self.keys[0].0
    }

    /// A new session id: 16 random bytes from the operating system, signed.
    pub fn mint(&self) -> String {
        let mut raw = [0u8; RAW_LEN];
        let (key_id, key) = &self.keys[0];
        raw[0] = *key_id;
        getrandom::getrandom(&mut raw[1..1 + RANDOM_LEN])
            .expect("the operating system's random source failed");
        let tag = key.tag(&[LABEL, &raw[..1 + RANDOM_LEN]]);
        raw[1 + RANDOM_LEN..].copy_from_slice(&tag[..TAG_LEN]);
        encode(&raw)
    }

    /// Whether `text` is a session id signed by one of these keys: exactly
    /// [`SESSION_ID_LEN`] canonical base64url characters, a known key id and
    /// a matching tag (compared in constant time).
    pub fn verify(&self, text: &[u8]) -> bool {
        let Some(raw) = decode(text) else {
            return false;
        };
        let Some((_, key)) = self.keys.iter().find(|k| k.0 == raw[0]) else {
            return false;
        };
        let tag = key.tag(&[LABEL, &raw[..1 + RANDOM_LEN]]);
        bool::from(tag[..TAG_LEN].ct_eq(&raw[1 + RANDOM_LEN..]))
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode(raw: &[u8; RAW_LEN]) -> String {
    let mut text = String::with_capacity(SESSION_ID_LEN);
    for three in raw.chunks_exact(3) {
        let n = u32::from(three[0]) << 16 | u32::from(three[1]) << 8 | u32::from(three[2]);
        for i in 0..4 {
            text.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize]));
        }
    }
    text
}

/// Strict base64url: exactly 44 characters of the alphabet (33 bytes need
/// no padding and leave no spare bits, so each id has one encoding).
fn decode(text: &[u8]) -> Option<[u8; RAW_LEN]> {
    if text.len() != SESSION_ID_LEN {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        }))
    };
    let mut raw = [0u8; RAW_LEN];
    for (four, three) in text.chunks_exact(4).zip(raw.chunks_exact_mut(3)) {
        let mut n = 0u32;
        for &c in four {
            n = n << 6 | value(c)?;
        }
        three.copy_from_slice(&n.to_be_bytes()[1..]);
    }
    Some(raw)
}

/// The session side of the room's state-changing endpoints: the cross-site
/// check, the session cookie read by the crate's one parser
/// ([`find_cookie`]), signed ids, and the `Set-Cookie` for a new session.
///
/// ```
/// use http::{HeaderMap, Uri};
/// use queuegate::room::http::{CrossSiteGuard, RoomSessions, SessionKeys};
///
/// # fn main() -> Result<(), queuegate::ConfigError> {
/// let sessions = RoomSessions::new(SessionKeys::new(1, &[9u8; 32])?, CrossSiteGuard::new("https")?);
/// let uri: Uri = "/queue/join".parse().unwrap();
///
/// // A first visit: a new signed session and its cookie.
/// let first = sessions.join(&HeaderMap::new(), &uri).unwrap();
/// let cookie = first.set_cookie().unwrap().to_str().unwrap().to_owned();
/// assert!(cookie.ends_with("; HttpOnly; SameSite=Strict; Path=/; Secure"));
///
/// // Back with it: the same session, and no cookie that could replace it.
/// let mut h = HeaderMap::new();
/// h.insert("cookie", format!("qg_session={}", first.id()).parse().unwrap());
/// let again = sessions.join(&h, &uri).unwrap();
/// assert_eq!((again.id(), again.set_cookie()), (first.id(), None));
///
/// // A form on another site: refused, no cookie.
/// h.insert("sec-fetch-site", "cross-site".parse().unwrap());
/// assert_eq!(sessions.join(&h, &uri).unwrap_err().code(), "cross_site");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RoomSessions {
    keys: SessionKeys,
    guard: CrossSiteGuard,
    cookie: Box<str>,
    /// Extra cookie attributes (`; Path=...`, `; Domain=...`), written once.
    attributes: Box<str>,
}

impl fmt::Debug for RoomSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomSessions")
            .field("keys", &self.keys)
            .field("guard", &self.guard)
            .field("cookie", &self.cookie)
            .field("attributes", &self.attributes)
            .finish()
    }
}

impl RoomSessions {
    /// Sessions signed by `keys`, in cookie `qg_session` (the layer's
    /// default binding), with state-changing requests checked by `guard`.
    /// The cookie is `HttpOnly; SameSite=Strict; Path=/`, plus `Secure`
    /// when the guard's scheme is `https`.
    pub fn new(keys: SessionKeys, guard: CrossSiteGuard) -> Self {
        Self {
            keys,
            guard,
            cookie: DEFAULT_SESSION_COOKIE.into(),
            attributes: "; Path=/".into(),
        }
    }

    /// Sets the cookie's `Path` (default `/`) and `Domain` (default none:
    /// this host only, which is what a `__Host-` name requires). A
    /// `Domain` shares the session, and so the place, with every subdomain:
    /// set it only when the protected site is on another subdomain than the
    /// room. `HttpOnly` and `SameSite=Strict` are not settable: the
    /// cross-site defence and the place depend on them; `Secure` follows
    /// the guard's scheme (`https`: the host says it is behind HTTPS).
    pub fn cookie_scope(mut self, path: &str, domain: Option<&str>) -> Result<Self, ConfigError> {
        fn attribute(v: &str) -> bool {
            !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
        }
        if !path.starts_with('/') || !attribute(path) {
            return Err(ConfigError::Invalid {
                setting: "session cookie path",
                reason: "expected a path starting with / without ';', ',' or spaces",
            });
        }
        let mut attributes = format!("; Path={path}");
        if let Some(domain) = domain {
            if !attribute(domain) {
                return Err(ConfigError::Invalid {
                    setting: "session cookie domain",
                    reason: "expected a host name without ';', ',' or spaces",
                });
            }
            attributes.push_str("; Domain=");
            attributes.push_str(domain);
        }
        self.attributes = attributes.into();
        Ok(self)
    }

    /// Keeps the session in cookie `name` instead (the layer's
    /// [`SessionCookie`](crate::layer::SessionCookie) must read the same
    /// name). `__Host-qg_session` keeps sibling subdomains from setting it.
    pub fn cookie_name(mut self, name: &str) -> Result<Self, ConfigError> {
        self.cookie = cookie_name(name, "session cookie")?;
        Ok(self)
    }

    /// The signing keys.
    pub fn keys(&self) -> &SessionKeys {
        &self.keys
    }

    /// The cross-site guard.
    pub fn guard(&self) -> &CrossSiteGuard {
        &self.guard
    }

    /// The session of a join request: refuses a cross-site request, then
    /// takes the valid session the request carries, or issues a new one
    /// (with its `Set-Cookie`) when it carries none, or one that does not
    /// verify (made up, edited, signed by a retired key). Two different
    /// session cookies are refused (`malformed`, `ambiguous`) rather than
    /// replaced: one of them may be the person's place.
    ///
    /// Send the `Set-Cookie` only with a successful answer.
    pub fn join(&self, headers: &HeaderMap, uri: &Uri) -> Result<JoinSession, SessionRefusal> {
        self.guard.check(headers, uri)?;
        match self.presented(headers)? {
            Some(id) => Ok(JoinSession {
                // A verified id is 44 base64url characters.
                id: String::from_utf8_lossy(id).into_owned(),
                set_cookie: None,
            }),
            None => {
                let id = self.keys.mint();
                let cookie = format!(
                    "{}={id}; HttpOnly; SameSite=Strict{}{}",
                    self.cookie,
                    self.attributes,
                    if self.guard.scheme() == "https" {
                        "; Secure"
                    } else {
                        ""
                    }
                );
                let set_cookie = HeaderValue::try_from(cookie)
                    .expect("a cookie name token and base64url make a header value");
                Ok(JoinSession {
                    id,
                    set_cookie: Some(set_cookie),
                })
            }
        }
    }

    /// The session of any other state-changing request (heartbeat, leave):
    /// refuses a cross-site request, then gives the request's valid session
    /// id, or `None` when it carries no valid one (the ticket check then
    /// answers `binding_mismatch`). Never issues a session.
    pub fn check<'a>(
        &self,
        headers: &'a HeaderMap,
        uri: &Uri,
    ) -> Result<Option<&'a [u8]>, SessionRefusal> {
        self.guard.check(headers, uri)?;
        self.presented(headers)
    }

    /// The valid session id in the request's cookie, if any.
    fn presented<'a>(&self, headers: &'a HeaderMap) -> Result<Option<&'a [u8]>, SessionRefusal> {
        match find_cookie(headers, &self.cookie) {
            CookieLookup::Found(v) => Ok(Some(v).filter(|v| self.keys.verify(v))),
            CookieLookup::Absent => Ok(None),
            CookieLookup::Ambiguous => Err(SessionRefusal::Rejected(Rejection::Malformed {
                reason: MalformedReason::Ambiguous,
            })),
            CookieLookup::TooLarge => Err(SessionRefusal::Rejected(Rejection::Malformed {
                reason: MalformedReason::Length,
            })),
        }
    }
}

/// The session a join goes ahead with. `Debug` does not print the id.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinSession {
    id: String,
    set_cookie: Option<HeaderValue>,
}

impl fmt::Debug for JoinSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinSession")
            .field("id", &"REDACTED")
            .field("new", &self.is_new())
            .finish()
    }
}

impl JoinSession {
    /// A session the request already carries (for a host's own
    /// [`SessionSource`](super::SessionSource)): no cookie is set.
    pub fn existing(id: String) -> Self {
        Self {
            id,
            set_cookie: None,
        }
    }

    /// A session issued by this request, with the `Set-Cookie` value that
    /// hands it to the browser (sent only with a successful join).
    pub fn issued(id: String, set_cookie: HeaderValue) -> Self {
        Self {
            id,
            set_cookie: Some(set_cookie),
        }
    }

    /// The session id: the binding material to join with.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the session was issued by this request.
    pub fn is_new(&self) -> bool {
        self.set_cookie.is_some()
    }

    /// The `Set-Cookie` value to send with a successful answer: only for a
    /// new session, so a live session cookie is never replaced.
    pub fn set_cookie(&self) -> Option<&HeaderValue> {
        self.set_cookie.as_ref()
    }
}

/// Why a room endpoint refused a request before looking at it further.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionRefusal {
    /// A browser sent it on behalf of another site: `cross_site`, 403.
    #[error(transparent)]
    CrossSite(#[from] CrossSite),
    /// The session cookie cannot be read (two different values, or cookie
    /// headers too large): `malformed`, 400.
    #[error(transparent)]
    Rejected(Rejection),
}

impl SessionRefusal {
    /// The stable machine code: `cross_site`, or the rejection's code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::CrossSite(_) => "cross_site",
            Self::Rejected(r) => r.code().as_str(),
        }
    }

    /// The HTTP status: 403 for `cross_site`, the rejection's otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::CrossSite(_) => StatusCode::FORBIDDEN,
            Self::Rejected(r) => r.status(),
        }
    }

    /// The problem document (RFC 9457, `application/problem+json`) in the
    /// layer's format: `type`, `title`, `status`, `detail`, `code`. It sets
    /// no cookie.
    pub fn problem_response(&self) -> Response<bytes::Bytes> {
        let cross_site = match self {
            Self::Rejected(r) => return problem_response(r),
            Self::CrossSite(c) => c,
        };
        // The detail is a fixed text without quotes or backslashes.
        let body = format!(
            "{{\"type\":\"{PROBLEM_TYPE_PREFIX}cross_site\",\"title\":\"Request from another site\",\
             \"status\":403,\"detail\":\"{cross_site}\",\"code\":\"cross_site\"}}"
        );
        let mut res = Response::new(bytes::Bytes::from(body));
        *res.status_mut() = StatusCode::FORBIDDEN;
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        res.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> RoomSessions {
        RoomSessions::new(
            SessionKeys::new(1, &[9u8; 32]).unwrap(),
            CrossSiteGuard::new("http").unwrap(),
        )
    }

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("cookie", value.parse().unwrap());
        h
    }

    fn uri() -> Uri {
        "/queue/join".parse().unwrap()
    }

    #[test]
    fn ids_are_signed_canonical_and_distinct() {
        let keys = SessionKeys::new(7, &[1u8; 32]).unwrap();
        let a = keys.mint();
        let b = keys.mint();
        assert_ne!(a, b);
        assert_eq!(a.len(), SESSION_ID_LEN);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)));
        assert!(keys.verify(a.as_bytes()));
        assert_eq!(decode(a.as_bytes()).map(|r| encode(&r)), Some(a.clone()));
        // Every single-character change is refused.
        for i in 0..a.len() {
            for c in [b'A', b'z', b'-', b'_', b'0'] {
                let mut t = a.clone().into_bytes();
                if t[i] == c {
                    continue;
                }
                t[i] = c;
                assert!(!keys.verify(&t), "position {i}");
            }
        }
        for bad in [
            &b""[..],
            b"00112233445566778899aabbccddeeff",
            &a.as_bytes()[..43],
            format!("{a}A").as_bytes(),
            format!("{}=", &a[..43]).as_bytes(),
            format!("{}+", &a[..43]).as_bytes(),
        ] {
            assert!(!keys.verify(bad));
        }
        // Another secret, or another key id under the same secret.
        assert!(!SessionKeys::new(7, &[2u8; 32])
            .unwrap()
            .verify(a.as_bytes()));
        assert!(!SessionKeys::new(8, &[1u8; 32])
            .unwrap()
            .verify(a.as_bytes()));
    }

    #[test]
    fn rotation_keeps_sessions() {
        let old = SessionKeys::new(1, &[1u8; 32]).unwrap();
        let id = old.mint();
        let rotated = SessionKeys::new(2, &[2u8; 32])
            .unwrap()
            .verify_only_key(1, &[1u8; 32])
            .unwrap();
        assert!(rotated.verify(id.as_bytes()));
        assert!(rotated.verify(rotated.mint().as_bytes()));
        assert!(!old.verify(rotated.mint().as_bytes()));
        assert_eq!(rotated.signing_key_id(), 2);
        assert!(SessionKeys::new(1, &[1u8; 31]).is_err());
        assert!(rotated.verify_only_key(2, &[3u8; 32]).is_err());
    }

    #[test]
    fn the_session_key_is_not_a_ticket_key() {
        // The same secret signs tickets and sessions in the demo: the
        // purpose labels keep the keys apart.
        let secret = [5u8; 32];
        let session = session_key(1, &secret).unwrap();
        let master = MacKey::new(&secret);
        for purpose in ["waiting", "admitted", "binding"] {
            let other = MacKey::new(&master.tag(&[b"queuegate/1 key:", purpose.as_bytes()]));
            assert_ne!(session.tag(&[b"x"]), other.tag(&[b"x"]), "{purpose}");
        }
    }

    #[test]
    fn join_keeps_a_valid_session_and_replaces_only_what_is_not_one() {
        let s = sessions();
        let first = s.join(&HeaderMap::new(), &uri()).unwrap();
        assert!(first.is_new());
        assert_eq!(
            first.set_cookie().unwrap(),
            &format!(
                "qg_session={}; HttpOnly; SameSite=Strict; Path=/",
                first.id()
            )
        );
        for cookie in [
            format!("qg_session={}", first.id()),
            format!("qg_session ={}", first.id()),
            format!("a=b; qg_session=\"{}\"", first.id()),
        ] {
            let again = s.join(&with_cookie(&cookie), &uri()).unwrap();
            assert_eq!(
                (again.id(), again.is_new()),
                (first.id(), false),
                "{cookie}"
            );
            assert_eq!(
                s.check(&with_cookie(&cookie), &uri()).unwrap(),
                Some(first.id().as_bytes())
            );
        }
        for made_up in ["00112233445566778899aabbccddeeff", "", "x"] {
            let h = with_cookie(&format!("qg_session={made_up}"));
            let j = s.join(&h, &uri()).unwrap();
            assert!(j.is_new() && j.id() != made_up);
            assert_eq!(s.check(&h, &uri()).unwrap(), None);
        }
        let two = with_cookie(&format!("qg_session={}; qg_session=x", first.id()));
        assert_eq!(s.join(&two, &uri()).unwrap_err().code(), "malformed");
        assert_eq!(s.check(&two, &uri()).unwrap_err().code(), "malformed");
        assert!(format!("{first:?}").contains("REDACTED"));
        assert!(!format!("{first:?}").contains(first.id()));
    }

    proptest::proptest! {
        /// The room and the layer read any cookie header alike: the room
        /// takes a session exactly when the layer's binding is that session.
        #[test]
        fn the_room_and_the_layer_agree_on_any_cookie_header(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("qg_session".to_owned()),
                    proptest::strategy::Just("ID".to_owned()),
                    proptest::strategy::Just("OTHER".to_owned()),
                    "[ \t;=\"a-zA-Z_]{1,3}",
                ],
                0..12,
            ),
        ) {
            use crate::layer::{BindingSource, SessionCookie};
            let s = sessions();
            let id = s.keys().mint();
            let other = s.keys().mint();
            let line = parts.concat().replace("OTHER", &other).replace("ID", &id);
            let Ok(value) = HeaderValue::from_str(&line) else {
                return Ok(());
            };
            let mut req = http::Request::new(());
            req.headers_mut().insert("cookie", value);
            let (p, ()) = req.into_parts();
            let layer = SessionCookie::default().binding(&p);
            let room = s.check(&p.headers, &uri());
            match room {
                Ok(Some(v)) => proptest::prop_assert_eq!(layer.as_deref(), Some(v)),
                Ok(None) => proptest::prop_assert!(
                    !matches!(layer.as_deref(), Some(b) if s.keys().verify(b))
                ),
                Err(_) => proptest::prop_assert_eq!(layer, None),
            }
        }
    }

    #[test]
    fn cross_site_is_refused_before_the_cookie_is_read() {
        let s = sessions();
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        let e = s.join(&h, &uri()).unwrap_err();
        assert_eq!(
            (e.code(), e.status()),
            ("cross_site", StatusCode::FORBIDDEN)
        );
        let res = e.problem_response();
        assert_eq!(res.status(), 403);
        assert_eq!(res.headers()[CONTENT_TYPE], PROBLEM_JSON);
        assert!(res.headers().get("set-cookie").is_none());
        let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
        assert_eq!(body["code"], "cross_site");
        assert_eq!(body["type"], "urn:queuegate:problem:cross_site");
        assert!(body["detail"].as_str().unwrap().contains("another site"));
        let e = s
            .join(&with_cookie("qg_session=a; qg_session=b"), &uri())
            .unwrap_err();
        let body: serde_json::Value = serde_json::from_slice(e.problem_response().body()).unwrap();
        assert_eq!(body["code"], "malformed");
    }
}
