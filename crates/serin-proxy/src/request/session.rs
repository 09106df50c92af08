//! Session persistence (the Gateway API's `sessionPersistence`): the
//! backend and endpoint a request's session names, whether that session
//! still holds, and the cookie or header that carries it back.
//!
//! The session lives with the client, not in serin: a restart, a reload or
//! another replica of the gateway reads the same cookie the same way. It
//! names a version, so a client keeps its version while a canary moves the
//! weights, and leaves it only when that version's weight is 0 (a rollback
//! or a promotion), its endpoints are gone, or the session timed out.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{self, HeaderMap, HeaderValue};
use serin_config::proxy::{PathMatch, SessionKind, SessionPersistenceConfig};

/// What a session names: a backend (service and version), its endpoint,
/// and when it began and was last used (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub service: String,
    pub version: String,
    pub endpoint: SocketAddr,
    pub began: u64,
    pub seen: u64,
}

/// The format's first field: a cookie of another format (or serin) is no
/// session, never a wrong one.
const FORMAT: &str = "s1";

impl Session {
    /// The cookie's or header's value: URL-safe base64 of the fields, so
    /// any service or version name fits a cookie.
    pub fn encode(&self) -> String {
        let text = format!(
            "{FORMAT}\n{}\n{}\n{}\n{}\n{}",
            self.service, self.version, self.endpoint, self.began, self.seen
        );
        URL_SAFE_NO_PAD.encode(text)
    }

    /// The session `value` names, if it is one.
    pub fn decode(value: &[u8]) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let mut fields = text.split('\n');
        if fields.next()? != FORMAT {
            return None;
        }
        let session = Self {
            service: fields.next()?.to_string(),
            version: fields.next()?.to_string(),
            endpoint: fields.next()?.parse().ok()?,
            began: fields.next()?.parse().ok()?,
            seen: fields.next()?.parse().ok()?,
        };
        fields.next().is_none().then_some(session)
    }

    /// Whether the session still holds at `now` under `cfg`'s timeouts. A
    /// session from the future (a forged or skewed value) does not.
    pub fn holds(&self, cfg: &SessionPersistenceConfig, now: u64) -> bool {
        let within = |since: u64, limit: Option<std::time::Duration>| {
            limit.is_none_or(|l| now < since.saturating_add(l.as_secs()))
        };
        self.began <= self.seen
            && self.seen <= now
            && within(self.began, cfg.absolute_timeout)
            && within(self.seen, cfg.idle_timeout)
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The session the request carries, if it carries one that holds.
pub fn read(cfg: &SessionPersistenceConfig, headers: &HeaderMap, now: u64) -> Option<Session> {
    let value = match cfg.kind {
        SessionKind::Header => headers.get(&cfg.name).map(HeaderValue::as_bytes),
        SessionKind::Cookie => cookie(headers, &cfg.name),
    }?;
    Session::decode(value).filter(|s| s.holds(cfg, now))
}

/// The value of the cookie `name` among the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let (k, v) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
            (k == name.as_bytes()).then(|| &v[1..])
        })
}

/// What the answer tells the client: the session as it now is, when it
/// is new, moved, or timed by inactivity (each answer then renews it).
pub fn answer(
    cfg: &SessionPersistenceConfig,
    held: Option<&Session>,
    now_serving: Session,
    path: &PathMatch,
    tls: bool,
    headers: &mut HeaderMap,
) {
    let unchanged = held.is_some_and(|h| {
        h.service == now_serving.service
            && h.version == now_serving.version
            && h.endpoint == now_serving.endpoint
    });
    if unchanged && cfg.idle_timeout.is_none() {
        return;
    }
    let value = now_serving.encode();
    let line = match cfg.kind {
        SessionKind::Header => value,
        SessionKind::Cookie => set_cookie(cfg, &now_serving, &value, path, tls),
    };
    if let Ok(v) = HeaderValue::from_str(&line) {
        match cfg.kind {
            SessionKind::Header => {
                if let Ok(name) = header::HeaderName::from_bytes(cfg.name.as_bytes()) {
                    headers.insert(name, v);
                }
            }
            SessionKind::Cookie => {
                headers.append(header::SET_COOKIE, v);
            }
        }
    }
}

