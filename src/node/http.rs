//! The node's HTTP server: accepts TCP connections and serves the API's
//! router on each with hyper's HTTP/1, guarded against clients that hold
//! connections open without finishing a request.
//!
//! - A client has [`HEADER_READ_TIMEOUT`] to send a request's headers, on a
//!   new connection and between requests on a kept-alive one; then the
//!   connection is closed. A client sending one byte a second cannot hold a
//!   connection (nor anything else) for longer.
//! - At most [`MAX_CONNECTIONS`] connections are served at once; further
//!   ones wait in the listen backlog until one closes.
//! - Every request carries the client's address as
//!   `ConnectInfo<SocketAddr>`, for the API's LAN guard.
//! - On shutdown no new connection is accepted; open ones finish their
//!   request in flight (for at most [`SHUTDOWN_GRACE`]) and close.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Longest a client may take to send a request's headers. Generous for any
/// real client on a LAN (they send them in one write); short enough that
/// idle or trickling connections do not pile up.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 4096;

/// Longest the server waits on shutdown for open connections to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, router: Router, stop: CancellationToken) {
    raise_open_files_limit();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = stop.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_failed(&err).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!("connection from {peer} ended: {err}");
            }
            drop(permit);
        });
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!(
            "connections still open {} s after shutdown: closed",
            SHUTDOWN_GRACE.as_secs()
        );
    }
}

/// Raises this process's soft limit of open files to its hard limit, so
/// that [`MAX_CONNECTIONS`] connections fit beside Blender's pipes and the
/// node's files (many systems start processes at 1024). Returns the soft
/// limit now in force, if it could be read.
pub fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        if limit.current.is_some() && limit.current != limit.maximum {
            let raised = Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            if let Err(err) = setrlimit(Resource::Nofile, raised) {
                tracing::debug!("cannot raise the open files limit: {err}");
            }
        }
        getrlimit(Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Waits after a failed accept: not at all when only that connection failed,
/// a moment when the process is out of file descriptors (the connections
/// being served free some).
async fn accept_failed(err: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::warn!("cannot accept a connection: {err}; trying again in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
