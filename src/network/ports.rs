//! `-p/--publish` as Docker parses it, and the ports a running container has published.

use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One `-p` request: `[IP:][HOST:]CONTAINER[/PROTO]`; host port 0 means any free one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRequest {
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

/// A published port of a running container: where the host listens and where it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl Published {
    /// As `docker port` and the PORTS column write it: `0.0.0.0:8080->80/tcp`.
    pub fn display(&self) -> String {
        format!(
            "{}:{}->{}/{}",
            self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            self.host_port,
            self.container_port,
            self.protocol
        )
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortError {
    #[error("invalid port specification: \"{0}\"")]
    Invalid(String),
    #[error("invalid proto: {0}")]
    Protocol(String),
    #[error("port ranges are not supported by husk: \"{0}\"; publish each port with its own -p")]
    Range(String),
    #[error("invalid IP address in publish specification: \"{0}\" (husk publishes IPv4 ports)")]
    Address(String),
}

fn port(text: &str, whole: &str, allow_zero: bool) -> Result<u16, PortError> {
    if text.contains('-') {
        return Err(PortError::Range(whole.to_string()));
    }
    match text.parse::<u16>() {
        Ok(0) if !allow_zero => Err(PortError::Invalid(whole.to_string())),
        Ok(port) => Ok(port),
        Err(_) => Err(PortError::Invalid(whole.to_string())),
    }
}

impl FromStr for PortRequest {
    type Err = PortError;

    fn from_str(text: &str) -> Result<Self, PortError> {
        let (spec, protocol) = match text.rsplit_once('/') {
            Some((spec, "tcp")) => (spec, Protocol::Tcp),
            Some((spec, "udp")) => (spec, Protocol::Udp),
            Some((_, other)) => return Err(PortError::Protocol(other.to_string())),
            None => (text, Protocol::Tcp),
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [container] => (None, "", *container),
            [host, container] => (None, *host, *container),
            [ip, host, container] => (Some(*ip), *host, *container),
            _ => return Err(PortError::Invalid(text.to_string())),
        };
        let host_ip = match ip {
            None | Some("") => None,
            Some(ip) => Some(
                ip.parse::<Ipv4Addr>()
                    .map_err(|_| PortError::Address(ip.to_string()))?,
            ),
        };
        let host_port = if host.is_empty() {
            0
        } else {
            port(host, text, false)?
        };
        Ok(PortRequest {
            host_ip,
            host_port,
            container_port: port(container, text, false)?,
            protocol,
        })
    }
}

/// An image's `ExposedPorts` key ("80/tcp", "53/udp", "8080").
pub fn parse_exposed(key: &str) -> Option<(u16, Protocol)> {
    let (port, protocol) = match key.split_once('/') {
        Some((port, "tcp")) => (port, Protocol::Tcp),
        Some((port, "udp")) => (port, Protocol::Udp),
        Some(_) => return None,
        None => (key, Protocol::Tcp),
    };
    port.parse().ok().filter(|p| *p != 0).map(|p| (p, protocol))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PortRequest, PortError> {
        text.parse()
    }

    #[test]
    fn docker_publish_forms() {
        assert_eq!(
            parse("8080:80").unwrap(),
            PortRequest {
                host_ip: None,
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(parse("80").unwrap().host_port, 0);
        let on = parse("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(on.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(on.protocol, Protocol::Udp);
        assert_eq!(parse("127.0.0.1::80").unwrap().host_port, 0);
    }

    #[test]
    fn bad_publish_specs_are_refused() {
        assert!(matches!(parse("80/sctp"), Err(PortError::Protocol(_))));
        assert!(matches!(parse("8000-8010:80"), Err(PortError::Range(_))));
        assert!(matches!(parse("x:80"), Err(PortError::Invalid(_))));
        assert!(matches!(parse("0:80"), Err(PortError::Invalid(_))));
        assert!(matches!(parse("80:0"), Err(PortError::Invalid(_))));
        assert!(matches!(parse("70000:80"), Err(PortError::Invalid(_))));
        assert!(matches!(parse("::1:80:80"), Err(PortError::Invalid(_))));
        assert!(matches!(parse("fe80::1:80:80"), Err(PortError::Invalid(_))));
        assert!(matches!(
            parse("999.1.1.1:80:80"),
            Err(PortError::Address(_))
        ));
    }

    #[test]
    fn exposed_keys() {
        assert_eq!(parse_exposed("80/tcp"), Some((80, Protocol::Tcp)));
        assert_eq!(parse_exposed("53/udp"), Some((53, Protocol::Udp)));
        assert_eq!(parse_exposed("8080"), Some((8080, Protocol::Tcp)));
        assert_eq!(parse_exposed("1/sctp"), None);
        assert_eq!(parse_exposed("0/tcp"), None);
    }

    #[test]
    fn display_is_dockers() {
        let p = Published {
            host_ip: None,
            host_port: 8080,
            container_ip: Ipv4Addr::new(10, 87, 0, 2),
            container_port: 80,
            protocol: Protocol::Tcp,
        };
        assert_eq!(p.display(), "0.0.0.0:8080->80/tcp");
    }
}
