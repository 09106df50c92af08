//! Headers a proxy owns: hop-by-hop removal, forwarding headers, request ids
//! (trace context is in [`crate::trace_context`]).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// On every answer serin makes itself: why, as a short name (the metric
/// label of the same failure).
pub const X_SERIN_REASON: HeaderName = HeaderName::from_static("x-serin-reason");
/// On a 503 from a limit: which limit.
pub const X_SERIN_OVERFLOW: HeaderName = HeaderName::from_static("x-serin-overflow");

/// The headers that always belong to one connection (RFC 9110 §7.6.1;
/// `Proxy-Connection` and `Keep-Alive` from older practice), each with its
/// bit in a [`hop_by_hop_present`] mask. A `static`: a `const` array of
/// names is built and dropped again at each use (its `drop_in_place` alone
/// was 0.8 % of the request path).
static HOP_BY_HOP: [(HeaderName, u8); 8] = [
    (header::CONNECTION, CONNECTION_BIT),
    (header::TRANSFER_ENCODING, 1 << 1),
    (header::UPGRADE, UPGRADE_BIT),
    (header::TE, TE_BIT),
    (header::TRAILER, 1 << 4),
    (header::PROXY_AUTHORIZATION, 1 << 5),
    (HeaderName::from_static("keep-alive"), 1 << 6),
    (HeaderName::from_static("proxy-connection"), 1 << 7),
];
const CONNECTION_BIT: u8 = 1;
const UPGRADE_BIT: u8 = 1 << 2;
const TE_BIT: u8 = 1 << 3;

/// The bit of [`HOP_BY_HOP`] a header name has (0: not hop-by-hop). A
/// match on the name's text is a jump on its length and one comparison;
/// comparing each name with the eight of the table was most of the cost
/// of a request without any of them.
fn hop_by_hop_bit(name: &str) -> u8 {
    match name {
        "connection" => CONNECTION_BIT,
        "transfer-encoding" => 1 << 1,
        "upgrade" => UPGRADE_BIT,
        "te" => TE_BIT,
        "trailer" => 1 << 4,
        "proxy-authorization" => 1 << 5,
        "keep-alive" => 1 << 6,
        "proxy-connection" => 1 << 7,
        _ => 0,
    }
}

/// Which hop-by-hop headers the message has, in one pass over its names
/// (cheaper than looking each of eight names up to find it absent, the
/// usual case: those lookups showed at 7 % of the request path).
fn hop_by_hop_present(headers: &HeaderMap) -> u8 {
    headers
        .keys()
        .fold(0, |mask, name| mask | hop_by_hop_bit(name.as_str()))
}

/// Removes the headers that belong to one connection, not the message (RFC
/// 9110 §7.6.1), including those named in `Connection`. `keep_upgrade`
/// keeps `Connection: upgrade` and `Upgrade` for a tunnel; `keep_te_trailers`
/// keeps `te: trailers`, which gRPC needs on HTTP/2.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool, keep_te_trailers: bool) {
    let present = hop_by_hop_present(headers);
    if present == 0 {
        return;
    }
    if present & CONNECTION_BIT != 0 {
        remove_connection_named(headers, keep_upgrade);
    }
    let trailers = present & TE_BIT != 0
        && keep_te_trailers
        && headers
            .get(header::TE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            });
    for (name, bit) in &HOP_BY_HOP {
        let kept = keep_upgrade && *bit & (CONNECTION_BIT | UPGRADE_BIT) != 0;
        if present & bit != 0 && !kept {
            headers.remove(name);
        }
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Removes the headers the `Connection` header names (RFC 9110 §7.6.1).
fn remove_connection_named(headers: &mut HeaderMap, keep_upgrade: bool) {
    let Some(conn) = headers.get(header::CONNECTION) else {
        return;
    };
    let named: Vec<HeaderName> = conn
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|n| {
            // `keep-alive` and `close` are options, not header names (the
            // `Keep-Alive` header goes anyway); skipping them spares an
            // allocation on nearly every HTTP/1.1 response.
            !(n.is_empty()
                || n.eq_ignore_ascii_case("keep-alive")
                || n.eq_ignore_ascii_case("close")
                || keep_upgrade && n.eq_ignore_ascii_case("upgrade"))
        })
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    for n in named {
        if n != header::CONNECTION {
            headers.remove(&n);
        }
    }
}

