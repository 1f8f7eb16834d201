//! Serving a router on a listener with bounded connections (axum's `serve` has no
//! timeouts and no cap): every connection an outsider opens costs a file
//! descriptor and memory until it is closed, so each one is closed when it idles or
//! dribbles, and at most [`ConnectionLimits::max_connections`] are open at once.
//!
//! - HTTP/1: hyper's header-read timer runs from the moment a connection waits for
//!   a request (right after accept, and after each response) until the request's
//!   headers are complete, so it bounds both a half-sent header and an idle
//!   keep-alive connection.
//! - Both protocols: a connection with no request in flight that has read nothing
//!   for [`ConnectionLimits::idle_timeout`] is shut down gracefully (HTTP/2 has no
//!   header timer), and dropped if it does not finish within
//!   [`ConnectionLimits::header_read_timeout`] more (a peer that stops reading).
//! - Request bodies must arrive within [`ConnectionLimits::body_read_timeout`] of the
//!   request's start; after it, reading the body fails (the endpoint answers 400).
//! - HTTP/2: at most [`ConnectionLimits::max_h2_streams`] concurrent streams per
//!   connection, and hyper's cap on streams reset before being accepted.
//! - Beyond the cap, new connections wait in the kernel's accept queue (they cost
//!   us nothing there) until a slot frees; a warning is logged at most once a minute.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::tls::LiveAcceptor;
use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::ConnectInfo;
use axum::response::Response;
use bytes::Bytes;
use http::Request;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;

/// What a connection may cost; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
    pub max_h2_streams: u32,
    /// After a shutdown begins, how long requests in flight may take before
    /// their connections are closed anyway (`web.drainTimeout`).
    pub drain_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// Sized for an identity provider behind a reverse proxy: requests are small
    /// (forms, JSON), so honest clients and proxies need far less than these.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(10),
            // Well under the usual 1,024 soft file-descriptor limit, leaving room for
            // SQLite, upstream connections and the telemetry listener.
            max_connections: 768,
            max_h2_streams: 100,
            drain_timeout: crate::config::settings::DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// How often the "connection cap reached" warning may repeat.
const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(60);
/// Pause after a failed `accept` (e.g. out of file descriptors) before retrying.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// One listener: plain HTTP, or HTTPS when `tls` is set.
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<LiveAcceptor>,
}

impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Self {
        Self { tcp, tls: None }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting,
/// lets open connections finish their requests (at most
/// [`ConnectionLimits::drain_timeout`] longer) and waits for them.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve_all(vec![listener.into()], app, limits, shutdown).await;
}

/// What every listener of one [`serve_all`] shares: the connection cap counts
/// their connections together.
struct Shared {
    builder: auto::Builder<TokioExecutor>,
    app: Router,
    limits: ConnectionLimits,
    slots: Arc<Semaphore>,
}

/// [`serve`] on several listeners at once (`web.http` and `web.https`): one
/// connection cap, one shutdown, the same limits and drain on each. On HTTPS
/// listeners the TLS handshake must finish within
/// [`ConnectionLimits::header_read_timeout`], like a request's headers.
pub async fn serve_all(
    listeners: Vec<Listener>,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_h2_streams)
        .max_pending_accept_reset_streams(Some(20))
        // No keep-alive pings: a peer's answers would count as activity and keep
        // an idle connection open for ever; the idle timeout finds dead peers.
        .keep_alive_interval(None);
    let shared = Arc::new(Shared {
        builder,
        app,
        limits,
        slots: Arc::new(Semaphore::new(limits.max_connections)),
    });
    // Dropped (the future cancelled) counts as stop too.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::channel::<Infallible>(1);
    for listener in listeners {
        tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            stop_rx.clone(),
            done_tx.clone(),
        ));
    }
    drop(done_tx);
    shutdown.await;
    stop_tx.send_replace(true);
    // Completes when every accept loop and connection task has dropped its sender.
    let _ = done_rx.recv().await;
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    done: mpsc::Sender<Infallible>,
) {
    let limits = shared.limits;
    let mut last_cap_warning: Option<Instant> = None;
    loop {
        let slot = match shared.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if last_cap_warning.is_none_or(|at| at.elapsed() >= CAP_WARNING_INTERVAL) {
                    last_cap_warning = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached; new connections wait until one closes"
                    );
                }
                tokio::select! {
                    slot = shared.slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = stopped(&mut stop) => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            shared: shared.clone(),
            peer,
        };
        let tls = listener.tls.clone();
        let stop = stop.clone();
        let done = done.clone();
        tokio::spawn(async move {
            connection.start(stream, tls, stop).await;
            drop(slot);
            drop(done);
        });
    }
}

struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
}

impl Connection {
    async fn start(
        self,
        stream: TcpStream,
        tls: Option<LiveAcceptor>,
        mut stop: watch::Receiver<bool>,
    ) {
        let activity = Arc::new(Activity::default());
        let tracked = Tracked {
            inner: stream,
            activity: activity.clone(),
        };
        let Some(tls) = tls else {
            return self.run(tracked, activity, stop).await;
        };
        let timeout = self.shared.limits.header_read_timeout;
        let handshake = tokio::time::timeout(timeout, tls.current().accept(tracked));
        let stream = tokio::select! {
            finished = handshake => match finished {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(peer = %self.peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                    return;
                }
            },
            () = stopped(&mut stop) => return,
        };
        self.run(stream, activity, stop).await;
    }

    async fn run<S>(self, stream: S, activity: Arc<Activity>, mut stop: watch::Receiver<bool>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limits = self.shared.limits;
        let io = TokioIo::new(stream);
        let service = RequestService {
            app: self.shared.app.clone(),
            peer: self.peer,
            body_timeout: limits.body_read_timeout,
            activity: activity.clone(),
        };
        let service = hyper_util::service::TowerToHyperService::new(service);
        let conn = self
            .shared
            .builder
            .serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        let idle = limits.idle_timeout;
        let mut closing = false;
        // Set when an idle connection is being closed: it must be gone by then.
        let mut hard_deadline: Option<Instant> = None;
        let mut next_check = activity.last_read() + idle;
        loop {
            tokio::select! {
                _ = conn.as_mut() => return,
                () = stopped(&mut stop), if !closing => {
                    // Process shutdown: the requests in flight finish first,
                    // within the drain timeout.
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                    hard_deadline = Some(Instant::now() + limits.drain_timeout);
                }
                () = tokio::time::sleep_until(next_check), if !closing => {
                    let quiet_until = activity.last_read() + idle;
                    let now = Instant::now();
                    if activity.in_flight() > 0 {
                        // A slow request is not idleness; look again later.
                        next_check = now + idle;
                    } else if quiet_until > now {
                        next_check = quiet_until;
                    } else {
                        tracing::debug!(peer = %self.peer, "closing an idle connection");
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                        hard_deadline = Some(now + limits.header_read_timeout);
                    }
                }
                () = sleep_until_opt(hard_deadline) => {
                    if activity.in_flight() > 0 {
                        tracing::warn!(
                            peer = %self.peer,
                            "closing a connection whose request outlived the shutdown drain \
                             timeout (web.drainTimeout)"
                        );
                    } else {
                        tracing::debug!(peer = %self.peer, "dropping a connection that did not close");
                    }
                    return;
                }
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// When the connection last read bytes, and how many requests are in flight.
struct Activity {
    origin: Instant,
    last_read_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last_read_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_read_ms.store(ms, Ordering::Relaxed);
    }

    fn last_read(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_read_ms.load(Ordering::Relaxed))
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A request in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The socket, noting when bytes were read.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

/// The router for one connection: adds the peer address (`ConnectInfo`, as
/// axum's `serve` does), the body deadline, and in-flight accounting.
#[derive(Clone)]
struct RequestService {
    app: Router,
    peer: SocketAddr,
    body_timeout: Duration,
    activity: Arc<Activity>,
}

impl tower::Service<Request<Incoming>> for RequestService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let guard = InFlight::new(self.activity.clone());
        let deadline = Instant::now() + self.body_timeout;
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(ConnectInfo(self.peer));
        let request = Request::from_parts(parts, Body::new(DeadlineBody::new(body, deadline)));
        let mut app = self.app.clone();
        Box::pin(async move {
            let response = tower::Service::call(&mut app, request).await;
            drop(guard);
            response
        })
    }
}

/// A request body that fails once its deadline has passed. The timer is only
/// made when the body is read (most requests have none).
struct DeadlineBody {
    inner: Incoming,
    deadline: Instant,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, deadline: Instant) -> Self {
        Self {
            inner,
            deadline,
            sleep: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the request body was not received in time")]
    TimedOut,
    #[error(transparent)]
    Read(#[from] hyper::Error),
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BodyError::from)));
        }
        let deadline = self.deadline;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::TimedOut))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
