//! `pubpresence watch` on stdout: the table of [`Board`], redrawn in place
//! on a terminal, or one JSON object per event (docs/protocol.md, "JSON
//! events"). The lab's demo shows the same.

use super::board::Board;
use super::watch::{self, Update};
use crate::wire::time;
use std::io::{IsTerminal, Write};
use std::time::Duration;
use tokio::sync::mpsc;

/// Shows updates until the channel closes: JSON lines (flushed one by one)
/// or the table, redrawn at most 5 times a second. Returns early when
/// stdout is gone (a closed pipe).
pub async fn show(mut rx: mpsc::Receiver<Update>, json: bool, title: &str) -> Board {
    let tty = std::io::stdout().is_terminal();
    let mut board = Board::default();
    let mut dirty = false;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            u = rx.recv() => {
                let Some(u) = u else { break };
                if let (true, Update::Event { seq, event }) = (json, &u) {
                    let line = watch::event_json(*seq, event, &time::now()).to_string();
                    if print_flush(&format!("{line}\n")).is_err() {
                        return board;
                    }
                }
                board.update(&u);
                dirty = true;
            }
            _ = tick.tick(), if dirty && !json => {
                dirty = false;
                if draw(&board, title, tty).is_err() {
                    return board;
                }
            }
        }
    }
    if dirty && !json {
        let _ = draw(&board, title, tty);
    }
    board
}

fn draw(board: &Board, title: &str, tty: bool) -> std::io::Result<()> {
    let table = board.render(title);
    if tty {
        // Home, each line cleared to its end, then the rest of the screen:
        // redrawn in place without the flicker of a full clear.
        let mut s = String::from("\x1b[H");
        for line in table.lines() {
            s.push_str(line);
            s.push_str("\x1b[K\n");
        }
        s.push_str("\x1b[J");
        print_flush(&s)
    } else {
        print_flush(&format!("{table}\n"))
    }
}

fn print_flush(s: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()
}
