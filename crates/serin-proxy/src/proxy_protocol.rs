//! The PROXY protocol (HAProxy's v1 text and v2 binary header) at the start
//! of a connection from a trusted load balancer: it names the client, whose
//! address then stands for the peer's everywhere (README, "PROXY protocol").
//!
//! The header is parsed by the `ppp` crate from peeked bytes, then exactly
//! its bytes are read off the socket, so what follows (TLS, the HTTP/2
//! preface, an HTTP/1.1 request) reaches the server untouched.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest header read. A v1 header is at most 107 bytes; a v2 one is
/// 16 bytes, the addresses (at most 216 for UNIX sockets) and TLVs. Cloud
/// balancers send a few TLVs (AWS's VPC endpoint id, GCP's PSC id) well
/// within this; HAProxy's own buffer for them is of this order.
const MAX_HEADER_BYTES: usize = 1024;

/// How long to wait before peeking again at a header that came in pieces
/// (a balancer sends it in one segment; this is for the odd split one).
const PARTIAL_HEADER_RETRY: Duration = Duration::from_millis(5);

/// Why a trusted peer's connection is closed without being served.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("the connection closed before its PROXY header ended")]
    Closed,
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    #[error("PROXY protocol header longer than {MAX_HEADER_BYTES} bytes")]
    TooLong,
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the PROXY header that must open `stream`, consuming exactly its
/// bytes. The source it names, or `None` when the balancer speaks for
/// itself (v2 `LOCAL`, v1 `UNKNOWN`, a UNIX socket): its health checks.
pub async fn read_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut buf = vec![0u8; MAX_HEADER_BYTES];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(ProxyHeaderError::Closed);
        }
        match parse(&buf[..n]) {
            Parsed::Header { length, source } => {
                stream.read_exact(&mut buf[..length]).await?;
                return Ok(source);
            }
            Parsed::Incomplete if n == buf.len() => return Err(ProxyHeaderError::TooLong),
            // The peeked bytes keep the socket readable: wait, then look
            // again for the rest.
            Parsed::Incomplete => tokio::time::sleep(PARTIAL_HEADER_RETRY).await,
            Parsed::Invalid(e) => return Err(e),
        }
    }
}

/// What the bytes seen so far hold.
#[derive(Debug)]
enum Parsed {
    Header {
        length: usize,
        source: Option<SocketAddr>,
    },
    Incomplete,
    Invalid(ProxyHeaderError),
}

