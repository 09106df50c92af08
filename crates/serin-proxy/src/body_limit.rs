//! The request-body limit (413): a declared `Content-Length` over it is
//! refused before anything reads the body, and a streamed body is counted
//! as its frames are read and cut the moment it passes the limit, so the
//! upstream never receives a complete request.

use http::HeaderMap;
use http::header::CONTENT_LENGTH;

/// What the client may still send of one request's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit {
    max: u64,
    read: u64,
}

/// The body passed its limit; the request is answered 413.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request body is larger than {max} bytes")]
pub struct BodyTooLarge {
    pub max: u64,
}

impl BodyLimit {
    /// The rule's limit, else the listener's; `0` means none.
    pub fn of(listener: u64, rule: Option<u64>) -> Option<Self> {
        let max = rule.unwrap_or(listener);
        (max > 0).then_some(Self { max, read: 0 })
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// Refuses a body whose declared length is over the limit (a malformed
    /// length is the strict framing check's to refuse).
    pub fn check_declared(&self, headers: &HeaderMap) -> Result<(), BodyTooLarge> {
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(n) if n > self.max => Err(BodyTooLarge { max: self.max }),
            _ => Ok(()),
        }
    }

    /// Counts `n` more bytes read; an error once they pass the limit.
    pub fn take(&mut self, n: usize) -> Result<(), BodyTooLarge> {
        self.read = self.read.saturating_add(n as u64);
        if self.read > self.max {
            return Err(BodyTooLarge { max: self.max });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_overrides_the_listener_and_zero_means_none() {
        let max = |l, r| BodyLimit::of(l, r).map(|b| b.max());
        assert_eq!(max(100, None), Some(100));
        assert_eq!(max(100, Some(10)), Some(10));
        assert_eq!(max(100, Some(0)), None);
        assert_eq!(max(0, None), None);
        assert_eq!(max(0, Some(5)), Some(5));
    }

    #[test]
    fn bytes_are_counted_up_to_the_limit_and_not_one_more() {
        let Some(mut limit) = BodyLimit::of(10, None) else {
            panic!("a limit of 10");
        };
        assert!(limit.take(4).is_ok());
        assert!(limit.take(6).is_ok(), "exactly the limit is allowed");
        assert!(limit.take(1).is_err());
        for (declared, ok) in [("10", true), ("11", false), ("0", true), ("x", true)] {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_LENGTH, http::HeaderValue::from_static(declared));
            assert_eq!(limit.check_declared(&h).is_ok(), ok, "{declared}");
        }
    }
}
