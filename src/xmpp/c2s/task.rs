//! The connection task: one task owns the stream, reads and writes,
//! answers pings, matches IQ answers and keeps the connection alive.

use std::collections::VecDeque;
use std::io;

use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_xmpp::xmlstream::{ReadError, XmlStream};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{FullJid, Jid};
use xmpp_parsers::minidom::{Element, Node};
use xmpp_parsers::ns;
use xmpp_parsers::ping::Ping;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use super::login::{is_stream_error, stream_error_text};
use super::*;

pub(super) struct Connection {
    pub(super) stream: XmlStream<Io, Element>,
    pub(super) raw: RawBuf,
    pub(super) jid: FullJid,
    pub(super) out: mpsc::Sender<Element>,
    /// Stanzas for the receiver that did not fit in it yet.
    pub(super) overflow: VecDeque<Element>,
    pub(super) pending: Pending,
    /// Dropped when the task ends: wakes `close()`.
    pub(super) _done: watch::Sender<()>,
}

enum Wake<'a> {
    Permit(Option<mpsc::Permit<'a, Element>>),
    Cmd(Option<Cmd>),
    Item(Option<Result<Element, ReadError>>),
}

enum Flow {
    Continue,
    Close,
    End,
}

impl Connection {
    pub(super) async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        loop {
            // Wait for something to do (the futures borrow parts of `self`),
            // then do it.
            let out = self.out.clone();
            let wake = tokio::select! {
                biased;
                permit = out.reserve(), if !self.overflow.is_empty() => Wake::Permit(permit.ok()),
                cmd = cmds.recv() => Wake::Cmd(cmd),
                item = self.stream.next() => Wake::Item(item),
            };
            let flow = match wake {
                Wake::Permit(permit) => {
                    match (permit, self.overflow.pop_front()) {
                        (Some(permit), Some(el)) => permit.send(el),
                        _ => self.overflow.clear(), // the receiver is gone
                    }
                    Flow::Continue
                }
                Wake::Cmd(Some(Cmd::Stanza(el))) => self.write(&el).await,
                Wake::Cmd(Some(Cmd::Raw(bytes, reply))) => {
                    lock(&self.raw).extend_from_slice(&bytes);
                    let r = SinkExt::<&Element>::flush(&mut self.stream).await;
                    let flow = self.write_result(r.as_ref().map(|_| ()));
                    let _ = reply.send(r.map_err(|e| C2sError::Connect {
                        server: self.jid.domain().to_string(),
                        reason: e.to_string(),
                    }));
                    flow
                }
                // Close, or every handle dropped.
                Wake::Cmd(Some(Cmd::Close)) | Wake::Cmd(None) => Flow::Close,
                Wake::Item(item) => self.read(item).await,
            };
            match flow {
                Flow::Continue => {}
                Flow::Close => {
                    self.close().await;
                    break;
                }
                Flow::End => break,
            }
        }
        // Fail every waiting iq() and refuse new ones, refuse new commands,
        // and only then end the receiver (by dropping `self.out`): whoever
        // sees the receiver end sees a closed handle.
        lock(&self.pending).take();
        drop(cmds);
        tracing::debug!(jid = %self.jid, "c2s connection ended");
        drop(self);
    }

    async fn write(&mut self, el: &Element) -> Flow {
        let el = client_ns(el.clone());
        let r = self.stream.send(&el).await;
        self.write_result(r.as_ref().map(|_| ()))
    }

    fn write_result(&self, r: Result<(), &io::Error>) -> Flow {
        match r {
            Ok(()) => Flow::Continue,
            Err(e) => {
                tracing::warn!(jid = %self.jid, "c2s write failed, connection lost: {e}");
                Flow::End
            }
        }
    }

    async fn read(&mut self, item: Option<Result<Element, ReadError>>) -> Flow {
        match item {
            Some(Ok(el)) => self.incoming(el).await,
            Some(Err(ReadError::ParseError(e))) => {
                tracing::warn!(jid = %self.jid, "skipped an unreadable stanza: {e}");
                Flow::Continue
            }
            Some(Err(ReadError::SoftTimeout)) => {
                let ping: Element = Iq::from_get(fresh_id(KEEPALIVE_PREFIX), Ping)
                    .with_to(Jid::from(self.jid.domain().to_owned()))
                    .into();
                self.write(&ping).await
            }
            Some(Err(ReadError::StreamFooterReceived)) => {
                tracing::debug!(jid = %self.jid, "the server closed the stream");
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.stream.shutdown()).await;
                Flow::End
            }
            Some(Err(ReadError::HardError(e))) => {
                tracing::warn!(jid = %self.jid, "c2s connection lost: {e}");
                Flow::End
            }
            None => Flow::End,
        }
    }

    async fn incoming(&mut self, el: Element) -> Flow {
        let is_iq = el.name() == "iq" && el.ns() == ns::JABBER_CLIENT;
        let kind = el.attr("type").unwrap_or_default().to_string();
        if is_iq && (kind == "result" || kind == "error") {
            let id = el.attr("id").unwrap_or_default();
            if id.starts_with(KEEPALIVE_PREFIX) {
                return Flow::Continue;
            }
            let waiter = lock(&self.pending).as_mut().and_then(|m| m.remove(id));
            if let Some(waiter) = waiter {
                let _ = waiter.send(el);
                return Flow::Continue;
            }
        }
        if is_iq && kind == "get" && el.get_child("ping", ns::PING).is_some() {
            let pong = iq_reply(&el, None);
            return self.write(&pong).await;
        }
        if is_stream_error(&el) {
            tracing::warn!(jid = %self.jid, "stream error from the server: {}", stream_error_text(&el));
            // The footer follows; keep reading until it does.
            return Flow::Continue;
        }
        if self.overflow.is_empty() {
            match self.out.try_send(el) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(el)) => self.overflow.push_back(el),
                Err(mpsc::error::TrySendError::Closed(el)) => {
                    // Nobody reads: an IQ request still deserves an answer.
                    if is_iq && (kind == "get" || kind == "set") {
                        let reply = iq_reply(&el, Some(DefinedCondition::ServiceUnavailable));
                        return self.write(&reply).await;
                    }
                }
            }
        } else {
            self.overflow.push_back(el);
        }
        Flow::Continue
    }

    /// Our footer, then the server's footer and EOF (bounded).
    async fn close(&mut self) {
        if tokio::time::timeout(CLOSE_TIMEOUT, self.stream.shutdown())
            .await
            .is_err()
        {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Some(item) = self.stream.next().await {
                match item {
                    Ok(el) => {
                        let _ = self.out.try_send(el);
                    }
                    Err(ReadError::HardError(_)) => break,
                    Err(_) => {}
                }
            }
        })
        .await;
    }
}

