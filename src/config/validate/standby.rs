//! `[standby]` (README, "Running two instances"): its keys checked on load,
//! and [`Config::standby_settings`], the table with its password resolved
//! for `pubpresence run`.

use super::validate_account;
use crate::config::jid::bare_jid;
use crate::config::{
    Config, ConfigError, Env, StandbyConfig, StandbySettings, DEFAULT_C2S_PORT,
    ENV_STANDBY_PASSWORD,
};

impl StandbyConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        validate_account(
            "standby",
            &self.jid,
            self.password.as_ref(),
            self.password_file.as_ref(),
            self.server.as_ref(),
        )?;
        if self.takeover.is_zero() {
            return Err(ConfigError::new("standby.takeover", "must be more than 0s"));
        }
        Ok(())
    }
}

impl Config {
    /// `[standby]`, checked, with its password resolved; `Ok(None)` without
    /// the table.
    pub fn standby_settings(&self, env: Env<'_>) -> Result<Option<StandbySettings>, ConfigError> {
        let Some(sb) = &self.standby else {
            return Ok(None);
        };
        let with_file = |e: ConfigError| e.with_file(self.source.as_deref());
        sb.validate().map_err(with_file)?;
        let jid = bare_jid("standby.jid", &sb.jid, true).map_err(with_file)?;
        let Some((password, _)) = self.resolve_standby_password(env)? else {
            return Err(self.err(
                "standby.password",
                format!(
                    "missing: set standby.password, standby.password_file or env {ENV_STANDBY_PASSWORD}"
                ),
            ));
        };
        let server = match &sb.server {
            Some(s) => s.clone(),
            None => format!("{}:{DEFAULT_C2S_PORT}", jid.domain()),
        };
        Ok(Some(StandbySettings {
            jid,
            password,
            server,
            allow_plaintext: sb.allow_plaintext,
            takeover: sb.takeover,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::testing::{no_env, parse, parse_err, MINIMAL, STANDBY};
    use crate::config::DEFAULT_TAKEOVER;

    #[test]
    fn standby_parse_and_defaults() {
        let c = parse(&format!("{MINIMAL}{STANDBY}"));
        let s = c.component(&no_env).expect("component");
        let sb = s.standby.as_ref().expect("standby");
        assert_eq!(sb.jid.as_str(), "pubpresence-standby@example.org");
        assert_eq!(sb.password.expose(), "sb-hunter2");
        assert_eq!(sb.server, "example.org:5222");
        assert!(!sb.allow_plaintext);
        assert_eq!(sb.takeover, Duration::from_secs(2));
        assert_eq!(sb.takeover, DEFAULT_TAKEOVER);
        assert!(c.check(&no_env).is_ok());
        // without [standby]
        assert!(parse(MINIMAL)
            .component(&no_env)
            .expect("component")
            .standby
            .is_none());

        let c = parse(&format!(
            "{MINIMAL}{STANDBY}server = \"127.0.0.1:5222\"\nallow_plaintext = true\ntakeover = \"750ms\"\n"
        ));
        let sb = c
            .component(&no_env)
            .expect("component")
            .standby
            .expect("standby");
        assert_eq!(sb.server, "127.0.0.1:5222");
        assert!(sb.allow_plaintext);
        assert_eq!(sb.takeover, Duration::from_millis(750));
        let d = c.describe(&no_env);
        for line in [
            "standby.jid = \"pubpresence-standby@example.org\"",
            "standby.password = *** (from standby.password)",
            "standby.server = \"127.0.0.1:5222\"",
            "standby.allow_plaintext = true",
            "standby.takeover = 750ms",
            "warning: standby.allow_plaintext = true",
        ] {
            assert!(d.contains(line), "missing {line:?} in\n{d}");
        }
    }

    #[test]
    fn standby_missing_password_named() {
        let c = parse(&format!(
            "{MINIMAL}[standby]\njid = \"pubpresence-standby@example.org\"\n"
        ));
        let e = c.component(&no_env).expect_err("no password");
        assert_eq!(e.key(), Some("standby.password"));
        assert!(e.to_string().contains(ENV_STANDBY_PASSWORD), "{e}");
        assert!(c.check(&no_env).is_err());
        let d = c.describe(&no_env);
        assert!(d.contains("standby.password = (not set)"), "{d}");
        assert!(
            d.contains("warning: not usable for `pubpresence run`: standby.password: missing"),
            "{d}"
        );
        let env = |k: &str| (k == ENV_STANDBY_PASSWORD).then(|| "e".to_string());
        assert!(c.component(&env).is_ok());
        // empty env counts as unset
        let empty = |k: &str| (k == ENV_STANDBY_PASSWORD).then(String::new);
        assert_eq!(
            c.component(&empty).expect_err("empty").key(),
            Some("standby.password")
        );
    }

    #[test]
    fn standby_bad_values_named() {
        let cases = [
            ("takeover = \"0s\"", "standby.takeover"),
            ("takeover = \"2 fortnights\"", "standby.takeover"),
            ("takeover = 2", "standby.takeover"),
            ("server = \"nowhere\"", "standby.server"),
            ("allow_plaintext = \"yes\"", "standby.allow_plaintext"),
            ("password_file = \"/x\"", "standby.password_file"),
            ("colour = \"blue\"", "standby.colour"),
        ];
        for (line, key) in cases {
            let e = parse_err(&format!("{MINIMAL}{STANDBY}{line}\n"));
            assert_eq!(e.key(), Some(key), "{line}: {e}");
            assert!(e.to_string().contains(key), "{e}");
            assert!(!e.to_string().contains("sb-hunter2"), "{e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        let e = parse_err(&format!("{MINIMAL}{STANDBY}colour = \"blue\"\n"));
        assert!(e.to_string().contains("unknown key"), "{e}");
        assert_eq!(e.line(), Some(11));
        let e = parse_err(&format!("{MINIMAL}{STANDBY}takeover = \"0s\"\n"));
        assert_eq!(e.line(), Some(11));

        let bad_jid = |jid: &str| {
            parse_err(&format!(
                "{MINIMAL}[standby]\njid = \"{jid}\"\npassword = \"x\"\n"
            ))
        };
        assert_eq!(bad_jid("example.org").key(), Some("standby.jid"));
        assert_eq!(bad_jid("a@b/c").key(), Some("standby.jid"));
        let e = parse_err(&format!("{MINIMAL}[standby]\npassword = \"sb-hunter2\"\n"));
        assert_eq!(e.key(), Some("standby.jid"));
        assert!(!e.to_string().contains("sb-hunter2"), "{e}");
        let e = parse_err(&format!(
            "{MINIMAL}[standby]\njid = \"a@example.org\"\npassword = \"\"\n"
        ));
        assert_eq!(e.key(), Some("standby.password"));
    }

    #[test]
    fn standby_password_never_shown() {
        let c = parse(&format!("{MINIMAL}{STANDBY}"));
        let s = c.component(&no_env).expect("component");
        let sb = s.standby.clone().expect("standby");
        for shown in [
            format!("{c:?}"),
            format!("{s:?}"),
            format!("{sb:?}"),
            c.describe(&no_env),
        ] {
            assert!(!shown.contains("sb-hunter2"), "leaked in {shown}");
        }
        let head =
            "jid = \"c.example.org\"\npubsub = \"p.example.org\"\n[standby]\njid = \"a@b\"\n";
        for bad in [
            "password = \"hunter2",
            "password = [\"hunter2\"]",
            "password = { v = \"hunter2\" }",
            "password = hunter2",
        ] {
            let e = parse_err(&format!("{head}{bad}\n"));
            let shown = e.to_string();
            assert!(
                !shown.contains("hunter2"),
                "leaked in {shown:?} for {bad:?}"
            );
            assert!(!shown.contains('\n'), "{shown:?}");
        }
        let e = parse_err(&format!("{head}password = 98765432\n"));
        assert!(!e.to_string().contains("98765432"), "{e}");
        assert_eq!(e.key(), Some("standby.password"));
    }
}