/// The `Set-Cookie` line: scoped to the rule's path prefix (GEP-1619), out
/// of scripts' reach, sent on top-level navigations, `Secure` on TLS, and
/// with a `Max-Age` (what is left of the absolute timeout) when permanent.
fn set_cookie(
    cfg: &SessionPersistenceConfig,
    session: &Session,
    value: &str,
    path: &PathMatch,
    tls: bool,
) -> String {
    let path = match path {
        PathMatch::PathPrefix(p) if !p.is_empty() => p.as_str(),
        _ => "/",
    };
    let mut line = format!("{}={value}; Path={path}; HttpOnly; SameSite=Lax", cfg.name);
    if tls {
        line.push_str("; Secure");
    }
    if let (true, Some(abs)) = (cfg.permanent, cfg.absolute_timeout) {
        let ends = session.began.saturating_add(abs.as_secs());
        let left = ends.saturating_sub(session.seen).max(1);
        line.push_str(&format!("; Max-Age={left}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(absolute: Option<u64>, idle: Option<u64>) -> SessionPersistenceConfig {
        SessionPersistenceConfig {
            name: "s".into(),
            kind: SessionKind::Cookie,
            absolute_timeout: absolute.map(Duration::from_secs),
            idle_timeout: idle.map(Duration::from_secs),
            permanent: false,
        }
    }

    fn session(began: u64, seen: u64) -> Session {
        Session {
            service: "qotm".into(),
            version: "v2".into(),
            endpoint: SocketAddr::from(([127, 0, 0, 1], 8080)),
            began,
            seen,
        }
    }

    #[test]
    fn a_session_holds_until_a_timeout_ends_it() {
        // (absolute, idle, began, seen, now, holds)
        let table = [
            (None, None, 0, 0, u64::MAX, true),
            (Some(100), None, 1000, 1050, 1099, true),
            (Some(100), None, 1000, 1050, 1100, false),
            (None, Some(10), 1000, 1050, 1059, true),
            (None, Some(10), 1000, 1050, 1060, false),
            (Some(100), Some(10), 1000, 1095, 1101, false),
            // From the future, or seen before it began: forged.
            (None, None, 1000, 1050, 1040, false),
            (None, None, 1050, 1000, 1060, false),
        ];
        for (absolute, idle, began, seen, now, holds) in table {
            assert_eq!(
                session(began, seen).holds(&cfg(absolute, idle), now),
                holds,
                "absolute {absolute:?} idle {idle:?} began {began} seen {seen} now {now}"
            );
        }
    }

    #[test]
    fn values_round_trip_and_anything_else_is_no_session() {
        let s = session(1, 2);
        let v = s.encode();
        assert!(
            v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        );
        assert_eq!(Session::decode(v.as_bytes()), Some(s));
        for bad in [
            "",
            "!!",
            &URL_SAFE_NO_PAD.encode("s0\nq\nv\n127.0.0.1:1\n1\n2"),
            &URL_SAFE_NO_PAD.encode("s1\nq\nv\nnot-an-addr\n1\n2"),
            &URL_SAFE_NO_PAD.encode("s1\nq\nv\n127.0.0.1:1\n1"),
            &URL_SAFE_NO_PAD.encode("s1\nq\nv\n127.0.0.1:1\n1\n2\nextra"),
        ] {
            assert_eq!(Session::decode(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; ss=2"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("theme=dark;s=abc ; z"),
        );
        assert_eq!(cookie(&h, "s"), Some(&b"abc"[..]));
        assert_eq!(cookie(&h, "ss"), Some(&b"2"[..]));
        assert_eq!(cookie(&h, "x"), None);
    }

    #[test]
    fn the_answer_renews_only_what_needs_it() {
        let path = PathMatch::PathPrefix("/api".into());
        let s = session(100, 100);
        let mut h = HeaderMap::new();
        answer(&cfg(None, None), Some(&s), s.clone(), &path, false, &mut h);
        assert!(h.is_empty(), "same place, no idle timeout: nothing to say");
        let moved = Session {
            version: "v1".into(),
            ..s.clone()
        };
        answer(&cfg(None, None), Some(&s), moved, &path, true, &mut h);
        let line = h[header::SET_COOKIE].to_str().unwrap_or_default();
        assert!(line.starts_with("s="), "{line}");
        assert!(
            line.ends_with("; Path=/api; HttpOnly; SameSite=Lax; Secure"),
            "{line}"
        );
        let mut permanent = cfg(Some(3600), Some(60));
        permanent.permanent = true;
        let mut h = HeaderMap::new();
        answer(
            &permanent,
            Some(&s),
            session(100, 700),
            &path,
            false,
            &mut h,
        );
        let line = h[header::SET_COOKIE].to_str().unwrap_or_default();
        assert!(line.ends_with("; Max-Age=3000"), "{line}");
    }
}
