//! Rate limits at the gateway (off unless set): a token bucket per client
//! IP (`--rate_limit N` requests per second, `--rate_burst B`), and one per
//! route shared by every client (`--route_rate_limit`, `--route_rate_burst`),
//! with governor's GCRA buckets. A request over either is answered 429 with
//! `Retry-After` (whole seconds) and go-micro error JSON, before any call.
//!
//! A route is the path's first three segments (`/user/account/login`),
//! lower-cased and cut at 128 bytes. Buckets back to full are dropped every
//! few thousand requests, so neither table grows without bound.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{HeaderValue, header};

use crate::error::ApiError;
use crate::serve::RemoteAddr;

/// Requests per second and burst of one kind of bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Rate {
    /// `per_second` requests a second, `burst` at once (default: one
    /// second's worth).
    pub fn new(per_second: u32, burst: Option<u32>) -> Option<Rate> {
        let per_second = NonZeroU32::new(per_second)?;
        let burst = burst.and_then(NonZeroU32::new).unwrap_or(per_second);
        Some(Rate { per_second, burst })
    }

    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

/// The gateway's limits; see the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimits {
    pub per_ip: Option<Rate>,
    pub per_route: Option<Rate>,
}

impl RateLimits {
    pub fn is_off(&self) -> bool {
        self.per_ip.is_none() && self.per_route.is_none()
    }
}

/// Requests between two sweeps of full buckets.
const SWEEP_EVERY: u64 = 4096;
const MAX_ROUTE_KEY: usize = 128;

/// The buckets.
pub(crate) struct Limiter {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_route: Option<DefaultKeyedRateLimiter<String>>,
    requests: AtomicU64,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").finish_non_exhaustive()
    }
}

impl Limiter {
    pub(crate) fn new(limits: RateLimits) -> Option<Arc<Limiter>> {
        if limits.is_off() {
            return None;
        }
        Some(Arc::new(Limiter {
            per_ip: limits.per_ip.map(|r| RateLimiter::keyed(r.quota())),
            per_route: limits.per_route.map(|r| RateLimiter::keyed(r.quota())),
            requests: AtomicU64::new(0),
        }))
    }

    /// `Err(wait)` if the request is over a limit.
    fn check(&self, ip: Option<IpAddr>, path: &str) -> Result<(), Duration> {
        if self.requests.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            if let Some(l) = &self.per_ip {
                l.retain_recent();
            }
            if let Some(l) = &self.per_route {
                l.retain_recent();
            }
        }
        let now = DefaultClock::default().now();
        if let (Some(limiter), Some(ip)) = (&self.per_ip, ip) {
            limiter
                .check_key(&ip)
                .map_err(|not_until| not_until.wait_time_from(now))?;
        }
        if let Some(limiter) = &self.per_route {
            limiter
                .check_key(&route_key(path))
                .map_err(|not_until| not_until.wait_time_from(now))?;
        }
        Ok(())
    }
}

fn route_key(path: &str) -> String {
    let end = path
        .match_indices('/')
        .nth(3)
        .map_or(path.len(), |(i, _)| i)
        .min(MAX_ROUTE_KEY);
    let mut end = end.min(path.len());
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    path[..end].to_ascii_lowercase()
}

/// The check [`crate::edge::edge`] runs on every request: `Some(429)` if it
/// is over a limit.
pub(crate) fn check(limiter: Option<&Limiter>, request: &Request) -> Option<Response> {
    let limiter = limiter?;
    let ip = request.extensions().get::<RemoteAddr>().map(|r| r.0.ip());
    limiter.check(ip, request.uri().path()).err().map(too_many)
}

fn too_many(wait: Duration) -> Response {
    // Whole seconds, rounded up, at least 1.
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    let mut response =
        ApiError::new(429, format!("too many requests: retry in {seconds} s")).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_the_first_three_segments() {
        assert_eq!(route_key("/user/account/login"), "/user/account/login");
        assert_eq!(route_key("/User/Account/Login/x/y"), "/user/account/login");
        assert_eq!(route_key("/"), "/");
        assert_eq!(route_key(&format!("/{}", "é".repeat(200))).len(), 127);
    }

    #[test]
    fn a_burst_then_refusals_with_a_wait() {
        let limiter = Limiter::new(RateLimits {
            per_ip: Rate::new(1, Some(2)),
            per_route: None,
        })
        .expect("on");
        let ip = Some(IpAddr::from([127, 0, 0, 1]));
        let other = Some(IpAddr::from([127, 0, 0, 2]));
        assert!(limiter.check(ip, "/a").is_ok());
        assert!(limiter.check(ip, "/b").is_ok());
        let wait = limiter.check(ip, "/c").expect_err("over");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limiter.check(other, "/a").is_ok(), "other IPs unaffected");
    }
}
