//! Serves the API over HTTP/1.1 with limits no client can outwait, so that
//! connections which send a little and then nothing cannot use up the
//! descriptors the store, the scheduler and connector calls need to revoke
//! grants on time.
//!
//! `axum::serve` has no header timeout and no connection cap, so this is its
//! own accept loop around hyper: a request's head must arrive within
//! `header_timeout` (which also ends idle keep-alive connections), its body
//! within `body_timeout` (enforced where the body is read, in
//! `http::ApiJson`), a connection on which nothing moves while no request is
//! being handled is closed after `idle_timeout`, and at most a capped number
//! of connections are served at once: the next one is answered 503 and
//! closed at once rather than left waiting in the backlog.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::config::HttpLimits;
use crate::engine::MAX_CONCURRENT_CALLS;

/// Descriptors kept out of the API's reach: every connector call in flight
/// may hold a child's pipes or a socket (a few each, more while a process
/// starts), plus the store's pools, the database files, the listener, logs
/// and the runtime's own.
pub const RESERVED_DESCRIPTORS: u64 = 4 * MAX_CONCURRENT_CALLS as u64 + 128;

/// How long shutdown waits for connections still answering a request.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// The pause after an accept that failed for want of resources: the error
/// repeats until something is freed, and must not spin or flood the log.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a connection over the cap is told before it is closed.
const BUSY_BODY: &str =
    r#"{"error":{"code":"unavailable","message":"too many connections; retry shortly"}}"#;

/// Raises this process's soft limit on open descriptors to its hard limit,
/// and returns the soft limit now in force (`None`: unlimited). A limit that
/// cannot be raised is logged and kept.
pub fn raise_descriptor_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let before = getrlimit(Resource::Nofile);
    if before.current != before.maximum {
        let raised = Rlimit {
            current: before.maximum,
            maximum: before.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            warn!(error = %e, soft = ?before.current, hard = ?before.maximum,
                "cannot raise the open file limit; keeping it");
        }
    }
    let now = getrlimit(Resource::Nofile).current;
    info!(open_files = ?now, "open file limit");
    now
}

/// How many connections the API may serve at once: the configured cap, cut
/// to what the descriptor limit leaves once [`RESERVED_DESCRIPTORS`] are set
/// aside for revocations and everything else the server does.
pub fn connection_cap(configured: u32, open_files: Option<u64>) -> usize {
    let configured = usize::try_from(configured).unwrap_or(usize::MAX);
    let Some(limit) = open_files else {
        return configured;
    };
    let room = if limit > RESERVED_DESCRIPTORS + 64 {
        limit - RESERVED_DESCRIPTORS
    } else {
        // Too few to keep the reserve whole: give the API a quarter and
        // say so, rather than refuse to start.
        warn!(
            open_files = limit,
            reserved = RESERVED_DESCRIPTORS,
            "the open file limit is too low to keep descriptors for connector calls; raise it"
        );
        (limit / 4).max(1)
    };
    let cap = configured.min(usize::try_from(room).unwrap_or(usize::MAX));
    if cap < configured {
        warn!(
            configured,
            cap, "server.max_connections lowered to fit the open file limit"
        );
    }
    cap
}

/// Accepts and serves connections until `shutdown` turns true, then lets
/// those answering a request finish (for at most [`SHUTDOWN_DRAIN`]).
/// Returns an error only when the listener itself fails.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    cap: usize,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(cap));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let busy = busy_response();
    let mut full = false;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopping(&mut shutdown) => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) if is_transient(&e) => {
                warn!(error = %e, "cannot accept a connection; retrying shortly");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if !full {
                warn!(
                    cap,
                    "connection cap reached; answering 503 until some close"
                );
                full = true;
            }
            // Best effort and never blocking: a fresh socket's send buffer
            // takes this whole, and the close frees the descriptor at once.
            let _ = stream.try_write(&busy);
            continue;
        };
        full = false;
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            http: http.clone(),
            router: router.clone(),
            idle_timeout: limits.idle_timeout,
            shutdown: shutdown.clone(),
        };
        tokio::spawn(async move {
            connection.run(stream).await;
            drop(slot);
        });
    }
    drop(listener);
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_DRAIN, slots.acquire_many(all))
        .await
        .is_err()
    {
        warn!(
            open = cap.saturating_sub(slots.available_permits()),
            "connections still open at shutdown are dropped"
        );
    }
    Ok(())
}

