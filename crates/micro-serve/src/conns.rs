//! The connection budget: which connections hold a slot, and which one gives
//! its slot up when a new one arrives and the budget is spent.
//!
//! A slot is never held by waiting alone: a connection that has no request
//! in flight is *idle*, and idle connections are closed after a deadline
//! (the header read timeout before the first request head, the idle timeout
//! after one, and the header read timeout again once the bytes of the next
//! HTTP/1 head start arriving). When the gateway is full (`max_connections`), or one client
//! IP holds its share (`max_connections_per_ip`), the connection idle the
//! longest (of that IP, for the per-IP cap) is closed to make room. A new
//! connection is refused only when every slot is busy with a request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Every open connection of one listener.
#[derive(Debug)]
pub(crate) struct Connections {
    max_total: usize,
    max_per_ip: usize,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Arc<Conn>>,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Every slot serves a request.
    Full,
    /// Every slot of this client IP serves a request.
    IpFull,
}

impl Connections {
    /// `max_per_ip` 0: no per-IP cap.
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Connections {
        Connections {
            max_total: max_total.max(1),
            max_per_ip,
            table: Mutex::new(Table::default()),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // The table stays consistent across a panic elsewhere (every
        // change is made in one statement), so a poisoned lock is used as is.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for a connection from `ip`, freeing the longest-idle one if
    /// the budget is spent.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Arc<Conn>, Refused> {
        let mut table = self.table();
        if self.max_per_ip > 0 && table.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
            let victim = table.longest_idle(|c| c.ip == ip).ok_or(Refused::IpFull)?;
            table.evict(victim);
        }
        if table.open.len() >= self.max_total {
            let victim = table.longest_idle(|_| true).ok_or(Refused::Full)?;
            table.evict(victim);
        }
        table.next_id += 1;
        let conn = Arc::new(Conn {
            id: table.next_id,
            ip,
            in_flight: AtomicUsize::new(0),
            head_begun: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            state: Mutex::new(ConnState {
                idle_since: Instant::now(),
                head_since: None,
                requests: 0,
            }),
            close: Notify::new(),
            first_request: Notify::new(),
        });
        table.open.insert(conn.id, conn.clone());
        *table.per_ip.entry(ip).or_insert(0) += 1;
        Ok(conn)
    }

    /// Gives `conn`'s slot back (when its connection has ended).
    pub(crate) fn release(&self, conn: &Conn) {
        self.table().remove(conn.id);
    }

    /// Connections holding a slot.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table().open.len()
    }
}

impl Table {
    fn longest_idle(&self, filter: impl Fn(&Conn) -> bool) -> Option<u64> {
        self.open
            .values()
            .filter(|c| filter(c) && c.in_flight.load(Ordering::Acquire) == 0)
            .min_by_key(|c| (c.idle_since(), c.id))
            .map(|c| c.id)
    }

    fn evict(&mut self, id: u64) {
        if let Some(conn) = self.remove(id) {
            // A stored permit: the connection's task sees it even if it is
            // not waiting right now.
            conn.close.notify_one();
        }
    }

    fn remove(&mut self, id: u64) -> Option<Arc<Conn>> {
        let conn = self.open.remove(&id)?;
        if let Some(count) = self.per_ip.get_mut(&conn.ip) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&conn.ip);
            }
        }
        Some(conn)
    }
}

/// One connection's slot: whether it is serving, since when it is idle, and
/// the signal that asks it to close.
#[derive(Debug)]
pub(crate) struct Conn {
    id: u64,
    ip: IpAddr,
    in_flight: AtomicUsize,
    /// Bytes of the next request head arrived (`head_since` is set).
    head_begun: AtomicBool,
    /// Serves HTTP/2: frames arrive between requests (pings, settings), so
    /// bytes read while idle begin no head.
    http2: AtomicBool,
    state: Mutex<ConnState>,
    /// Notified when the connection lost its slot to a newer one.
    pub(crate) close: Notify,
    /// Notified when its first request head arrives.
    pub(crate) first_request: Notify,
}

#[derive(Debug)]
struct ConnState {
    idle_since: Instant,
    /// When the first bytes of the next request head arrived on an idle
    /// HTTP/1 connection (after its first request).
    head_since: Option<Instant>,
    /// Request heads received so far.
    requests: u64,
}

