//! The accept loop under [`crate::serve`]: plain TCP or TLS (rustls, `--tls-cert/--tls-key`),
//! HTTP/1.1 with upgrades (the agents' WebSocket), a deadline for a request's headers (and for
//! the TLS handshake), a cap on open connections per client IP, and a graceful shutdown that
//! stops accepting, lets the caller end every session, then waits for the connections to close.
//! `axum::serve` exposes none of these limits, hence this file. No routing here.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::io_with::{ReadThrough, With};

/// What the accept loop enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request's headers (the first one's, and each next one's on a kept-alive connection)
    /// must arrive within this time, and a TLS handshake must finish within it.
    pub header_timeout: Duration,
    /// Most open connections (WebSockets and event streams included) per client IP; 0 = none.
    pub max_conns_per_ip: usize,
    /// Serve TLS with this configuration instead of plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Open connections per client IP.
#[derive(Debug, Default)]
struct PerIp {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    /// Unix seconds of the last "over the cap" warning (one per 10 s at most).
    last_warned: AtomicU64,
}

/// The key a client's connections are counted under: its IPv4 address, or the /64 of its IPv6
/// address (one host usually holds a whole /64, so counting single addresses would not cap it).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

impl PerIp {
    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        if self.max == 0 {
            return Some(Slot(None));
        }
        let ip = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot(Some((self.clone(), ip))))
    }
}

/// One counted connection; gives its place back when dropped (with the socket: a WebSocket
/// keeps it after the HTTP exchange is over).
struct Slot(Option<(Arc<PerIp>, IpAddr)>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((per_ip, ip)) = self.0.take() {
            let mut open = per_ip.open.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = open.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}

/// A connection slot is held by its socket ([`With`]), which reads straight through.
impl ReadThrough for Slot {}

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting, runs
/// `on_shutdown` (which ends the sessions, so event streams and agent sockets close), asks every
/// connection to finish its request, and returns once all are closed.
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_shutdown: impl FnOnce() + Send + 'static,
) -> io::Result<()> {
    let per_ip = Arc::new(PerIp {
        max: limits.max_conns_per_ip,
        ..PerIp::default()
    });
    let tls = limits.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a sender; all dropped = all closed.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    warn!(error = %e, "accept failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let Some(slot) = per_ip.acquire(peer.ip()) else {
            warn_over_cap(&per_ip, peer.ip());
            drop(tcp);
            continue;
        };
        // Events and candidates are small writes that must leave at once: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let stop = stop_rx.clone();
        let done = done_tx.clone();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let _done = done;
            match tls {
                None => {
                    let io = With {
                        io: tcp,
                        attached: slot,
                    };
                    serve_connection(io, peer, app, header_timeout, stop).await;
                }
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let io = With {
                                io: stream,
                                attached: slot,
                            };
                            serve_connection(io, peer, app, header_timeout, stop).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    on_shutdown();
    let _ = stop_tx.send(true);
    drop(done_tx);
    let _ = done_rx.recv().await;
    Ok(())
}

/// One HTTP/1.1 connection (with upgrades) until it closes or the server stops.
async fn serve_connection<IO>(
    io: IO,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        // Handlers read the client's address from here, for rate limits and logs.
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                debug!(%peer, error = %e, "connection closed with an error");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        debug!(%peer, error = %e, "connection closed with an error during shutdown");
    }
}

fn warn_over_cap(per_ip: &PerIp, ip: IpAddr) {
    let now = crate::viewer_token::unix_now();
    let last = per_ip.last_warned.load(Ordering::Relaxed);
    if now >= last + 10
        && per_ip
            .last_warned
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        warn!(
            %ip,
            max = per_ip.max,
            "connection refused: this IP already has --max-conns-per-ip connections open \
             (logged once per 10 s)"
        );
    } else {
        debug!(%ip, "connection refused: over --max-conns-per-ip");
    }
}

/// Errors of one incoming connection (it was reset before we took it), not of the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an IP address")
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_v4_as_v4() {
        assert_eq!(client_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        let per_ip = Arc::new(PerIp {
            max: 2,
            ..PerIp::default()
        });
        let a = per_ip.acquire(ip("2001:db8:1:2::1")).expect("first");
        let _b = per_ip.acquire(ip("2001:db8:1:2::2")).expect("second");
        assert!(per_ip.acquire(ip("2001:db8:1:2::3")).is_none(), "same /64");
        assert!(
            per_ip.acquire(ip("2001:db8:1:3::1")).is_some(),
            "another /64"
        );
        drop(a);
        assert!(
            per_ip.acquire(ip("2001:db8:1:2::3")).is_some(),
            "a place freed"
        );
    }
}
