//! The connections of the node's listeners (gRPC and the API), bounded:
//! at most `max` at once per listener, below the process's open-file
//! limit, and a connection that stays silent too long is closed (sooner
//! when it presented no client certificate). At the cap a new connection
//! is taken all the same and the oldest one without a client certificate
//! (else the oldest of all) is closed for it, so silent connections cannot
//! keep an admin out, and the accept loop never waits.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// The connections of one listener.
#[derive(Debug)]
pub struct Connections {
    pub name: &'static str,
    pub max: usize,
    idle: Duration,
    live: Mutex<BTreeMap<u64, Live>>,
    next: AtomicU64,
    evicted: AtomicU64,
}

#[derive(Debug)]
struct Live {
    certified: Arc<AtomicBool>,
    close: Arc<Notify>,
}

/// One connection's place: dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    connections: Arc<Connections>,
    id: u64,
    certified: Arc<AtomicBool>,
    close: Arc<Notify>,
}

impl Slot {
    /// The connection presented a verified client certificate: it gets
    /// the full idle time and is evicted only after every uncertified one.
    pub fn certified(&self) {
        self.certified.store(true, Ordering::Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Connections {
    pub fn new(name: &'static str, max: usize, idle: Duration) -> Arc<Connections> {
        Arc::new(Connections {
            name,
            max: max.max(1),
            idle,
            live: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Connections closed to make room since the start.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// A place for a connection just accepted, making room if needed.
    pub fn admit(self: &Arc<Self>) -> Slot {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        while live.len() >= self.max {
            // Ids grow with time: the first match is the oldest.
            let victim = live
                .iter()
                .find(|(_, l)| !l.certified.load(Ordering::Relaxed))
                .or_else(|| live.iter().next())
                .map(|(id, _)| *id);
            let Some(victim) = victim else { break };
            if let Some(l) = live.remove(&victim) {
                l.close.notify_one();
                self.evicted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(listener = self.name, "connection closed to make room");
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let certified = Arc::new(AtomicBool::new(false));
        let close = Arc::new(Notify::new());
        live.insert(
            id,
            Live {
                certified: certified.clone(),
                close: close.clone(),
            },
        );
        Slot {
            connections: self.clone(),
            id,
            certified,
            close,
        }
    }

    /// How long a connection may stay silent.
    fn idle_for(&self, certified: bool) -> Duration {
        if certified { self.idle } else { self.idle / 10 }
    }
}

/// A connection's stream, closed (reads fail) when it has been silent too
/// long or was evicted; it holds the connection's place until dropped.
#[derive(Debug)]
pub struct Bounded<S> {
    inner: S,
    slot: Slot,
    closed: Pin<Box<tokio::sync::futures::OwnedNotified>>,
    silence: Pin<Box<tokio::time::Sleep>>,
}

impl<S> Bounded<S> {
    pub fn new(inner: S, slot: Slot) -> Bounded<S> {
        let closed = Box::pin(slot.close.clone().notified_owned());
        let silence = Box::pin(tokio::time::sleep(slot.connections.idle_for(false)));
        Bounded {
            inner,
            slot,
            closed,
            silence,
        }
    }

    pub fn slot(&self) -> &Slot {
        &self.slot
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                format!("closed to make room on the {} listener", this.slot.connections.name),
            )));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let idle = this
                        .slot
                        .connections
                        .idle_for(this.slot.certified.load(Ordering::Relaxed));
                    this.silence.as_mut().reset(tokio::time::Instant::now() + idle);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if this.silence.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the connection was silent too long",
                    )));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Bounded<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The process's limit of open files (the soft one), where the system
/// says; Linux tells it in /proc/self/limits.
pub fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.trim_start_matches("Max open files").split_whitespace().next()?;
    if soft == "unlimited" {
        return Some(usize::MAX);
    }
    soft.parse().ok()
}

/// Connections per listener unless configured: a third of the open-file
/// limit each, so that the two listeners together leave a third for the
/// store, content files and links.
pub fn default_max_connections() -> usize {
    open_file_limit().map_or(1024, |n| (n / 3).clamp(8, 100_000))
}

/// The connection limits of a node's two listeners.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: Arc<Connections>,
    pub api: Arc<Connections>,
}

impl Listeners {
    pub fn new(limits: &crate::config::LimitsConfig) -> Listeners {
        let max = limits.max_connections.unwrap_or_else(default_max_connections);
        let idle = Duration::from_secs(limits.idle_seconds);
        Listeners {
            grpc: Connections::new("grpc", max, idle),
            api: Connections::new("api", max, idle),
        }
    }

    /// For node.status.
    pub fn status(&self) -> ListenersStatus {
        let one = |c: &Connections| ConnectionsStatus {
            open: c.open(),
            max: c.max,
            evicted: c.evicted(),
            idle_seconds: c.idle.as_secs(),
        };
        ListenersStatus {
            grpc: one(&self.grpc),
            api: one(&self.api),
            open_file_limit: open_file_limit(),
        }
    }
}

/// The connections of both listeners, and the process's open-file limit.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct ListenersStatus {
    pub grpc: ConnectionsStatus,
    pub api: ConnectionsStatus,
    pub open_file_limit: Option<usize>,
}

/// One listener's connections.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct ConnectionsStatus {
    pub open: usize,
    pub max: usize,
    /// Connections closed to make room or for idling.
    pub evicted: u64,
    pub idle_seconds: u64,
}