impl Conn {
    fn state(&self) -> MutexGuard<'_, ConnState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn idle_since(&self) -> Instant {
        self.state().idle_since
    }

    /// A request head arrived; the connection is busy until the returned
    /// guard is dropped (with the response body, or the request abandoned).
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        let first = {
            let mut state = self.state();
            state.requests += 1;
            state.head_since = None;
            self.head_begun.store(false, Ordering::Relaxed);
            state.requests == 1
        };
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if first {
            self.first_request.notify_waiters();
        }
        Busy(self.clone())
    }

    /// The connection serves HTTP/2 (its requests say so).
    pub(crate) fn set_http2(&self) {
        self.http2.store(true, Ordering::Relaxed);
    }

    /// Bytes arrived. On an idle HTTP/1 connection they begin the next
    /// request head, which has the header read timeout from now (hyper's
    /// own per-head timer, a boxed tokio timer armed and cleared on every
    /// request, is off). Cheap when nothing changes: two atomic loads.
    pub(crate) fn bytes_read(&self) {
        if self.head_begun.load(Ordering::Relaxed)
            || self.http2.load(Ordering::Relaxed)
            || self.in_flight.load(Ordering::Acquire) > 0
        {
            return;
        }
        let mut state = self.state();
        if self.in_flight.load(Ordering::Acquire) == 0 {
            self.head_begun.store(true, Ordering::Relaxed);
            state.head_since = Some(Instant::now());
        }
    }

    /// Whether a request head has arrived on this connection yet.
    pub(crate) fn has_requested(&self) -> bool {
        self.state().requests > 0
    }

    /// When this connection must close if nothing changes: `None` while a
    /// request is in flight. Before its first request head it has
    /// `head_timeout` from accept; after a request, `idle_timeout` from its
    /// end, and `head_timeout` from the first bytes of the next head if
    /// that is sooner.
    pub(crate) fn close_at(
        &self,
        head_timeout: Duration,
        idle_timeout: Duration,
    ) -> Option<Instant> {
        let state = self.state();
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if state.requests == 0 {
            return Some(state.idle_since + head_timeout);
        }
        let idle_end = state.idle_since + idle_timeout;
        Some(match state.head_since {
            Some(since) => idle_end.min(since.max(state.idle_since) + head_timeout),
            None => idle_end,
        })
    }
}

/// A request in flight on a connection; dropping it makes the connection
/// idle again if it was the last.
#[derive(Debug)]
pub(crate) struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.state();
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            state.idle_since = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_frees_the_longest_idle_slot() {
        let conns = Connections::new(3, 0);
        let a = conns.admit(ip(2)).expect("a");
        tokio::time::advance(Duration::from_millis(10)).await;
        let b = conns.admit(ip(2)).expect("b");
        tokio::time::advance(Duration::from_millis(10)).await;
        let c = conns.admit(ip(3)).expect("c");
        let _busy_a = a.begin();
        let d = conns.admit(ip(4)).expect("d evicts b, the oldest idle");
        assert_eq!(conns.len(), 3);
        // b was told to close; a (busy) and c were not.
        tokio::time::timeout(Duration::from_millis(1), b.close.notified())
            .await
            .expect("b notified");
        assert!(
            tokio::time::timeout(Duration::from_millis(1), c.close.notified())
                .await
                .is_err()
        );
        // All busy: a new connection is refused.
        let _busy_c = c.begin();
        let _busy_d = d.begin();
        assert_eq!(conns.admit(ip(5)).err(), Some(Refused::Full));
        conns.release(&b); // already gone: no effect
        assert_eq!(conns.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_per_ip_cap_evicts_within_that_ip_only() {
        let conns = Connections::new(100, 2);
        let other = conns.admit(ip(9)).expect("other ip");
        tokio::time::advance(Duration::from_millis(10)).await;
        let first = conns.admit(ip(2)).expect("1");
        let second = conns.admit(ip(2)).expect("2");
        let _third = conns.admit(ip(2)).expect("3 evicts the first");
        tokio::time::timeout(Duration::from_millis(1), first.close.notified())
            .await
            .expect("first notified");
        assert!(
            tokio::time::timeout(Duration::from_millis(1), other.close.notified())
                .await
                .is_err()
        );
        let _b2 = second.begin();
        let _b3 = _third.begin();
        assert_eq!(conns.admit(ip(2)).err(), Some(Refused::IpFull));
        assert!(conns.admit(ip(3)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_requests() {
        let conns = Connections::new(10, 0);
        let conn = conns.admit(ip(2)).expect("admit");
        let head = Duration::from_secs(10);
        let idle = Duration::from_secs(60);
        let accepted = Instant::now();
        assert_eq!(conn.close_at(head, idle), Some(accepted + head));
        let busy = conn.begin();
        assert_eq!(conn.close_at(head, idle), None);
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(busy);
        let idle_from = Instant::now();
        assert_eq!(conn.close_at(head, idle), Some(idle_from + idle));
        // The next head starts arriving: it has the head timeout from now,
        // once (more bytes do not move it).
        tokio::time::advance(Duration::from_secs(20)).await;
        conn.bytes_read();
        let head_from = Instant::now();
        assert_eq!(conn.close_at(head, idle), Some(head_from + head));
        tokio::time::advance(Duration::from_secs(1)).await;
        conn.bytes_read();
        assert_eq!(conn.close_at(head, idle), Some(head_from + head));
        // Complete: busy, then idle again with the whole idle timeout.
        let busy = conn.begin();
        conn.bytes_read(); // a body: no head
        drop(busy);
        assert_eq!(conn.close_at(head, idle), Some(Instant::now() + idle));
        // Past the idle deadline's share: the sooner of the two.
        tokio::time::advance(Duration::from_secs(55)).await;
        conn.bytes_read();
        assert_eq!(
            conn.close_at(head, idle),
            Some(Instant::now() - Duration::from_secs(55) + idle)
        );
        // HTTP/2 frames between requests begin no head.
        let h2 = conns.admit(ip(3)).expect("admit");
        h2.set_http2();
        drop(h2.begin());
        let idle_from = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        h2.bytes_read();
        assert_eq!(h2.close_at(head, idle), Some(idle_from + idle));
    }
}
