//! `[metrics]` (README, "Prometheus metrics (optional)"): the address
//! `pubpresence run` serves `GET /metrics` on.

use std::net::SocketAddr;

use crate::config::addr::parse_socket_addr;
use crate::config::{Config, ConfigError};

impl Config {
    /// `[metrics] listen`, checked; `Ok(None)` without the table.
    pub fn metrics_listen(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let Some(m) = &self.metrics else {
            return Ok(None);
        };
        let addr = parse_socket_addr("metrics.listen", &m.listen, "127.0.0.1:9464")?;
        if addr.port() == 0 {
            return Err(ConfigError::new(
                "metrics.listen",
                format!("{:?}: port 0 is not a fixed port to scrape", m.listen),
            ));
        }
        Ok(Some(addr))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{no_env, parse, parse_err, MINIMAL};

    #[test]
    fn metrics_table() {
        // absent: off
        let c = parse(MINIMAL);
        assert_eq!(c.component(&no_env).expect("component").metrics, None);
        assert!(c.describe(&no_env).contains("metrics = (off)"));

        let c = parse(&format!(
            "{MINIMAL}[metrics]\nlisten = \"127.0.0.1:9464\"\n"
        ));
        let s = c.component(&no_env).expect("component");
        assert_eq!(s.metrics, Some("127.0.0.1:9464".parse().expect("addr")));
        let d = c.describe(&no_env);
        assert!(
            d.contains("metrics.listen = \"127.0.0.1:9464\" (GET http://127.0.0.1:9464/metrics)"),
            "{d}"
        );
        assert!(!d.contains("no authentication"), "{d}");
        let c = parse(&format!(
            "{MINIMAL}[metrics]\nlisten = \"localhost:9464\"\n"
        ));
        assert_eq!(
            c.component(&no_env).expect("component").metrics,
            Some("127.0.0.1:9464".parse().expect("addr"))
        );
        let c = parse(&format!("{MINIMAL}[metrics]\nlisten = \"[::1]:9464\"\n"));
        assert!(c.component(&no_env).expect("component").metrics.is_some());

        // any address is allowed, with a warning off loopback
        let c = parse(&format!("{MINIMAL}[metrics]\nlisten = \"0.0.0.0:9464\"\n"));
        assert_eq!(
            c.component(&no_env).expect("component").metrics,
            Some("0.0.0.0:9464".parse().expect("addr"))
        );
        assert!(c.check(&no_env).is_ok());
        let d = c.describe(&no_env);
        assert!(
            d.contains("warning: metrics.listen = 0.0.0.0:9464 is not a loopback address: the endpoint has no authentication"),
            "{d}"
        );
    }

    #[test]
    fn metrics_bad_values_named() {
        let cases = [
            ("listen = \"nowhere\"", "metrics.listen"),
            ("listen = \"example.org:9464\"", "metrics.listen"),
            ("listen = \"127.0.0.1\"", "metrics.listen"),
            ("listen = \"127.0.0.1:0\"", "metrics.listen"),
            ("listen = 9464", "metrics.listen"),
            ("listen = \"127.0.0.1:9464\"\npath = \"/m\"", "metrics.path"),
            ("", "metrics.listen"),
        ];
        for (line, key) in cases {
            let e = parse_err(&format!("{MINIMAL}[metrics]\n{line}\n"));
            assert_eq!(e.key(), Some(key), "{line}: {e}");
            assert!(e.to_string().contains(key), "{e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        let e = parse_err(&format!("{MINIMAL}[metrics]\nlisten = \"nowhere\"\n"));
        assert_eq!(e.line(), Some(8));
        assert!(e.to_string().contains("127.0.0.1:9464"), "{e}");
        let e = parse_err(&format!(
            "{MINIMAL}[metrics]\nlisten = \"127.0.0.1:9464\"\npath = \"/m\"\n"
        ));
        assert!(e.to_string().contains("unknown key"), "{e}");
    }
}
