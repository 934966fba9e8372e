//! The consumers of `/events`, in the benchmark's process: plain HTTP/1.1
//! over loopback TCP, the chunked coding and SSE parsed by hand, each event
//! keyed by its content and stamped when the read that brought it returned.

use super::{key, now_us};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch as wch, Semaphore};

/// A consumer's read buffer.
const READ_BUFFER: usize = 16 * 1024;

/// What every consumer shares with the benchmark.
pub(super) struct Shared {
    /// The window's start (µs, CLOCK_REALTIME); 0: not open, nothing counts.
    pub(super) window_start: AtomicU64,
    /// Consumers that had their first snapshot.
    pub(super) ready: AtomicUsize,
    /// Per consumer: window events received so far.
    pub(super) counts: Vec<AtomicUsize>,
    /// Per consumer: its stream ended before it was told to stop.
    pub(super) ended: Vec<AtomicBool>,
}

/// One delivery: the event's key and when (µs after the window's start).
/// Which occurrence of the key it is follows from the log's order, and is
/// counted after the window: the consumers' CPU during the window is the
/// feed's to have (the consumers share its machine here).
pub(super) type Rec = (u64, u32);

/// `/events` by hand: chunked transfer coding, then SSE. Both parse where
/// the bytes lie and copy only what a read cut in two: the consumers share
/// the feed's machine, and their CPU is the feed's latency.
#[derive(Default)]
struct Chunked {
    /// A chunk-size line (or the CRLF after a chunk) cut by a read.
    carry: Vec<u8>,
    /// Data bytes left in the current chunk.
    remaining: usize,
    /// A CRLF ends the chunk's data.
    crlf: bool,
    done: bool,
}

impl Chunked {
    /// Hands the payload in `input` to `on_data`, piece by piece.
    fn feed(&mut self, input: &[u8], mut on_data: impl FnMut(&[u8])) -> Result<(), String> {
        let joined;
        let buf: &[u8] = if self.carry.is_empty() {
            input
        } else {
            self.carry.extend_from_slice(input);
            joined = std::mem::take(&mut self.carry);
            &joined
        };
        let mut pos = 0;
        while !self.done {
            let avail = buf.len() - pos;
            if self.remaining > 0 {
                let take = self.remaining.min(avail);
                if take == 0 {
                    break;
                }
                on_data(&buf[pos..pos + take]);
                pos += take;
                self.remaining -= take;
                self.crlf = self.remaining == 0;
            } else if self.crlf {
                if avail < 2 {
                    break;
                }
                if &buf[pos..pos + 2] != b"\r\n" {
                    return Err("chunk not followed by CRLF".into());
                }
                pos += 2;
                self.crlf = false;
            } else {
                let Some(end) = memchr::memmem::find(&buf[pos..], b"\r\n") else {
                    if avail > 1024 {
                        return Err("chunk size line too long".into());
                    }
                    break;
                };
                let line = std::str::from_utf8(&buf[pos..pos + end])
                    .map_err(|_| "chunk size not ASCII".to_string())?;
                let hex = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(hex, 16)
                    .map_err(|_| format!("bad chunk size {line:?}"))?;
                pos += end + 2;
                if size == 0 {
                    self.done = true;
                } else {
                    self.remaining = size;
                }
            }
        }
        if !self.done {
            self.carry.extend_from_slice(&buf[pos..]);
        }
        Ok(())
    }
}

static FULLJID: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"fulljid\":\""));
static STATUS: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"status\":\""));

/// The string value after `pat` (`"field":"`) in a JSON object (no escapes: JIDs
/// and statuses of the simulated users have none).
fn json_str<'a>(data: &'a [u8], pat: &memchr::memmem::Finder<'static>) -> &'a [u8] {
    let Some(at) = pat.find(data) else {
        return b"";
    };
    let rest = &data[at + pat.needle().len()..];
    let end = memchr::memchr(b'"', rest).unwrap_or(rest.len());
    &rest[..end]
}

/// How a consumer's stream ended.
enum Ending {
    Stopped,
    Eof,
}

