//! A TCP proxy on 127.0.0.1 in front of a test server, run on its own
//! tokio runtime inside the test process, that makes the network between
//! client and server misbehave on command:
//!
//! - latency: every chunk of bytes is delivered `latency` after it was read
//!   (a delay line per direction, so throughput is not capped by it);
//! - partition: nothing moves in either direction, and new connections are
//!   accepted but not served, until the partition ends (as when packets are
//!   lost on the way: connections stall, nothing is refused);
//! - cut: every open connection is closed at once, mid-transfer;
//! - down: new connections are closed at once, as by a server that is not
//!   running (open ones are not touched);
//! - busy answers: a share of new connections get an HTTP `503 Slow Down`
//!   instead of reaching the server (for S3).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    latency_us: AtomicU64,
    /// Per mille of new connections answered `503` (HTTP servers only).
    busy_per_mille: AtomicU32,
    down: std::sync::atomic::AtomicBool,
    partitioned: watch::Sender<bool>,
    /// Bumped by every cut; a connection ends when it changes.
    cuts: watch::Sender<u64>,
    accepted: AtomicU64,
    busy_answers: AtomicU64,
    seed: AtomicU64,
}

/// A misbehaving TCP proxy; stopped when dropped.
pub struct Proxy {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// A proxy to `127.0.0.1:target_port`.
    pub fn start(target_port: u16) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-proxy")
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the proxy on 127.0.0.1");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            target: SocketAddr::from(([127, 0, 0, 1], target_port)),
            latency_us: AtomicU64::new(0),
            busy_per_mille: AtomicU32::new(0),
            down: std::sync::atomic::AtomicBool::new(false),
            partitioned: watch::channel(false).0,
            cuts: watch::channel(0).0,
            accepted: AtomicU64::new(0),
            busy_answers: AtomicU64::new(0),
            seed: AtomicU64::new(0x5eed_cafe),
        });
        let s = shared.clone();
        runtime.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                s.accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(s.clone(), client));
            }
        });
        Proxy {
            port,
            shared,
            runtime: Some(runtime),
        }
    }

    /// Delays every byte by `latency`, each way.
    pub fn set_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.shared.latency_us.store(us, Ordering::SeqCst);
    }

    /// Starts (`true`) or ends a partition.
    pub fn set_partitioned(&self, on: bool) {
        self.shared.partitioned.send_replace(on);
    }

    /// Whether a partition is on.
    pub fn partitioned(&self) -> bool {
        *self.shared.partitioned.borrow()
    }

    /// Closes every open connection at once, mid-transfer.
    pub fn cut(&self) {
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    /// Closes new connections at once while `down` holds.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Answers `per_mille`/1000 of new connections with HTTP 503.
    pub fn set_busy(&self, per_mille: u32) {
        self.shared
            .busy_per_mille
            .store(per_mille.min(1000), Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// 503 answers given so far.
    pub fn busy_answers(&self) -> u64 {
        self.shared.busy_answers.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Waits while the partition is on.
async fn through_partition(rx: &mut watch::Receiver<bool>) {
    while *rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl Shared {
    /// A deterministic draw in 0..1000 (splitmix64 over a counter).
    fn draw(&self) -> u32 {
        let mut z = self
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        u32::try_from((z ^ (z >> 31)) % 1000).unwrap_or(0)
    }
}

async fn serve(s: Arc<Shared>, client: TcpStream) {
    let mut cuts = s.cuts.subscribe();
    cuts.borrow_and_update();
    let mut part = s.partitioned.subscribe();
    let _ = client.set_nodelay(true);
    let work = async {
        through_partition(&mut part).await;
        if s.down.load(Ordering::SeqCst) {
            return;
        }
        let busy = s.busy_per_mille.load(Ordering::SeqCst);
        if busy > 0 && s.draw() < busy {
            s.busy_answers.fetch_add(1, Ordering::Relaxed);
            answer_busy(client).await;
            return;
        }
        let Ok(server) = TcpStream::connect(s.target).await else {
            return;
        };
        let _ = server.set_nodelay(true);
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        // Each direction ends by itself (a half-closed connection still
        // carries the answer back).
        tokio::join!(pump(s.clone(), cr, sw), pump(s.clone(), sr, cw));
    };
    tokio::select! {
        _ = work => {}
        _ = cuts.changed() => {
            // The sockets are dropped mid-transfer: the peers see the
            // connection end (reset when unread data was pending).
        }
    }
}

/// Reads the request head, then answers `503 Slow Down` and closes.
async fn answer_busy(mut client: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > 65536 {
            return;
        }
        match tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    };
    // Read the body too, so the client gets the answer rather than a reset
    // for closing on unread data.
    let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    let length: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut left = length.saturating_sub(head.len() - end);
    while left > 0 {
        match tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                <Message>Please reduce your request rate.</Message></Error>";
    let answer = format!(
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(answer.as_bytes()).await;
    let _ = client.shutdown().await;
}

/// Copies one direction through a delay line that honours latency and
/// partitions.
async fn pump(
    s: Arc<Shared>,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let reader = {
        let s = s.clone();
        async move {
            let mut part = s.partitioned.subscribe();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                through_partition(&mut part).await;
                let n = match from.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let due =
                    Instant::now() + Duration::from_micros(s.latency_us.load(Ordering::Relaxed));
                if tx.send((due, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    };
    let writer = async move {
        let mut part = s.partitioned.subscribe();
        while let Some((due, data)) = rx.recv().await {
            tokio::time::sleep_until(due.into()).await;
            through_partition(&mut part).await;
            if to.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::pin!(writer);
    tokio::select! {
        // The reader saw the end: deliver what is queued, then pass the
        // end on.
        _ = reader => writer.await,
        // The writer failed: drop both halves.
        _ = &mut writer => {}
    }
}
