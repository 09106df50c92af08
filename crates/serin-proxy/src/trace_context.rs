//! W3C Trace Context (`traceparent`): parsing what a client sent, starting a
//! trace when it sent none (or a malformed one), and writing the header the
//! upstream gets. `tracestate` is passed through untouched, as the
//! specification asks of a proxy that adds no vendor entry; it is dropped
//! only with a `traceparent` that could not be parsed.
//!
//! Nothing here allocates except making a new header value.

use std::fmt;

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The `sampled` bit of the trace flags.
pub const FLAG_SAMPLED: u8 = 0x01;

/// Length of a version-00 `traceparent`: `00-` + 32 + `-` + 16 + `-` + 2.
const TRACEPARENT_LEN: usize = 55;

/// One position in a trace: the trace, the span that is the parent of the
/// next hop, and the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value. Versions above 00 are read as 00, as the
    /// specification asks (the 00 fields, then `-` or the end); version ff,
    /// upper-case hex and all-zero ids are invalid.
    pub fn parse(value: &[u8]) -> Option<Self> {
        if value.len() < TRACEPARENT_LEN {
            return None;
        }
        let version = hex_byte(&value[0..2])?;
        if version == 0xff
            || (version == 0 && value.len() != TRACEPARENT_LEN)
            || (value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-')
            || value[2] != b'-'
            || value[35] != b'-'
            || value[52] != b'-'
        {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, b) in trace_id.iter_mut().enumerate() {
            *b = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
        }
        let mut parent_id = [0u8; 8];
        for (i, b) in parent_id.iter_mut().enumerate() {
            *b = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&value[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The request's `traceparent`, when it has exactly one valid one.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all(&TRACEPARENT).iter();
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        Self::parse(first.as_bytes())
    }

    /// A new trace with random ids.
    pub fn new_root(flags: u8) -> Self {
        Self {
            trace_id: fastrand::u128(1..).to_be_bytes(),
            parent_id: fastrand::u64(1..).to_be_bytes(),
            flags,
        }
    }

    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// The header value `00-TRACE-PARENT-FLAGS`.
    pub fn to_header(&self) -> HeaderValue {
        let mut out = [0u8; TRACEPARENT_LEN];
        out[..3].copy_from_slice(b"00-");
        write_hex(&self.trace_id, &mut out[3..35]);
        out[35] = b'-';
        write_hex(&self.parent_id, &mut out[36..52]);
        out[52] = b'-';
        write_hex(&[self.flags], &mut out[53..55]);
        HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The trace id in lower-case hex, for logs.
    pub fn trace_id_hex(&self) -> TraceIdHex {
        let mut out = [0u8; 32];
        write_hex(&self.trace_id, &mut out);
        TraceIdHex(out)
    }
}

/// A trace id written as 32 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceIdHex([u8; 32]);

impl TraceIdHex {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Display for TraceIdHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TraceIdHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The request's trace position when serin records no spans: the client's
/// `traceparent` when valid (passed on unchanged, so the next hop's span is
/// a child of the client's), else a new trace set on the request. A new
/// trace is marked sampled so that services sampling by their parent record
/// it, as they would have without serin in between.
pub fn continue_or_start(headers: &mut HeaderMap) -> TraceParent {
    if let Some(tp) = TraceParent::from_headers(headers) {
        return tp;
    }
    let tp = TraceParent::new_root(FLAG_SAMPLED);
    reset(headers, &tp);
    tp
}

/// Replaces whatever `traceparent` the request had by `tp` and drops a
/// `tracestate` that belonged to a trace no longer continued.
pub fn reset(headers: &mut HeaderMap, tp: &TraceParent) {
    headers.remove(&TRACESTATE);
    headers.insert(TRACEPARENT.clone(), tp.to_header());
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    Some(hex_val(two[0])? << 4 | hex_val(two[1])?)
}

fn write_hex(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_writes_back_the_same() {
        let tp = TraceParent::parse(GOOD.as_bytes()).expect("valid");
        assert_eq!(
            tp.parent_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert!(tp.sampled());
        assert_eq!(tp.to_header(), GOOD);
        assert_eq!(
            tp.trace_id_hex().as_str(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn rejects_what_the_spec_rejects() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn later_versions_are_read_as_00() {
        let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        assert!(TraceParent::parse(v.as_bytes()).is_some());
        let glued = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x";
        assert_eq!(TraceParent::parse(glued.as_bytes()), None);
    }

    #[test]
    fn a_valid_header_is_continued_unchanged() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT.clone(), HeaderValue::from_static(GOOD));
        h.insert(TRACESTATE.clone(), HeaderValue::from_static("vendor=1"));
        let tp = continue_or_start(&mut h);
        assert_eq!(tp.to_header(), GOOD);
        assert_eq!(
            h.get(&TRACEPARENT).map(|v| v.as_bytes()),
            Some(GOOD.as_bytes())
        );
        assert!(h.contains_key(&TRACESTATE));
    }

    #[test]
    fn a_missing_or_bad_header_starts_a_trace() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT.clone(), HeaderValue::from_static("garbage"));
        h.insert(TRACESTATE.clone(), HeaderValue::from_static("vendor=1"));
        let tp = continue_or_start(&mut h);
        let sent = h.get(&TRACEPARENT).map(|v| v.as_bytes().to_vec());
        assert_eq!(sent, Some(tp.to_header().as_bytes().to_vec()));
        assert!(TraceParent::from_headers(&h).is_some_and(|p| p.sampled()));
        assert!(!h.contains_key(&TRACESTATE));
        let other = continue_or_start(&mut HeaderMap::new());
        assert_ne!(other.trace_id, tp.trace_id);
    }

    #[test]
    fn two_traceparents_are_invalid() {
        let mut h = HeaderMap::new();
        h.append(TRACEPARENT.clone(), HeaderValue::from_static(GOOD));
        h.append(TRACEPARENT.clone(), HeaderValue::from_static(GOOD));
        assert_eq!(TraceParent::from_headers(&h), None);
    }
}
