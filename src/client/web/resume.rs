//! Resuming a stream of the web feed (docs/protocol.md, "Resuming a
//! stream"): every message has an SSE `id` of the form `EPOCH-SEQ`, the
//! feed keeps the frames of its last events, and a consumer that comes back
//! with the last id it saw gets exactly the events after it; otherwise its
//! stream starts with the whole state again, saying why. No I/O here.

use axum::body::Bytes;
use std::collections::VecDeque;
use std::fmt;

/// A feed epoch: a new one each time `watch` starts, so that a sequence
/// number of an earlier run is never taken for one of this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch(u64);

impl Epoch {
    /// A new epoch: the time and the process id, hashed.
    pub fn new() -> Epoch {
        Epoch(crate::client::watch::random_u64())
    }

    /// The SSE id of the state after event `seq`.
    pub fn id(&self, seq: u64) -> String {
        format!("{self}-{seq}")
    }
}

impl Default for Epoch {
    fn default() -> Epoch {
        Epoch::new()
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Where a consumer asked its stream to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// With the whole state (no id given).
    Fresh,
    /// After event `seq` of `epoch` (None: the current epoch).
    After { epoch: Option<String>, seq: u64 },
    /// An id or number that cannot be read.
    Unreadable,
}

impl Ask {
    /// What a request asked: its `Last-Event-ID` header, else the query's
    /// `last_event_id` (a page that reconnects by itself cannot set the
    /// header), else `after=SEQ` with an optional `epoch=EPOCH` (after a
    /// `/state`). The header wins: a browser's own reconnect sends it with
    /// the URL it first opened.
    pub fn from_request(
        header: Option<&str>,
        last_event_id: Option<&str>,
        after: Option<&str>,
        epoch: Option<&str>,
    ) -> Ask {
        if let Some(id) = header.or(last_event_id) {
            let id = id.trim();
            if id.is_empty() {
                // An empty Last-Event-ID is what a browser sends before any id.
                return Ask::Fresh;
            }
            return match id.rsplit_once('-') {
                Some((e, seq)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    match seq.parse() {
                        Ok(seq) => Ask::After {
                            epoch: Some(e.to_string()),
                            seq,
                        },
                        Err(_) => Ask::Unreadable,
                    }
                }
                _ => Ask::Unreadable,
            };
        }
        match after.map(|a| a.trim().parse()) {
            Some(Ok(seq)) => Ask::After {
                epoch: epoch.map(|e| e.trim().to_string()),
                seq,
            },
            Some(Err(_)) => Ask::Unreadable,
            None => Ask::Fresh,
        }
    }
}

/// Why a stream starts with the whole state (the `reset` key of its first
/// messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// The consumer gave no id.
    New,
    /// The id is of another epoch: `watch` restarted since.
    Epoch,
    /// The events after the id are no longer kept.
    Window,
    /// The id cannot be read, or is ahead of the feed.
    Unknown,
}

impl Reset {
    pub fn as_str(self) -> &'static str {
        match self {
            Reset::New => "new",
            Reset::Epoch => "epoch",
            Reset::Window => "window",
            Reset::Unknown => "unknown",
        }
    }
}

/// How a stream starts.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    /// With these frames, the events the consumer missed (maybe none).
    Resume(Vec<Bytes>),
    /// With the whole state.
    Reset(Reset),
}

/// The frames of the last events, each with its sequence number.
#[derive(Debug)]
pub struct Ring {
    frames: VecDeque<(u64, Bytes)>,
    window: usize,
}

impl Ring {
    /// A ring that keeps the last `window` events (0: no resuming).
    pub fn new(window: usize) -> Ring {
        Ring {
            frames: VecDeque::with_capacity(window.min(1024)),
            window,
        }
    }

    pub fn push(&mut self, seq: u64, frame: Bytes) {
        if self.window == 0 {
            return;
        }
        if self.frames.len() == self.window {
            self.frames.pop_front();
        }
        self.frames.push_back((seq, frame));
    }

