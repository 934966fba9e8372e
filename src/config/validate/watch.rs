//! `[watch]` (README, "Following the feed: `pubpresence watch`" and "Web
//! feed"): its keys checked on load, and [`Config::watch`], everything
//! `pubpresence watch` needs, including the rule that a web feed off
//! loopback needs a token (also applied to `--http`).

use std::net::SocketAddr;

use super::validate_account;
use crate::config::addr::{host_port, parse_http_addr};
use crate::config::jid::{bare_jid, domain_jid};
use crate::config::{
    Config, ConfigError, Env, Secret, WatchConfig, WatchSettings, DEFAULT_C2S_PORT, ENV_HTTP_TOKEN,
};

impl WatchConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        validate_account(
            "watch",
            &self.jid,
            self.password.as_ref(),
            self.password_file.as_ref(),
            self.server.as_ref(),
        )?;
        if let Some(h) = &self.http {
            parse_http_addr("watch.http", h)?;
        }
        if let Some(t) = &self.http_token {
            if t.expose().is_empty() {
                return Err(ConfigError::new("watch.http_token", "is empty"));
            }
            if self.http_token_file.is_some() {
                return Err(ConfigError::new(
                    "watch.http_token_file",
                    "http_token and http_token_file are both set; keep one",
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// What `pubpresence watch` needs: top-level `jid`, `pubsub`, `[nodes]`
    /// and `[watch]` with `jid` and a password. Never needs the secret.
    pub fn watch(&self, env: Env<'_>) -> Result<WatchSettings, ConfigError> {
        let with_file = |e: ConfigError| e.with_file(self.source.as_deref());
        let Some(w) = &self.watch else {
            return Err(self.err(
                "watch",
                "missing: `pubpresence watch` needs a [watch] table with jid and password",
            ));
        };
        let jid = bare_jid("watch.jid", &w.jid, true).map_err(with_file)?;
        let Some((password, _)) = self.resolve_watch_password(env)? else {
            return Err(self.err(
                "watch.password",
                "missing: set watch.password, watch.password_file or env PUBPRESENCE_WATCH_PASSWORD",
            ));
        };
        let server = match &w.server {
            Some(s) => {
                host_port("watch.server", s).map_err(with_file)?;
                s.clone()
            }
            None => format!("{}:{DEFAULT_C2S_PORT}", jid.domain()),
        };
        let http_token = self.resolve_http_token(env)?.map(|(t, _)| t);
        let http = match &w.http {
            Some(a) => {
                let addr = parse_http_addr("watch.http", a).map_err(with_file)?;
                check_http_token(addr, http_token.as_ref()).map_err(with_file)?;
                Some(addr)
            }
            None => None,
        };
        Ok(WatchSettings {
            jid,
            password,
            server,
            allow_plaintext: w.allow_plaintext,
            component: domain_jid("jid", &self.jid).map_err(with_file)?,
            pubsub: domain_jid("pubsub", &self.pubsub).map_err(with_file)?,
            nodes: self.nodes.clone(),
            http,
            http_token,
            http_resume_window: resume_window(w.http_resume_window).map_err(with_file)?,
            probe_timeout: self.probe_timeout,
            iq_timeout: self.iq_timeout,
        })
    }
}

/// The largest `http_resume_window`: a million events of a few hundred bytes
/// each is already a few hundred MB.
const MAX_RESUME_WINDOW: usize = 1_000_000;

fn resume_window(w: Option<usize>) -> Result<usize, ConfigError> {
    match w {
        None => Ok(crate::config::DEFAULT_RESUME_WINDOW),
        Some(n) if n > MAX_RESUME_WINDOW => Err(ConfigError::new(
            "watch.http_resume_window",
            format!(
                "{n} events is too many (each is kept in memory, a few hundred bytes); at most \
                 {MAX_RESUME_WINDOW}, or 0 to turn resuming off"
            ),
        )),
        Some(n) => Ok(n),
    }
}

impl WatchSettings {
    /// Applies a web feed address given on the command line (`--http ADDR`),
    /// with the same rule as `[watch] http`: a non-loopback address needs a token.
    pub fn with_http(mut self, addr: &str) -> Result<Self, ConfigError> {
        let http = parse_http_addr("watch.http", addr)?;
        check_http_token(http, self.http_token.as_ref())?;
        self.http = Some(http);
        Ok(self)
    }
}

fn check_http_token(addr: SocketAddr, token: Option<&Secret>) -> Result<(), ConfigError> {
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(ConfigError::new(
            "watch.http_token",
            format!(
                "required: watch.http = {addr} is not a loopback address; set watch.http_token, \
                 watch.http_token_file or env {ENV_HTTP_TOKEN}, or serve on 127.0.0.1"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{no_env, parse, MINIMAL, WATCH_ONLY};
    use crate::config::{Nodes, Secret, ENV_HTTP_TOKEN, ENV_SECRET, ENV_WATCH_PASSWORD};

    #[test]
    fn watch_only_file() {
        let c = parse(WATCH_ONLY);
        let w = c.watch(&no_env).expect("watch");
        assert_eq!(w.jid.as_str(), "dashboard@example.org");
        assert_eq!(w.password.expose(), "pw-hunter2");
        assert_eq!(w.server, "example.org:5222");
        assert!(!w.allow_plaintext);
        assert_eq!(w.component.as_str(), "pubpresence.example.org");
        assert_eq!(w.pubsub.as_str(), "pubsub.example.org");
        assert_eq!(w.nodes, Nodes::default());
        assert_eq!(w.http, None);
        assert!(c.check(&no_env).is_ok());

        let e = c.component(&no_env).expect_err("no server");
        assert_eq!(e.key(), Some("server"));
        assert!(
            e.to_string().contains("also missing: secret, domain"),
            "{e}"
        );
        let with_server = parse(&format!("server = \"h:1\"\n{WATCH_ONLY}"));
        assert_eq!(
            with_server.component(&no_env).expect_err("x").key(),
            Some("secret")
        );
        let env = |k: &str| (k == ENV_SECRET).then(|| "e".to_string());
        assert_eq!(
            with_server.component(&env).expect_err("x").key(),
            Some("domain")
        );

        let d = c.describe(&no_env);
        assert!(
            d.contains("watch.password = *** (from watch.password)"),
            "{d}"
        );
        assert!(!d.contains("not usable for `pubpresence run`"), "{d}");
        assert!(!d.contains("whitelist with no members"), "{d}");

        // a component file has no [watch]
        let e = parse(MINIMAL).watch(&no_env).expect_err("no watch");
        assert_eq!(e.key(), Some("watch"));
        // [watch] without any password
        let no_pw = parse(&WATCH_ONLY.replace("password = \"pw-hunter2\"", ""));
        assert_eq!(
            no_pw.watch(&no_env).expect_err("x").key(),
            Some("watch.password")
        );
        let env = |k: &str| (k == ENV_WATCH_PASSWORD).then(|| "e".to_string());
        assert_eq!(no_pw.watch(&env).expect("env pw").password.expose(), "e");
    }

    #[test]
    fn resume_window_default_bound_and_off() {
        let with = |n: &str| parse(&format!("{WATCH_ONLY}http_resume_window = {n}\n"));
        let w = parse(WATCH_ONLY).watch(&no_env).expect("watch");
        assert_eq!(w.http_resume_window, crate::config::DEFAULT_RESUME_WINDOW);
        assert_eq!(with("0").watch(&no_env).expect("off").http_resume_window, 0);
        assert_eq!(
            with("1000000")
                .watch(&no_env)
                .expect("max")
                .http_resume_window,
            1_000_000
        );
        let e = with("1000001").watch(&no_env).expect_err("too many");
        assert_eq!(e.key(), Some("watch.http_resume_window"));
        assert!(e.to_string().contains("at most 1000000"), "{e}");
    }

    #[test]
    fn http_needs_token_off_loopback() {
        let with = |http: &str| parse(&format!("{WATCH_ONLY}http = \"{http}\"\n"));
        assert!(with("127.0.0.1:8080").watch(&no_env).is_ok());
        assert!(with("[::1]:8080").watch(&no_env).is_ok());
        assert!(with("localhost:8080").watch(&no_env).is_ok());
        let open = with("0.0.0.0:8080");
        let e = open.watch(&no_env).expect_err("no token");
        assert_eq!(e.key(), Some("watch.http_token"));
        assert!(e.to_string().contains("http_token"), "{e}");
        let env = |k: &str| (k == ENV_HTTP_TOKEN).then(|| "t".to_string());
        let w = open.watch(&env).expect("env token");
        assert_eq!(w.http_token.as_ref().map(Secret::expose), Some("t"));

        // --http on the command line follows the same rule
        let w = parse(WATCH_ONLY).watch(&no_env).expect("watch");
        assert!(w.clone().with_http("127.0.0.1:9000").is_ok());
        let e = w.with_http("192.0.2.1:9000").expect_err("no token");
        assert_eq!(e.key(), Some("watch.http_token"));
    }
}