async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: keep it inside.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Accept errors that say "not now" (out of descriptors or memory, a peer
/// that gave up) rather than "this listener is broken".
fn is_transient(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
    ) || matches!(
        Errno::from_io_error(e),
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM | Errno::PROTO)
    )
}

fn busy_response() -> Vec<u8> {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BUSY_BODY}",
        BUSY_BODY.len()
    )
    .into_bytes()
}

/// One accepted connection and what it needs to be served.
struct Connection {
    http: hyper::server::conn::http1::Builder,
    router: Router,
    idle_timeout: Duration,
    shutdown: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, stream: TcpStream) {
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: Arc::clone(&activity),
        });
        let router = self.router;
        let handling = Arc::clone(&activity);
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let busy = Busy::start(&handling);
            let router = router.clone();
            async move {
                let response = router.oneshot(request.map(axum::body::Body::new)).await;
                drop(busy);
                response
            }
        });
        let connection = self.http.serve_connection(io, service);
        tokio::pin!(connection);
        let mut draining = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        debug!(error = %e, "connection ended");
                    }
                    return;
                }
                () = stopping(&mut self.shutdown), if !draining => {
                    connection.as_mut().graceful_shutdown();
                    draining = true;
                }
                () = activity.idle_for(self.idle_timeout) => {
                    debug!(idle = ?self.idle_timeout, "closing an idle connection");
                    return;
                }
            }
        }
    }
}

/// When bytes last moved on a connection, and how many of its requests are
/// being handled: a connection is idle only while none is.
struct Activity {
    opened: Instant,
    /// Milliseconds after `opened`.
    last_progress: AtomicU64,
    handling: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            last_progress: AtomicU64::new(0),
            handling: AtomicUsize::new(0),
        }
    }

    fn progressed(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_progress.store(ms, Ordering::Relaxed);
    }

    fn last_progress(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_progress.load(Ordering::Relaxed))
    }

    /// Returns once nothing has moved for `limit` while no request was
    /// being handled.
    async fn idle_for(&self, limit: Duration) {
        let mut from = self.last_progress();
        loop {
            tokio::time::sleep_until(from + limit).await;
            let last = self.last_progress();
            if self.handling.load(Ordering::Relaxed) > 0 {
                // A handler's own time is not the client's: look again once
                // it has had `limit` more (its end counts as progress).
                from = Instant::now();
            } else if last + limit <= Instant::now() {
                return;
            } else {
                from = last;
            }
        }
    }
}

/// Marks a request as being handled until dropped (also when the handler
/// is dropped half-way because the connection closed).
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.handling.fetch_add(1, Ordering::Relaxed);
        Busy(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
        self.0.progressed();
    }
}

/// A socket that records when bytes last moved through it.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.progressed();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.progressed();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.progressed();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve_to_revocations() {
        assert_eq!(connection_cap(4096, None), 4096);
        assert_eq!(connection_cap(4096, Some(1_048_576)), 4096);
        let limit = RESERVED_DESCRIPTORS + 1000;
        assert_eq!(connection_cap(4096, Some(limit)), 1000);
        // Below the reserve: a quarter, never zero.
        assert_eq!(connection_cap(4096, Some(400)), 100);
        assert_eq!(connection_cap(4096, Some(2)), 1);
    }

    #[test]
    fn the_busy_answer_is_a_complete_response() {
        let text = String::from_utf8(busy_response()).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }
}
