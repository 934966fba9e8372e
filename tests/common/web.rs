//! The web feed from the outside, for the tests of tests/web.rs and
//! tests/web_resume.rs: `pubpresence watch --json --http` as a child process,
//! and a reader of its `/events` stream.

use super::Prosody;
use pubpresence::wire::time;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const T: Duration = Duration::from_secs(30);
/// The account `watch` logs in with.
pub const DASHBOARD: &str = "dashboard";
/// The feed's token.
pub const TOKEN: &str = "s3cret-Token_9f2c";

/// `pubpresence watch --json --http 127.0.0.1:0` with the token in its config.
pub struct WatchProcess {
    pub child: Child,
    dir: tempfile::TempDir,
    pub base: String,
}

impl WatchProcess {
    pub fn start(p: &Prosody, component_config: &str) -> WatchProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("watch.toml");
        let toml = format!(
            "{component_config}\n[watch]\njid = \"{DASHBOARD}@{}\"\npassword = \"{DASHBOARD}\"\n\
             server = \"{}\"\nallow_plaintext = true\nhttp_token = \"{TOKEN}\"\n",
            p.domain,
            p.c2s_addr()
        );
        std::fs::write(&config, toml).expect("write config");
        let child = Command::new(env!("CARGO_BIN_EXE_pubpresence"))
            .args(["watch", "--json", "--http", "127.0.0.1:0", "--config"])
            .arg(&config)
            .env("RUST_LOG", "debug")
            .env_remove("PUBPRESENCE_HTTP_TOKEN")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("out")).expect("out"))
            .stderr(std::fs::File::create(dir.path().join("err")).expect("err"))
            .spawn()
            .expect("start watch");
        let mut w = WatchProcess {
            child,
            dir,
            base: String::new(),
        };
        let deadline = std::time::Instant::now() + T;
        loop {
            let err = w.read("err");
            if let Some(rest) = err.split("web feed on ").nth(1) {
                if let Some(url) = rest.split_whitespace().next() {
                    w.base = url.trim_end_matches('/').to_string();
                    break;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "watch did not say where it serves; stderr:\n{err}"
            );
            assert!(
                w.child.try_wait().expect("wait").is_none(),
                "watch ended; stderr:\n{err}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        w
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for WatchProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client")
}

/// `/state` once the feed is in sync, within `T`; until then it lists no
/// users (docs/protocol.md, "Web feed").
pub async fn synced_state(http: &reqwest::Client, w: &WatchProcess) -> Value {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let s = get_state(http, &w.url("/state")).await;
        if s["synced"] == true {
            return s;
        }
        assert_eq!(
            s["users"],
            serde_json::json!([]),
            "no users while not in sync"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "never in sync: {s}\n{}",
            w.read("err")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn get_state(http: &reqwest::Client, url: &str) -> Value {
    let r = http
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET /state");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    serde_json::from_str(&r.text().await.expect("body")).expect("JSON")
}

/// A reader of a `text/event-stream` response.
pub struct Sse {
    res: reqwest::Response,
    pub buf: String,
    pub comments: usize,
    /// The `id` of the last message read.
    pub last_id: Option<String>,
}

impl Sse {
    pub async fn open(http: &reqwest::Client, url: &str) -> Sse {
        Sse::resume(http, url, None).await
    }

    /// Opens `/events` with `Last-Event-ID: last_id`.
    pub async fn resume(http: &reqwest::Client, url: &str, last_id: Option<&str>) -> Sse {
        let mut req = http.get(url).bearer_auth(TOKEN);
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id);
        }
        let res = req.send().await.expect("GET /events");
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        Sse::from_response(res)
    }

    /// A stream already opened (without the checks of [`Sse::resume`]).
    pub fn from_response(res: reqwest::Response) -> Sse {
        Sse {
            res,
            buf: String::new(),
            comments: 0,
            last_id: None,
        }
    }

    /// The next message: (event, data as JSON); None at the end of the stream.
    pub async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut kind, mut data) = (None, Vec::new());
                for line in block.lines() {
                    if let Some(k) = line.strip_prefix("event:") {
                        kind = Some(k.trim().to_string());
                    } else if let Some(id) = line.strip_prefix("id:") {
                        self.last_id = Some(id.trim().to_string());
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push(d.strip_prefix(' ').unwrap_or(d).to_string());
                    } else if line.starts_with(':') {
                        self.comments += 1;
                    }
                }
                match kind {
                    Some(k) => {
                        let v = serde_json::from_str(&data.join("\n"))
                            .unwrap_or_else(|e| panic!("not JSON ({e}): {block}"));
                        return Some((k, v));
                    }
                    None => continue,
                }
            }
            match self.res.chunk().await {
                Ok(Some(c)) => self.buf.push_str(&String::from_utf8_lossy(&c)),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    pub async fn expect(&mut self, what: &str) -> (String, Value) {
        tokio::time::timeout(T, self.next())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {T:?}"))
            .unwrap_or_else(|| panic!("the stream ended before {what}"))
    }
}

/// Checks the fields every event carries: `event` = the SSE kind, `at`.
pub fn assert_envelope(kind: &str, v: &Value) {
    assert_eq!(v["event"], kind, "{v}");
    let at = v["at"].as_str().unwrap_or_else(|| panic!("no at: {v}"));
    assert!(time::parse(at).is_some(), "at is RFC 3339: {v}");
}