/// xmpp-parsers is built with its `component` feature in this crate, so every
/// stanza it serialises (`Iq`, `Presence`, `Message`, `StanzaError`, ...)
/// is in `jabber:component:accept`; on a c2s stream Prosody answers such a
/// stanza with `unsupported-stanza-type` and closes the stream. So every
/// element in that namespace, at any depth, is moved to `jabber:client`.
pub fn client_ns(mut el: Element) -> Element {
    let nodes = el.take_nodes();
    let mut out = if el.ns() == COMPONENT_NS {
        let mut moved = Element::bare(el.name(), ns::JABBER_CLIENT);
        *moved.attrs_mut() = el.attrs().clone();
        moved
    } else {
        el
    };
    for node in nodes {
        match node {
            Node::Element(child) => {
                out.append_child(client_ns(child));
            }
            Node::Text(text) => out.append_text_node(text),
        }
    }
    out
}

const COMPONENT_NS: &str = "jabber:component:accept";

/// An empty result, or an error with `condition`, answering the IQ `req`.
fn iq_reply(req: &Element, condition: Option<DefinedCondition>) -> Element {
    let kind = if condition.is_some() {
        "error"
    } else {
        "result"
    };
    let mut b = Element::builder("iq", ns::JABBER_CLIENT)
        .attr(ncname("type"), kind)
        .attr(ncname("id"), req.attr("id").unwrap_or_default());
    if let Some(to) = req.attr("from") {
        b = b.attr(ncname("to"), to);
    }
    if let Some(c) = condition {
        b = b.append(Element::from(StanzaError::new(
            ErrorType::Cancel,
            c,
            "en",
            "",
        )));
    }
    b.build()
}