    /// How a stream asked with `ask` starts, when the feed is at `epoch`
    /// and its last event is `last`.
    pub fn start(&self, ask: &Ask, epoch: Epoch, last: u64) -> Start {
        let seq = match ask {
            Ask::Fresh => return Start::Reset(Reset::New),
            Ask::Unreadable => return Start::Reset(Reset::Unknown),
            Ask::After { epoch: Some(e), .. } if *e != epoch.to_string() => {
                return Start::Reset(Reset::Epoch)
            }
            Ask::After { seq, .. } => *seq,
        };
        if seq > last {
            return Start::Reset(Reset::Unknown);
        }
        if seq == last {
            return Start::Resume(Vec::new());
        }
        match self.frames.front() {
            Some((oldest, _)) if *oldest <= seq + 1 => {
                // The numbers grow along the ring.
                let from = self.frames.partition_point(|(s, _)| *s <= seq);
                Start::Resume(self.frames.range(from..).map(|(_, f)| f.clone()).collect())
            }
            _ => Start::Reset(Reset::Window),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(window: usize, seqs: std::ops::RangeInclusive<u64>) -> Ring {
        let mut r = Ring::new(window);
        for s in seqs {
            r.push(s, Bytes::from(format!("{s}")));
        }
        r
    }

    fn after(epoch: Option<&str>, seq: u64) -> Ask {
        Ask::After {
            epoch: epoch.map(str::to_string),
            seq,
        }
    }

    fn resumed(s: Start) -> Vec<String> {
        match s {
            Start::Resume(frames) => frames
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect(),
            Start::Reset(r) => panic!("reset: {r:?}"),
        }
    }

    #[test]
    fn asks_are_read_from_the_header_first() {
        assert_eq!(Ask::from_request(None, None, None, None), Ask::Fresh);
        assert_eq!(Ask::from_request(Some(""), None, None, None), Ask::Fresh);
        assert_eq!(
            Ask::from_request(Some("00ab-12"), Some("ff-1"), Some("3"), None),
            after(Some("00ab"), 12)
        );
        assert_eq!(
            Ask::from_request(None, Some("ff-1"), Some("3"), None),
            after(Some("ff"), 1)
        );
        assert_eq!(
            Ask::from_request(None, None, Some("3"), Some("ff")),
            after(Some("ff"), 3)
        );
        assert_eq!(
            Ask::from_request(None, None, Some("3"), None),
            after(None, 3)
        );
        for bad in ["12", "-12", "ab-", "ab-x", "ab--1"] {
            assert_eq!(
                Ask::from_request(Some(bad), None, None, None),
                Ask::Unreadable,
                "{bad}"
            );
        }
        assert_eq!(
            Ask::from_request(None, None, Some("x"), None),
            Ask::Unreadable
        );
    }

    #[test]
    fn resumes_inside_the_window_and_resets_outside_it() {
        let e = Epoch::new();
        let here = e.to_string();
        // Events 1..=20 sent, the last 8 (13..=20) kept.
        let r = ring(8, 1..=20);
        assert_eq!(resumed(r.start(&after(Some(&here), 20), e, 20)), [""; 0]);
        assert_eq!(
            resumed(r.start(&after(Some(&here), 17), e, 20)),
            ["18", "19", "20"]
        );
        // The edge: after 12 needs 13.. (all kept); after 11 needs 12 (gone).
        assert_eq!(resumed(r.start(&after(None, 12), e, 20)).len(), 8);
        assert_eq!(
            r.start(&after(Some(&here), 11), e, 20),
            Start::Reset(Reset::Window)
        );
        assert_eq!(r.start(&after(None, 0), e, 20), Start::Reset(Reset::Window));
        // Another epoch, an id ahead of the feed, no id, a bad id.
        assert_eq!(
            r.start(&after(Some("0123456789abcdef"), 19), e, 20),
            Start::Reset(Reset::Epoch)
        );
        assert_eq!(
            r.start(&after(Some(&here), 21), e, 20),
            Start::Reset(Reset::Unknown)
        );
        assert_eq!(r.start(&Ask::Fresh, e, 20), Start::Reset(Reset::New));
        assert_eq!(
            r.start(&Ask::Unreadable, e, 20),
            Start::Reset(Reset::Unknown)
        );
    }

    #[test]
    fn no_window_resumes_only_what_is_current() {
        let e = Epoch::new();
        let r = ring(0, 1..=5);
        assert_eq!(resumed(r.start(&after(None, 5), e, 5)), [""; 0]);
        assert_eq!(r.start(&after(None, 4), e, 5), Start::Reset(Reset::Window));
        // Before any event: the state is that of event 0.
        let r = Ring::new(4);
        assert_eq!(resumed(r.start(&after(None, 0), e, 0)), [""; 0]);
    }

    #[test]
    fn ids_carry_the_epoch() {
        let e = Epoch(0xab);
        assert_eq!(e.id(7), "00000000000000ab-7");
        assert_eq!(
            Ask::from_request(Some(&e.id(7)), None, None, None),
            after(Some("00000000000000ab"), 7)
        );
        assert_ne!(Epoch::new(), Epoch::new());
    }
}
