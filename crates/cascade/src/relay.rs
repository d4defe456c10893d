//! TCP relays on 127.0.0.1 between a child and its parent: one that counts
//! the bytes the parent sends, and one that also injects faults (delays and
//! cut connections, drawn from a seed so that a failing run can be run
//! again). For benchmarks and fault tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the fault relay does to each connection.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Every draw comes from this seed (and the connection's number).
    pub seed: u64,
    /// The chance that a chunk from the parent is held back before it goes on.
    pub delay_chance: f64,
    /// The longest a chunk is held back.
    pub max_delay: Duration,
    /// The chance that a connection is cut.
    pub cut_chance: f64,
    /// A cut connection is closed (both ways) once the parent has sent a
    /// number of bytes drawn from this range.
    pub cut_after: std::ops::Range<u64>,
}

/// A running relay; it stops when dropped.
#[derive(Debug)]
pub struct Relay {
    /// Where the child connects.
    pub addr: String,
    /// Bytes the parent sent through the relay.
    pub down_bytes: Arc<AtomicU64>,
    /// Connections accepted.
    pub connections: Arc<AtomicU64>,
    /// Connections the relay cut.
    pub cuts: Arc<AtomicU64>,
    /// While true, the link is down: connections are closed and new ones
    /// refused.
    down: tokio::sync::watch::Sender<bool>,
    /// While true, connections stay open and nothing passes either way (a
    /// link that hangs).
    frozen: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Takes the link down (closing every connection and refusing new
    /// ones) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }

    /// Holds everything on every connection (which stay open), or lets it
    /// pass again.
    pub fn set_frozen(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Relays 127.0.0.1 connections to `upstream`, counting the bytes that come
/// back, with `faults` when given.
pub async fn start(upstream: String, faults: Option<Faults>) -> std::io::Result<Relay> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let down_bytes = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    let cuts = Arc::new(AtomicU64::new(0));
    let (bytes, accepted, cut) = (down_bytes.clone(), connections.clone(), cuts.clone());
    let (down, is_down) = tokio::sync::watch::channel(false);
    let (frozen, is_frozen) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        while let Ok((inbound, _)) = listener.accept().await {
            if *is_down.borrow() {
                continue;
            }
            let n = accepted.fetch_add(1, Ordering::Relaxed);
            let Ok(outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let plan = faults.as_ref().map(|f| Plan::draw(f, n));
            let (bytes, cut) = (bytes.clone(), cut.clone());
            tasks.spawn(relay_one(
                inbound,
                outbound,
                plan,
                bytes,
                cut,
                is_down.clone(),
                is_frozen.clone(),
            ));
            // Finished connections are reaped as new ones come.
            while tasks.try_join_next().is_some() {}
        }
    });
    Ok(Relay {
        addr,
        down_bytes,
        connections,
        cuts,
        down,
        frozen,
        task,
    })
}

/// The faults of one connection.
struct Plan {
    rng: rand::rngs::StdRng,
    delay_chance: f64,
    max_delay: Duration,
    cut_at: Option<u64>,
}

impl Plan {
    fn draw(faults: &Faults, connection: u64) -> Plan {
        let mut rng = rand::rngs::StdRng::seed_from_u64(faults.seed ^ connection.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let cut_at = (rng.random_bool(faults.cut_chance.clamp(0.0, 1.0)) && !faults.cut_after.is_empty())
            .then(|| rng.random_range(faults.cut_after.clone()));
        Plan {
            rng,
            delay_chance: faults.delay_chance.clamp(0.0, 1.0),
            max_delay: faults.max_delay,
            cut_at,
        }
    }
}

async fn relay_one(
    inbound: tokio::net::TcpStream,
    outbound: tokio::net::TcpStream,
    mut plan: Option<Plan>,
    bytes: Arc<AtomicU64>,
    cuts: Arc<AtomicU64>,
    mut down: tokio::sync::watch::Receiver<bool>,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    let (mut ri, mut wi) = inbound.into_split();
    let (mut ro, mut wo) = outbound.into_split();
    let mut up_frozen = frozen.clone();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if up_frozen.wait_for(|f| !*f).await.is_err() {
                break;
            }
            let n = match ri.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // What arrived while frozen waits until the link thaws.
            if up_frozen.wait_for(|f| !*f).await.is_err() || wo.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    loop {
        let read = tokio::select! {
            read = ro.read(&mut buf) => read,
            _ = down.wait_for(|down| *down) => break,
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() {
            break;
        }
        let mut n = n;
        if let Some(plan) = plan.as_mut() {
            if let Some(at) = plan.cut_at
                && sent + n as u64 >= at
            {
                n = (at - sent) as usize;
                let _ = wi.write_all(&buf[..n]).await;
                bytes.fetch_add(n as u64, Ordering::Relaxed);
                cuts.fetch_add(1, Ordering::Relaxed);
                break;
            }
            if plan.delay_chance > 0.0 && plan.rng.random_bool(plan.delay_chance) {
                let wait = plan.rng.random_range(0..=plan.max_delay.as_millis() as u64);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }
        if wi.write_all(&buf[..n]).await.is_err() {
            break;
        }
        sent += n as u64;
        bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    // Either side gone (or cut): both directions close.
    up.abort();
    let _ = wi.shutdown().await;
}
