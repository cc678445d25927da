//! Browser safety by default (SPEC section 7): the `Host` and `Origin`
//! guard every request passes before it is routed.
//!
//! # Why
//! Without a token (the default) the API trusts whoever can reach it, and
//! a browser reaches loopback on behalf of any page the user opens:
//! * a page on another site can send "simple" requests (a form-style
//!   `POST …/cancel`, a `text/plain` append) that need no CORS preflight,
//!   and open `/ws`, which browsers never subject to CORS;
//! * a page on a DNS name that the attacker re-points at 127.0.0.1 (DNS
//!   rebinding) is same-origin with the server as far as the browser
//!   knows, and reads everything.
//!
//! # The rules
//! * `Host` (every request): an IP literal the server may be reached at
//!   (a loopback address when bound to loopback, the bound address when
//!   bound to one address, any IP when bound to `0.0.0.0`/`::`),
//!   `localhost`, or a name given with `--allowed-host` (`*`: any). The
//!   port is not compared (a tunnel or port-forward changes it, and
//!   rebinding needs a *name*, which the rule already refuses). No `Host`
//!   at all (HTTP/1.0 tools) passes: browsers always send one. Else 421
//!   `misdirected_host`.
//! * `Origin` (every method but GET/HEAD/OPTIONS, and the `/ws` upgrade):
//!   absent, the server's own origin (`http://` or `https://` + the
//!   request's `Host`), or `--cors-origin` (`*`: any) pass. Anything
//!   else, `Origin: null` included (sandboxed frames, `file:` pages), is a
//!   403 `forbidden_origin`, and the request changes nothing: the guard
//!   runs before any handler. curl, the CLI and editor extensions send no
//!   `Origin` and are unaffected.

use std::net::{IpAddr, SocketAddr};

use http::header::{HOST, ORIGIN, UPGRADE};
use http::{HeaderMap, Method, Request};

use super::cors;
use super::error::ApiError;

/// The `--allowed-host` value that turns the `Host` check off (behind a
/// reverse proxy serving many names, which then owns the check).
pub const ANY_HOST: &str = "*";

/// Most characters of a refused `Host` or `Origin` quoted back in the
/// error message (the header itself may be up to the head limit).
const QUOTE_MAX: usize = 200;

/// Which `Host` values this server answers, fixed at start from the bound
/// address and `--allowed-host`. Read-only, shared through `App`.
#[derive(Debug, Clone)]
pub struct Hosts {
    bound: IpAddr,
    /// `--allowed-host` names, lowercased, without a trailing dot.
    names: Vec<String>,
    any: bool,
}

impl Hosts {
    pub fn new(bound: SocketAddr, allowed: &[String]) -> Self {
        let names: Vec<String> = allowed.iter().map(|n| normalize_name(n.trim())).collect();
        Hosts {
            bound: bound.ip(),
            any: names.iter().any(|n| n == ANY_HOST),
            names,
        }
    }

    /// Whether a `Host` header's host part (no port) names this server.
    fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.allows_ip(ip);
        }
        let name = normalize_name(host);
        name == "localhost" || self.names.contains(&name)
    }

    /// An IP literal cannot be re-pointed by DNS, so it is refused only
    /// when it cannot be this server's address.
    fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if self.bound.is_unspecified() {
            true
        } else if self.bound.is_loopback() {
            ip.is_loopback()
        } else {
            ip == self.bound.to_canonical() || ip.is_loopback()
        }
    }
}

fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Refuses a request whose `Host` does not name this server, or whose
/// `Origin` is foreign on a request that could change something or opens
/// a WebSocket. `to_ws`: the router's parsed route is `/ws` (so
/// `/%77s` counts; a request with `Upgrade: websocket` counts anywhere).
pub fn check<B>(hosts: &Hosts, cors_origin: Option<&str>, req: &Request<B>, to_ws: bool) -> Result<(), ApiError> {
    let host = req.headers().get(HOST).and_then(|h| h.to_str().ok());
    if let Some(raw) = req.headers().get(HOST) {
        let allowed = host.and_then(split_authority).is_some_and(|(h, _)| hosts.allows(h));
        if !allowed {
            return Err(ApiError::MisdirectedHost {
                host: quote(&String::from_utf8_lossy(raw.as_bytes())),
            });
        }
    }
    let upgrade = req
        .headers()
        .get(UPGRADE)
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let reads_only = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if reads_only && !to_ws && !upgrade {
        return Ok(());
    }
    check_origin(req.headers(), host, cors_origin)
}

/// The `Origin` part of [`check`].
fn check_origin(headers: &HeaderMap, host: Option<&str>, cors_origin: Option<&str>) -> Result<(), ApiError> {
    let Some(raw) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let origin = raw.to_str().unwrap_or("").trim();
    if cors::allows(cors_origin, origin) || host.is_some_and(|h| same_origin(origin, h)) {
        Ok(())
    } else {
        Err(ApiError::ForbiddenOrigin {
            origin: quote(&String::from_utf8_lossy(raw.as_bytes())),
        })
    }
}