/// The client's address as `x-forwarded-for` writes it, made once per
/// connection (formatting an address for every request showed in the
/// profile at 3% of the request path).
pub fn forwarded_for_value(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&itoa_ip(client)).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Adds the client's address (`client`, from [`forwarded_for_value`]) to
/// `x-forwarded-for` and sets `x-forwarded-proto` to the scheme the client
/// used with serin.
pub fn set_forwarded(headers: &mut HeaderMap, client: &HeaderValue, tls: bool) {
    let value = match headers.get(&X_FORWARDED_FOR) {
        Some(prev) => {
            let mut joined = Vec::with_capacity(prev.len() + 2 + client.len());
            joined.extend_from_slice(prev.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client.as_bytes());
            HeaderValue::from_bytes(&joined).ok()
        }
        None => Some(client.clone()),
    };
    if let Some(v) = value {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
}

fn itoa_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// The request's id: the client's `x-request-id` when it sent a sane one,
/// else a new random (version 4) UUID, set on the request.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID)
        && !v.is_empty()
        && v.len() <= 200
    {
        return v.clone();
    }
    let v = new_request_id();
    headers.insert(X_REQUEST_ID.clone(), v.clone());
    v
}

fn new_request_id() -> HeaderValue {
    let mut b: [u8; 16] = fastrand::u128(..).to_le_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut s = [0u8; 36];
    let hex = b"0123456789abcdef";
    let mut j = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s[j] = b'-';
            j += 1;
        }
        s[j] = hex[usize::from(byte >> 4)];
        s[j + 1] = hex[usize::from(byte & 0xf)];
        j += 2;
    }
    HeaderValue::from_bytes(&s).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Whether a `Connection` header of `headers` names `option`.
pub fn connection_has(headers: &HeaderMap, option: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(option))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hop_by_hop_name_has_its_own_bit() {
        let mut seen = 0;
        for (name, bit) in &HOP_BY_HOP {
            assert_eq!(hop_by_hop_bit(name.as_str()), *bit, "{name}");
            assert_eq!(seen & bit, 0, "{name} shares its bit");
            seen |= bit;
        }
        for other in ["content-length", "host", "x-connection", "tes"] {
            assert_eq!(hop_by_hop_bit(other), 0, "{other}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h, false, true);
        assert!(h.get("x-secret").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get("keep-alive").is_none());
        assert_eq!(
            h.get(header::TE).map(|v| v.as_bytes()),
            Some(&b"trailers"[..])
        );
        assert!(h.get("x-kept").is_some());
    }

    #[test]
    fn request_ids_are_uuids() {
        let mut h = HeaderMap::new();
        let id = ensure_request_id(&mut h);
        let s = id.to_str().unwrap_or("");
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        let mut h2 = HeaderMap::new();
        h2.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("abc"));
        assert_eq!(ensure_request_id(&mut h2), "abc");
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR.clone(),
            HeaderValue::from_static("10.0.0.1"),
        );
        let client = forwarded_for_value(IpAddr::from([127, 0, 0, 1]));
        set_forwarded(&mut h, &client, false);
        assert_eq!(
            h.get(&X_FORWARDED_FOR).map(|v| v.as_bytes()),
            Some(&b"10.0.0.1, 127.0.0.1"[..])
        );
        assert_eq!(
            h.get(&X_FORWARDED_PROTO).map(|v| v.as_bytes()),
            Some(&b"http"[..])
        );
    }
}
