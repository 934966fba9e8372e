//! Latency and loss on the component's connection, in user space: a TCP
//! relay between the component and each of the server's component ports.
//!
//! `tc netem` inside a network namespace of the soak's own would do this in
//! the kernel, but the machines this runs on have kernels without queueing
//! disciplines (`tc qdisc add dev lo root netem ...`: "Specified qdisc kind
//! is unknown", and no modules to load). So the relay holds every chunk it
//! reads for the delay asked, and for a share of them (the loss asked) a
//! further 200-1000 ms: what a lost segment costs a TCP connection, which
//! retransmits it (the minimum retransmission timeout is 200 ms). Order is
//! kept, as TCP keeps it. A side that closes or fails is closed on the other
//! side too: a cut of the server's side (`ss -K`) reaches the component.

use crate::lock;
use crate::sim::Rng;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How the relay treats what passes now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Impair {
    /// Added to every chunk, each way.
    pub delay: Duration,
    /// The share of chunks held a further 200-1000 ms (0.0-1.0).
    pub loss: f64,
}

/// The relays of one soak: one listening port per upstream address.
pub struct Lag {
    /// (relay address, upstream address), in the order given.
    pub routes: Vec<(SocketAddr, SocketAddr)>,
    control: watch::Sender<Impair>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Lag {
    /// A relay on a free loopback port for each of `upstreams`.
    pub async fn start(upstreams: &[SocketAddr], seed: u64) -> anyhow::Result<Lag> {
        let (control, rx) = watch::channel(Impair::default());
        let rng = Arc::new(Mutex::new(Rng::new(seed ^ 0x1A6_0000_0000_0001)));
        let mut routes = Vec::new();
        let mut tasks = Vec::new();
        for up in upstreams {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let here = listener.local_addr()?;
            routes.push((here, *up));
            tasks.push(tokio::spawn(accept(listener, *up, rx.clone(), rng.clone())));
        }
        Ok(Lag {
            routes,
            control,
            tasks,
        })
    }

    pub fn set(&self, impair: Impair) {
        let _ = self.control.send(impair);
    }

    /// The relay's address standing for `upstream`, as text.
    pub fn relay_of(&self, upstream: &str) -> Option<String> {
        self.routes
            .iter()
            .find(|(_, up)| up.to_string() == upstream)
            .map(|(here, _)| here.to_string())
    }

    pub fn ports(&self) -> Vec<u16> {
        self.routes.iter().map(|(here, _)| here.port()).collect()
    }
}

impl Drop for Lag {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

type SharedRng = Arc<Mutex<Rng>>;

async fn accept(
    listener: TcpListener,
    up: SocketAddr,
    rx: watch::Receiver<Impair>,
    rng: SharedRng,
) {
    loop {
        let Ok((down, _)) = listener.accept().await else {
            continue;
        };
        let (rx, rng) = (rx.clone(), rng.clone());
        tokio::spawn(async move {
            // The server refusing is the component's to see: it gets EOF.
            let Ok(upstream) = TcpStream::connect(up).await else {
                return;
            };
            let _ = down.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (dr, dw) = down.into_split();
            let (ur, uw) = upstream.into_split();
            // Each way ends on its own, as TCP's halves do: EOF on one side
            // is passed on as a shutdown, after what was queued before it.
            tokio::spawn(pump(dr, uw, rx.clone(), rng.clone()));
            tokio::spawn(pump(ur, dw, rx, rng));
        });
    }
}

/// Reads `from`, writes to `to` each chunk at its release time.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    impair: watch::Receiver<Impair>,
    rng: SharedRng,
) {
    let (tx, mut queue) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((at, bytes)) = queue.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut last = Instant::now();
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let Impair { delay, loss } = *impair.borrow();
            let mut hold = delay;
            if loss > 0.0 {
                let mut r = lock(&rng);
                if (r.next() % 10_000) as f64 / 10_000.0 < loss {
                    hold += Duration::from_millis(200 + r.next() % 801);
                }
            }
            // Never before the chunk ahead of it.
            last = last.max(Instant::now() + hold);
            if tx.send((last, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    // The reader ending (EOF, error) lets the writer drain and shut down;
    // the writer failing ends the pump.
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind the relay: bytes come back in order, late by
    /// the delay each way, and a closed upstream closes the relayed side.
    #[tokio::test]
    async fn relays_in_order_with_the_delay_asked() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            // Echo 10 bytes, then close.
            let mut seen = 0;
            while seen < 10 {
                let n = s.read(&mut buf).await.unwrap();
                s.write_all(&buf[..n]).await.unwrap();
                seen += n;
            }
        });
        let lag = Lag::start(&[echo_addr], 1).await.unwrap();
        lag.set(Impair {
            delay: Duration::from_millis(100),
            loss: 0.0,
        });
        let relay = lag.routes[0].0;
        let mut c = TcpStream::connect(relay).await.unwrap();
        let t0 = std::time::Instant::now();
        c.write_all(b"0123456789").await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            let n = c.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"0123456789");
        // 100 ms there and 100 ms back.
        assert!(
            t0.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t0.elapsed()
        );
    }
}