/// The pure part of [`read_header`]: a header at the start of `bytes`?
fn parse(bytes: &[u8]) -> Parsed {
    const V1_PREFIX: &[u8] = b"PROXY";
    const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    let starts = |prefix: &[u8]| {
        bytes[..bytes.len().min(prefix.len())] == prefix[..bytes.len().min(prefix.len())]
    };
    if !starts(V1_PREFIX) && !starts(V2_SIGNATURE) {
        return Parsed::Invalid(ProxyHeaderError::Missing);
    }
    let result = HeaderResult::parse(bytes);
    // A v1 line that ended but is short of its fields is broken, not
    // incomplete (ppp reports missing fields as incomplete).
    let v1_line_ended = matches!(result, HeaderResult::V1(_)) && bytes.contains(&b'\n');
    if result.is_incomplete() && !v1_line_ended {
        return Parsed::Incomplete;
    }
    match result {
        HeaderResult::V1(Ok(h)) => Parsed::Header {
            length: h.header.len(),
            source: match h.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Unknown => None,
            },
        },
        HeaderResult::V2(Ok(h)) => Parsed::Header {
            length: h.len(),
            source: match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (v2::Command::Proxy, v2::Addresses::Unix(_) | v2::Addresses::Unspecified) => None,
            },
        },
        HeaderResult::V1(Err(e)) => Parsed::Invalid(ProxyHeaderError::Malformed(e.to_string())),
        HeaderResult::V2(Err(e)) => Parsed::Invalid(ProxyHeaderError::Malformed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        out.push(0x20 | command);
        out.push(family);
        let len = u16::try_from(addresses.len() + tlvs.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(addresses);
        out.extend_from_slice(tlvs);
        out
    }

    fn ipv4_addresses() -> Vec<u8> {
        // 203.0.113.7:51000 -> 10.0.0.1:443
        let mut a = vec![203, 0, 113, 7, 10, 0, 0, 1];
        a.extend_from_slice(&51000u16.to_be_bytes());
        a.extend_from_slice(&443u16.to_be_bytes());
        a
    }

    /// A header's length and the source it names, as text.
    type Seen = Option<(usize, Option<String>)>;

    fn header(p: Parsed) -> Seen {
        match p {
            Parsed::Header { length, source } => Some((length, source.map(|s| s.to_string()))),
            _ => None,
        }
    }

    #[test]
    fn headers_and_what_they_name() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\nGET / HTTP/1.1\r\n".as_slice();
        let v1_len = v1.iter().position(|b| *b == b'\n').map(|i| i + 1);
        let v1_6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\n".as_slice();
        let v1_unknown = b"PROXY UNKNOWN\r\n".as_slice();
        let mut v2_proxy = v2(1, 0x11, &ipv4_addresses(), &[0x04, 0, 1, 42]);
        let v2_len = v2_proxy.len();
        v2_proxy.extend_from_slice(b"\x16\x03\x01"); // a TLS hello follows
        let v2_local = v2(0, 0x00, &[], &[]);
        let cases: &[(&str, &[u8], Seen)] = &[
            (
                "v1 tcp4",
                v1,
                v1_len.map(|l| (l, Some("203.0.113.7:51000".into()))),
            ),
            (
                "v1 tcp6",
                v1_6,
                Some((v1_6.len(), Some("[2001:db8::7]:51000".into()))),
            ),
            ("v1 unknown", v1_unknown, Some((v1_unknown.len(), None))),
            (
                "v2 proxy with a TLV",
                &v2_proxy,
                Some((v2_len, Some("203.0.113.7:51000".into()))),
            ),
            ("v2 local", &v2_local, Some((v2_local.len(), None))),
        ];
        for (name, bytes, want) in cases {
            assert_eq!(header(parse(bytes)), *want, "{name}");
        }
    }

    #[test]
    fn pieces_wait_and_the_rest_is_refused() {
        let v2_full = v2(1, 0x11, &ipv4_addresses(), &[]);
        let incomplete: &[(&str, &[u8])] = &[
            ("v1 prefix", b"PRO"),
            ("v1 without its end", b"PROXY TCP4 203.0.113.7 10.0.0.1 510"),
            ("v2 signature", &v2_full[..7]),
            ("v2 without its addresses", &v2_full[..20]),
        ];
        for (name, bytes) in incomplete {
            assert!(
                matches!(parse(bytes), Parsed::Incomplete),
                "{name}: {:?}",
                parse(bytes)
            );
        }
        let missing: &[(&str, &[u8])] = &[
            ("HTTP/1.1", b"GET / HTTP/1.1\r\n"),
            ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n"),
            ("TLS", b"\x16\x03\x01\x02\x00"),
        ];
        for (name, bytes) in missing {
            assert!(
                matches!(parse(bytes), Parsed::Invalid(ProxyHeaderError::Missing)),
                "{name}: {:?}",
                parse(bytes)
            );
        }
        let malformed: &[(&str, &[u8])] = &[
            ("v1 short of fields", b"PROXY TCP4 203.0.113.7\r\n"),
            (
                "v1 bad address",
                b"PROXY TCP4 203.0.113.999 10.0.0.1 1 2\r\n",
            ),
            (
                "v1 bad protocol",
                b"PROXY UDP4 203.0.113.7 10.0.0.1 1 2\r\n",
            ),
            ("v2 bad version", &{
                let mut b = v2_full.clone();
                b[12] = 0x31;
                b
            }),
        ];
        for (name, bytes) in malformed {
            assert!(
                matches!(
                    parse(bytes),
                    Parsed::Invalid(ProxyHeaderError::Malformed(_))
                ),
                "{name}: {:?}",
                parse(bytes)
            );
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(
            matches!(parse(&long), Parsed::Invalid(_)),
            "{:?}",
            parse(&long)
        );
    }
}
