//! Checks of keys that hold an address: `host:port` to connect to (`server`,
//! `watch.server`, `standby.server`) and socket addresses to listen on
//! (`watch.http`, `metrics.listen`). Each error names the key and gives an
//! example.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::ConfigError;

/// `host:port`, with a numeric port; an IPv6 host goes in brackets.
pub(super) fn host_port(key: &str, value: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| {
        ConfigError::new(
            key,
            format!("{value:?} is not host:port such as \"127.0.0.1:5347\" ({why})"),
        )
    };
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(bad("no port"));
    };
    match port.parse::<u16>() {
        Ok(0) => return Err(bad("port 0")),
        Ok(_) => {}
        Err(_) => return Err(bad("the port is not a number from 1 to 65535")),
    }
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if let Some(inner) = host.strip_prefix('[') {
        let ok = inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
        if !ok {
            return Err(bad("not an IPv6 address in brackets"));
        }
    } else if host.contains(':') {
        return Err(bad(
            "an IPv6 address goes in brackets, as in \"[::1]:5347\"",
        ));
    } else if host
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '/' | '@' | '[' | ']'))
    {
        return Err(bad("not a host name or address"));
    }
    Ok(())
}

/// A socket address for the web feed (`127.0.0.1:8080`, `[::1]:8080`,
/// `localhost:8080`).
pub(super) fn parse_http_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    parse_socket_addr(key, value, "127.0.0.1:8080")
}

/// A socket address to listen on (`127.0.0.1:PORT`, `[::1]:PORT`,
/// `localhost:PORT`); `example` is shown in the error.
pub(super) fn parse_socket_addr(
    key: &str,
    value: &str,
    example: &str,
) -> Result<SocketAddr, ConfigError> {
    if let Ok(a) = value.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(port) = value.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        }
    }
    Err(ConfigError::new(
        key,
        format!("{value:?} is not an address:port such as \"{example}\""),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_and_listen_addresses() {
        for ok in ["127.0.0.1:5347", "[::1]:5347", "xmpp.example.org:5222"] {
            assert!(host_port("server", ok).is_ok(), "{ok}");
        }
        for bad in [
            "h", "h:port", "h:0", ":5347", "::1:5347", "[::g]:1", "a b:1", "a@b:1",
        ] {
            let e = host_port("server", bad).expect_err(bad);
            assert_eq!(e.key(), Some("server"), "{bad}: {e}");
            assert!(e.message().contains("is not host:port"), "{bad}: {e}");
        }
        let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
        assert_eq!(parse_http_addr("watch.http", "localhost:8080"), Ok(local));
        assert_eq!(parse_http_addr("watch.http", "127.0.0.1:8080"), Ok(local));
        let e = parse_socket_addr("metrics.listen", "example.org:1", "127.0.0.1:9464")
            .expect_err("a name");
        assert!(e.message().contains("\"127.0.0.1:9464\""), "{e}");
    }
}