/// One consumer of `/events`: connects, reads until told to stop, and
/// returns its window deliveries.
pub(super) async fn consumer(
    addr: SocketAddr,
    index: usize,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
    mut stop: wch::Receiver<bool>,
) -> Vec<Rec> {
    let mut log: Vec<Rec> = Vec::new();
    let r = consume(addr, index, &shared, &gate, &mut stop, &mut log).await;
    match r {
        Ok(Ending::Stopped) => {}
        Ok(Ending::Eof) => {
            shared.ended[index].store(true, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::debug!("consumer {index}: {e}");
            shared.ended[index].store(true, Ordering::Relaxed);
        }
    }
    log
}

async fn consume(
    addr: SocketAddr,
    index: usize,
    shared: &Shared,
    gate: &Semaphore,
    stop: &mut wch::Receiver<bool>,
    log: &mut Vec<Rec>,
) -> Result<Ending, String> {
    let permit = gate.acquire().await.map_err(|e| e.to_string())?;
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    let req = format!(
        "GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("request: {e}"))?;
    // The response head.
    let mut head = Vec::with_capacity(1024);
    let mut rbuf = vec![0u8; READ_BUFFER];
    let body_start = loop {
        let n = s.read(&mut rbuf).await.map_err(|e| format!("head: {e}"))?;
        if n == 0 {
            return Err("closed before the response head".into());
        }
        head.extend_from_slice(&rbuf[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if head.len() > 16 * 1024 {
            return Err("response head too long".into());
        }
    };
    drop(permit);
    let text = String::from_utf8_lossy(&head[..body_start]).to_ascii_lowercase();
    if !text.starts_with("http/1.1 200") {
        return Err(format!(
            "status: {}",
            text.lines().next().unwrap_or_default()
        ));
    }
    let chunked = text.contains("transfer-encoding: chunked");
    let mut dechunk = Chunked::default();
    let mut sse = crate::sse::SseParser::default();
    let mut ready = false;
    // What came with the head, then each read where it lies.
    let first = head[body_start..].to_vec();
    let mut input: &[u8] = &first;
    loop {
        if !input.is_empty() {
            let now = now_us();
            let start = shared.window_start.load(Ordering::Relaxed);
            let mut got = 0usize;
            let mut on_event = |event: &[u8], data: &[u8]| match event {
                b"snapshot" if !ready => {
                    ready = true;
                    shared.ready.fetch_add(1, Ordering::Relaxed);
                }
                b"set" | b"remove" if start > 0 && now >= start => {
                    let status: &[u8] = if event == b"set" {
                        json_str(data, &STATUS)
                    } else {
                        b""
                    };
                    let k = key(event, json_str(data, &FULLJID), status);
                    log.push((k, (now - start).min(u32::MAX as u64) as u32));
                    got += 1;
                }
                _ => {}
            };
            if chunked {
                dechunk.feed(input, |piece| sse.feed(piece, &mut on_event))?;
            } else {
                sse.feed(input, &mut on_event);
            }
            if got > 0 {
                shared.counts[index].fetch_add(got, Ordering::Relaxed);
            }
            if dechunk.done {
                return Ok(Ending::Eof);
            }
        }
        let n = tokio::select! {
            biased;
            _ = stop.changed() => return Ok(Ending::Stopped),
            r = s.read(&mut rbuf) => r.map_err(|e| format!("read: {e}"))?,
        };
        if n == 0 {
            return Ok(Ending::Eof);
        }
        input = &rbuf[..n];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::measure::Latency;

    #[test]
    fn chunked_sse_split_anywhere() {
        let body = b"event: set\ndata: {\"fulljid\":\"a@x/desk\",\"status\":\"away\"}\n\n:\n\nevent: snapshot\ndata: {}\n\n";
        // Two chunks, then the end.
        let mut wire = Vec::new();
        for part in [&body[..30], &body[30..]] {
            wire.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            wire.extend_from_slice(part);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        for cut in [1, 3, 7, 31, 45] {
            let mut ch = Chunked::default();
            let mut sse = crate::sse::SseParser::default();
            let mut seen = Vec::new();
            for piece in wire.chunks(cut) {
                ch.feed(piece, |out| {
                    sse.feed(out, |e, d| {
                        seen.push((
                            String::from_utf8_lossy(e).into_owned(),
                            String::from_utf8_lossy(json_str(d, &STATUS)).into_owned(),
                        ))
                    })
                })
                .unwrap();
            }
            assert!(ch.done, "cut {cut}");
            assert_eq!(
                seen,
                vec![
                    ("set".to_string(), "away".to_string()),
                    ("snapshot".to_string(), String::new())
                ],
                "cut {cut}"
            );
        }
    }

    #[test]
    fn keys_match_across_sides() {
        let data = br#"{"at":"2026-11-24T10:00:05Z","event":"set","fulljid":"load1@localhost/desk","ip":"127.1.0.1","name":"load1@localhost","since":"2026-11-24T10:00:00Z","status":"dnd"}"#;
        assert_eq!(
            key(b"set", json_str(data, &FULLJID), json_str(data, &STATUS)),
            key(b"set", b"load1@localhost/desk", b"dnd")
        );
        let nope = memchr::memmem::Finder::new(b"\"nope\":\"").into_owned();
        assert_eq!(json_str(data, &nope), b"");
        let l = Latency::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((l.samples, l.p50_ms, l.max_ms), (3, 2.0, 3.0));
    }
}
