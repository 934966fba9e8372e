//! Server-Sent Events as the web feed writes them (docs/protocol.md, "Web
//! feed"): bytes in, messages (event name, data) out, and the `id` of the last
//! message dispatched, which a consumer sends back as `Last-Event-ID`. Shared
//! by the web benchmark's consumers and the soak's.

/// SSE lines into messages (name, data).
#[derive(Default)]
pub struct SseParser {
    /// A line cut by the end of the previous input.
    partial: Vec<u8>,
    event: Vec<u8>,
    data: Vec<u8>,
    /// The `id:` of the message being read.
    id: Option<Vec<u8>>,
    /// The `id` of the last message dispatched (the SSE "last event ID").
    last_id: Option<String>,
}

impl SseParser {
    /// Feeds bytes as they came; calls `on_event(name, data)` per message.
    pub fn feed(&mut self, input: &[u8], mut on_event: impl FnMut(&[u8], &[u8])) {
        let mut rest = input;
        if !self.partial.is_empty() {
            let Some(i) = memchr::memchr(b'\n', rest) else {
                self.partial.extend_from_slice(rest);
                return;
            };
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&rest[..i]);
            self.line(&line, &mut on_event);
            line.clear();
            self.partial = line;
            rest = &rest[i + 1..];
        }
        while let Some(i) = memchr::memchr(b'\n', rest) {
            self.line(&rest[..i], &mut on_event);
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
    }

    /// The `id` of the last message dispatched, if any had one.
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(&[u8], &[u8])) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if let Some(id) = self.id.take() {
                self.last_id = Some(String::from_utf8_lossy(&id).into_owned());
            }
            if !self.event.is_empty() || !self.data.is_empty() {
                on_event(&self.event, &self.data);
            }
            self.event.clear();
            self.data.clear();
        } else if let Some(v) = line.strip_prefix(b"event:") {
            self.event.clear();
            self.event
                .extend_from_slice(v.strip_prefix(b" ").unwrap_or(v));
        } else if let Some(v) = line.strip_prefix(b"data:") {
            if !self.data.is_empty() {
                self.data.push(b'\n');
            }
            self.data
                .extend_from_slice(v.strip_prefix(b" ").unwrap_or(v));
        } else if let Some(v) = line.strip_prefix(b"id:") {
            self.id = Some(v.strip_prefix(b" ").unwrap_or(v).to_vec());
        }
        // Comments (keep-alive) and other fields: nothing to do.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_ids_across_cuts() {
        let mut p = SseParser::default();
        let mut got = Vec::new();
        let input = b": hi\n\nid: e-1\nevent: set\ndata: {\"a\":1}\n\nevent: remove\ndata: x\r\ndata: y\n\n";
        for chunk in input.chunks(5) {
            p.feed(chunk, |e, d| {
                got.push((
                    String::from_utf8_lossy(e).into_owned(),
                    String::from_utf8_lossy(d).into_owned(),
                ))
            });
        }
        assert_eq!(
            got,
            [
                ("set".to_string(), "{\"a\":1}".to_string()),
                ("remove".to_string(), "x\ny".to_string())
            ]
        );
        // The id is kept until a message brings another.
        assert_eq!(p.last_id(), Some("e-1"));
    }
}
