//! The `grpc-timeout` header: how a deadline travels to the server.
//!
//! Format (gRPC over HTTP/2 spec): at most 8 digits and a unit, one of
//! `H`, `M`, `S`, `m` (ms), `u` (µs), `n` (ns).

use std::time::Duration;

use http::{HeaderName, HeaderValue};

pub(crate) const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

const MAX_DIGITS: u64 = 99_999_999;

/// Parses a `grpc-timeout` value; `None` if malformed.
pub(crate) fn parse(value: &HeaderValue) -> Option<Duration> {
    let s = value.to_str().ok()?;
    if s.len() < 2 || s.len() > 9 {
        return None;
    }
    let (digits, unit) = s.split_at(s.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Encodes `timeout`, rounding up so the server never sees less time than
/// there is: in microseconds below a second, in milliseconds from a second
/// up (or seconds past 8 digits of them). A deadline of seconds loses nothing
/// to a millisecond of rounding, and calls with the same deadline then send
/// the same value, which HPACK sends as an index instead of the text.
pub(crate) fn encode(timeout: Duration) -> HeaderValue {
    // In u64 (u128 division is a library call, and this runs per attempt).
    let secs = timeout.as_secs();
    let nanos = u64::from(timeout.subsec_nanos());
    let micros = nanos.div_ceil(1_000);
    let (value, unit) = if secs == 0 && micros < 1_000_000 {
        (micros, b'u')
    } else {
        match secs
            .saturating_mul(1_000)
            .saturating_add(nanos.div_ceil(1_000_000))
        {
            millis if millis <= MAX_DIGITS => (millis, b'm'),
            _ => (secs.min(MAX_DIGITS), b'S'),
        }
    };
    // At most 8 digits and a unit, written without an intermediate String.
    let mut text = [0u8; 9];
    let mut len = 0;
    let mut rest = value;
    loop {
        text[len] = b'0' + (rest % 10) as u8;
        len += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    text[..len].reverse();
    text[len] = unit;
    // Digits and an ASCII unit are always a valid header value.
    HeaderValue::from_bytes(&text[..=len]).unwrap_or(HeaderValue::from_static("99999999S"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for d in [
            Duration::from_millis(1),
            Duration::from_millis(5000),
            Duration::from_secs(99),
            Duration::from_secs(1000),
            Duration::from_secs(10_000_000),
        ] {
            let parsed = parse(&encode(d)).expect("parses");
            assert!(parsed >= d, "{d:?} → {parsed:?}");
        }
        assert_eq!(encode(Duration::from_secs(5)), "5000m");
        assert_eq!(encode(Duration::from_micros(4_999_001)), "5000m");
        assert_eq!(encode(Duration::from_micros(999_999)), "999999u");
        assert_eq!(encode(Duration::ZERO), "0u");
        assert_eq!(encode(Duration::from_nanos(1)), "1u");
        assert_eq!(encode(Duration::from_secs(100)), "100000m");
        assert_eq!(encode(Duration::from_secs(100_000_000_000)), "99999999S");
        assert_eq!(encode(Duration::from_nanos(999_999_500)), "1000m");
        assert_eq!(encode(Duration::from_nanos(1_000_000_001)), "1001m");
        assert_eq!(encode(Duration::MAX), "99999999S");
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "5", "m", "123456789m", "5x", "-5m", "5.0S"] {
            assert_eq!(parse(&HeaderValue::from_static(bad)), None, "{bad}");
        }
        assert_eq!(
            parse(&HeaderValue::from_static("2H")),
            Some(Duration::from_secs(7200))
        );
    }
}