/// Whether `origin` (`scheme://host[:port]`) is this server as reached
/// through `host` (the request's `Host`): same host, same port once the
/// scheme's default is filled in. `https` counts too (a TLS-terminating
/// proxy in front keeps the `Host`).
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    let (Some((oh, op)), Some((hh, hp))) = (split_authority(rest), split_authority(host)) else {
        return false;
    };
    oh.eq_ignore_ascii_case(hh) && op.unwrap_or(default) == hp.unwrap_or(default)
}

/// Splits `host[:port]` or `[v6]:port` into the host (without brackets)
/// and the port. None when it is not an authority (a path, a bad port).
fn split_authority(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':')?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return None, // an unbracketed IPv6 address
            None => (s, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((host, port))
}

/// A header value for an error message, cut at [`QUOTE_MAX`] characters.
fn quote(value: &str) -> String {
    value.chars().take(QUOTE_MAX).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(bound: &str, allowed: &[&str]) -> Hosts {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        Hosts::new(bound.parse().unwrap(), &allowed)
    }

    fn req(method: Method, path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn host_ok(h: &Hosts, host: &str) -> bool {
        check(h, None, &req(Method::GET, "/healthz", &[("host", host)]), false).is_ok()
    }

    #[test]
    fn a_loopback_server_answers_only_loopback_names() {
        let h = hosts("127.0.0.1:7070", &[]);
        for ok in [
            "127.0.0.1:7070",
            "127.0.0.1",
            "localhost:7070",
            "LOCALHOST",
            "localhost.",
            "[::1]:7070",
            "127.1.2.3:9",
        ] {
            assert!(host_ok(&h, ok), "{ok}");
        }
        for bad in [
            "evil.example:7070",
            "evil.example",
            "192.168.1.5:7070",
            "localhost.evil.example",
            "",
            "[::1",
            "a:b:c",
            "localhost:x",
        ] {
            assert!(!host_ok(&h, bad), "{bad}");
        }
        // No Host at all: not a browser.
        assert!(check(&h, None, &req(Method::GET, "/healthz", &[]), false).is_ok());
    }

    #[test]
    fn allowed_hosts_and_wildcard_binds() {
        let h = hosts("127.0.0.1:7070", &["Box.Lan", "dev.example."]);
        assert!(host_ok(&h, "box.lan:7070") && host_ok(&h, "dev.example"));
        assert!(!host_ok(&h, "other.lan"));
        let any_ip = hosts("0.0.0.0:7070", &[]);
        assert!(host_ok(&any_ip, "10.1.2.3:7070") && host_ok(&any_ip, "[fe80::1]:7070"));
        assert!(!host_ok(&any_ip, "box.lan:7070"));
        let one = hosts("192.168.1.5:7070", &[]);
        assert!(host_ok(&one, "192.168.1.5:7070") && host_ok(&one, "localhost"));
        assert!(!host_ok(&one, "10.0.0.1:7070"));
        assert!(host_ok(&hosts("127.0.0.1:1", &["*"]), "anything.example"));
    }

    #[test]
    fn foreign_origins_are_refused_on_writes_and_ws_only() {
        let h = hosts("127.0.0.1:7070", &[]);
        let with = |m: Method, path: &str, origin: &str, cors: Option<&str>| {
            let to_ws = path == "/ws";
            check(
                &h,
                cors,
                &req(m, path, &[("host", "127.0.0.1:7070"), ("origin", origin)]),
                to_ws,
            )
        };
        let evil = "https://evil.example";
        assert!(matches!(
            with(Method::POST, "/api/processes/x/cancel", evil, None),
            Err(ApiError::ForbiddenOrigin { .. })
        ));
        assert!(with(Method::DELETE, "/api/processes/x", "null", None).is_err());
        assert!(with(Method::GET, "/ws", evil, None).is_err());
        assert!(with(Method::GET, "/api/processes", evil, None).is_ok());
        assert!(with(Method::OPTIONS, "/api/processes", evil, None).is_ok());
        assert!(with(Method::POST, "/api/prune", "http://127.0.0.1:7070", None).is_ok());
        assert!(with(Method::POST, "/api/prune", "http://127.0.0.1:7071", None).is_err());
        assert!(with(Method::POST, "/api/prune", evil, Some(evil)).is_ok());
        assert!(with(Method::POST, "/api/prune", "https://evil.example.org", Some(evil)).is_err());
        assert!(with(Method::GET, "/ws", "null", Some("*")).is_ok());
        let upgrade = req(
            Method::GET,
            "/elsewhere",
            &[("host", "127.0.0.1:7070"), ("origin", evil), ("upgrade", "WebSocket")],
        );
        assert!(
            check(&h, None, &upgrade, false).is_err(),
            "an upgrade anywhere is guarded"
        );
    }

    #[test]
    fn own_origin_fills_in_default_ports() {
        assert!(same_origin("http://localhost", "localhost:80"));
        assert!(same_origin("https://box.lan", "box.lan"));
        assert!(same_origin("http://[::1]:7070", "[::1]:7070"));
        assert!(!same_origin("http://localhost", "localhost:7070"));
        assert!(!same_origin("ftp://localhost:7070", "localhost:7070"));
        assert!(!same_origin("null", "localhost:7070"));
    }
}
