//! The `Date` header value, formatted once a second per worker thread.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    /// The second the value was made for, and the value.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Runs `f` with the current `Date` value (RFC 9110 §5.6.7).
pub fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(made_for, value)| {
        if *made_for != second {
            *made_for = second;
            *value = httpdate::fmt_http_date(now);
        }
        f(value.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_http_date() {
        let value = super::with_date(|d| String::from_utf8_lossy(d).into_owned());
        assert!(httpdate::parse_http_date(&value).is_ok(), "{value}");
        assert!(value.ends_with(" GMT"), "{value}");
    }
}
