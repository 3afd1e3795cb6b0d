//! A TCP load balancer as simple as a real one in front of gateways: round
//! robin over its backends, a backend whose connect is refused (or not
//! answered within a second) skipped for the next one, and then bytes copied
//! both ways. It never retries a request once a backend accepted the
//! connection: a connection cut before any byte of the answer reaches the
//! client as a failure, as with HAProxy or a cloud balancer in TCP mode.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a backend may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections accepted at most in one balancer's life (a bound on its loop).
const MAX_CONNECTIONS: usize = 1_000_000;

/// A running balancer on `127.0.0.1`; stops on drop.
#[derive(Debug)]
pub struct Balancer {
    address: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    accepting: Option<JoinHandle<()>>,
    /// Client connections no backend took (every connect refused).
    pub unplaced: Arc<AtomicUsize>,
    /// Connections placed, by backend.
    placed: Arc<Mutex<std::collections::HashMap<SocketAddr, usize>>>,
}

impl Balancer {
    /// Listens on a free loopback port, balancing over `backends`.
    pub fn start(backends: &[SocketAddr]) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("balancer listens");
        let address = listener.local_addr().expect("balancer address");
        let backends = Arc::new(Mutex::new(backends.to_vec()));
        let stop = Arc::new(AtomicBool::new(false));
        let unplaced = Arc::new(AtomicUsize::new(0));
        let placed = Arc::new(Mutex::new(std::collections::HashMap::new()));
        let accepting = std::thread::spawn({
            let (backends, stop, unplaced) = (backends.clone(), stop.clone(), unplaced.clone());
            let placed = placed.clone();
            move || {
                let next = AtomicUsize::new(0);
                for incoming in listener.incoming().take(MAX_CONNECTIONS) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(client) = incoming else { continue };
                    let list = backends.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let start = next.fetch_add(1, Ordering::Relaxed);
                    let backend = (0..list.len()).find_map(|i| {
                        let address = list[(start + i) % list.len()];
                        let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).ok()?;
                        Some((address, stream))
                    });
                    match backend {
                        Some((address, backend)) => {
                            *placed
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(address)
                                .or_insert(0) += 1;
                            pipe(client, backend);
                        }
                        None => {
                            unplaced.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
        Balancer {
            address,
            backends,
            stop,
            accepting: Some(accepting),
            unplaced,
            placed,
        }
    }

    /// Connections sent to `backend` so far.
    pub fn placed(&self, backend: SocketAddr) -> usize {
        self.placed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&backend)
            .copied()
            .unwrap_or(0)
    }

    /// `http://127.0.0.1:PORT`
    pub fn base(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Adds a backend (a new instance, as a deploy registers it).
    pub fn add(&self, backend: SocketAddr) {
        self.backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(backend);
    }

    /// Removes a backend (an instance gone for good).
    pub fn remove(&self, backend: SocketAddr) {
        self.backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|b| *b != backend);
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect_timeout(&self.address, CONNECT_TIMEOUT);
        if let Some(accepting) = self.accepting.take() {
            let _ = accepting.join();
        }
    }
}

/// Copies bytes both ways until each side has closed its half.
fn pipe(client: TcpStream, backend: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    let (Ok(client_read), Ok(backend_read)) = (client.try_clone(), backend.try_clone()) else {
        return;
    };
    std::thread::spawn(move || copy(client_read, backend));
    std::thread::spawn(move || copy(backend_read, client));
}

/// `from` to `to` until EOF or an error; then the write half of `to` is shut
/// (a reset on `from` is passed on as a close).
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    // Bounded: a connection carries one test request or a few.
    for _ in 0..1_000_000 {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
