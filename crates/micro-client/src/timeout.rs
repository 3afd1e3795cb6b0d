//! The `grpc-timeout` header: how a deadline travels to the server.
//!
//! Format (gRPC over HTTP/2 spec): at most 8 digits and a unit, one of
//! `H`, `M`, `S`, `m` (ms), `u` (µs), `n` (ns).

use std::time::Duration;

use http::HeaderValue;

pub(crate) const GRPC_TIMEOUT: &str = "grpc-timeout";

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

/// Encodes `timeout` with the finest unit that fits in 8 digits, rounding up
/// so the server never sees less time than there is.
pub(crate) fn encode(timeout: Duration) -> HeaderValue {
    let micros = timeout.as_nanos().div_ceil(1_000);
    let text = if micros <= u128::from(MAX_DIGITS) {
        format!("{micros}u")
    } else {
        let millis = timeout.as_nanos().div_ceil(1_000_000);
        if millis <= u128::from(MAX_DIGITS) {
            format!("{millis}m")
        } else {
            let secs = timeout.as_secs().min(MAX_DIGITS);
            format!("{secs}S")
        }
    };
    // Digits and an ASCII unit are always a valid header value.
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("99999999S"))
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
        assert_eq!(encode(Duration::from_secs(5)), "5000000u");
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
