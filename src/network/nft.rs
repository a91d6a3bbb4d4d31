//! husk's nftables table: NAT for outbound traffic, DNAT for published ports, isolation
//! between networks. The rules are fixed and written once; what changes per network and per
//! container are set and map elements, added and deleted by value, so a cleanup never needs
//! a rule handle and never touches another owner's rules. `nft` itself (Debian's nftables)
//! applies them: its JSON/text input is the interface the nftables project keeps stable.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::ports::{Protocol, Published};

pub const TABLE: &str = "husk";

/// Published ports are matched only on addresses of this host (`fib daddr type local`), in
/// prerouting (from outside and from containers) and in output (from the host itself, the
/// loopback included). `ports_on` holds `-p IP:HOST:CTR`, `ports` the any-address kind.
/// Traffic from a bridge to anything but a husk bridge is masqueraded; loopback sources are
/// masqueraded onto the bridge (with route_localnet on it) so `curl 127.0.0.1:PORT` works,
/// as with Docker. A container reaching a published port through the host's address (the
/// bridge's, say) is masqueraded too when its traffic is sent back onto a bridge (hairpin), so
/// the answer returns through the host rather than straight from the other container.
/// `isolation` sends each bridge's forwarded traffic to its own chain, which drops what goes to
/// another husk bridge (Docker's network isolation).
const DEFINITION: &str = r#"table ip husk {
  set bridges { type ifname; }
  map ports { type inet_proto . inet_service : ipv4_addr . inet_service; }
  map ports_on { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }
  map isolation { type ifname : verdict; }
  chain publish {
    dnat ip to ip daddr . meta l4proto . th dport map @ports_on
    dnat ip to meta l4proto . th dport map @ports
  }
  chain prerouting { type nat hook prerouting priority dstnat; policy accept; fib daddr type local jump publish; }
  chain output { type nat hook output priority -100; policy accept; fib daddr type local jump publish; }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    iifname @bridges oifname != @bridges masquerade
    oifname @bridges ip saddr 127.0.0.0/8 masquerade
    iifname @bridges oifname @bridges ct status dnat masquerade
  }
  chain forward { type filter hook forward priority filter; policy accept; iifname vmap @isolation; }
}
"#;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("running nft (Debian: nftables): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("nft {what}: {message}")]
    Failed { what: String, message: String },
}

/// Apply an nft script; `what` names it in the error.
fn apply(script: &str, what: &str) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(NftError::Spawn)?;
    }
    let output = child.wait_with_output().map_err(NftError::Spawn)?;
    if output.status.success() {
        return Ok(());
    }
    let message = String::from_utf8_lossy(&output.stderr);
    Err(NftError::Failed {
        what: what.to_string(),
        message: message
            .lines()
            .find(|l| l.contains("Error"))
            .unwrap_or(message.trim())
            .to_string(),
    })
}

fn table_exists() -> Result<bool, NftError> {
    let status = Command::new("nft")
        .args(["list", "table", "ip", TABLE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(NftError::Spawn)?;
    Ok(status.success())
}

/// The table with its fixed rules, created when missing (callers hold the network lock, so
/// two husk calls never both create it).
pub fn ensure_table() -> Result<(), NftError> {
    if table_exists()? {
        return Ok(());
    }
    apply(DEFINITION, "creating table ip husk")
}

fn isolation_chain(bridge: &str) -> String {
    format!("iso-{bridge}")
}

/// A network's bridge joins the table: NAT for its traffic, its isolation chain.
pub fn add_bridge(bridge: &str) -> Result<(), NftError> {
    ensure_table()?;
    let chain = isolation_chain(bridge);
    // `add` of a chain that exists is fine; `flush` keeps its one rule single.
    let script = format!(
        "add chain ip {TABLE} {chain}\nflush chain ip {TABLE} {chain}\n\
         add rule ip {TABLE} {chain} oifname != \"{bridge}\" oifname @bridges drop\n\
         add element ip {TABLE} bridges {{ \"{bridge}\" }}\n\
         add element ip {TABLE} isolation {{ \"{bridge}\" : jump {chain} }}\n"
    );
    apply(&script, &format!("adding bridge {bridge}"))
}

/// A network's bridge leaves the table (nothing to do when it was never there).
pub fn remove_bridge(bridge: &str) -> Result<(), NftError> {
    if !table_exists()? {
        return Ok(());
    }
    let chain = isolation_chain(bridge);
    // Each step alone, so that one already undone does not stop the rest.
    for (script, what) in [
        (
            format!("delete element ip {TABLE} isolation {{ \"{bridge}\" }}"),
            "isolation",
        ),
        (
            format!("delete element ip {TABLE} bridges {{ \"{bridge}\" }}"),
            "bridges",
        ),
        (format!("delete chain ip {TABLE} {chain}"), "chain"),
    ] {
        if let Err(err) = apply(&script, what) {
            if !is_missing(&err) {
                return Err(err);
            }
        }
    }
    Ok(())
}

fn element(port: &Published) -> (String, String) {
    let proto = match port.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    let target = format!("{} . {}", port.container_ip, port.container_port);
    match port.host_ip {
        Some(ip) if ip != Ipv4Addr::UNSPECIFIED => (
            "ports_on".into(),
            format!("{ip} . {proto} . {} : {target}", port.host_port),
        ),
        _ => (
            "ports".into(),
            format!("{proto} . {} : {target}", port.host_port),
        ),
    }
}

/// DNAT for published ports, all in one transaction. One `nft` run in the common case (every
/// run costs milliseconds): the table is made only when the first try finds it missing.
pub fn publish(ports: &[Published]) -> Result<(), NftError> {
    if ports.is_empty() {
        return Ok(());
    }
    let mut script = String::new();
    for port in ports {
        let (map, element) = element(port);
        script.push_str(&format!("add element ip {TABLE} {map} {{ {element} }}\n"));
    }
    match apply(&script, "publishing ports") {
        Err(err) if is_missing(&err) => {
            ensure_table()?;
            apply(&script, "publishing ports")
        }
        other => other,
    }
}

/// Remove published ports: one transaction, or, when some are already gone (or the whole
/// table is), each alone, skipping the missing ones.
pub fn unpublish(ports: &[Published]) -> Result<(), NftError> {
    if ports.is_empty() {
        return Ok(());
    }
    let delete = |port: &Published| {
        let (map, element) = element(port);
        // The key alone names an element of a map.
        let key = element.split(" : ").next().unwrap_or_default().to_string();
        format!("delete element ip {TABLE} {map} {{ {key} }}\n")
    };
    let all: String = ports.iter().map(delete).collect();
    match apply(&all, "unpublishing ports") {
        Ok(()) => return Ok(()),
        Err(err) if !is_missing(&err) => return Err(err),
        Err(_) => {}
    }
    for port in ports {
        if let Err(err) = apply(&delete(port), "unpublishing a port") {
            if !is_missing(&err) {
                return Err(err);
            }
        }
    }
    Ok(())
}

/// Remove every published port whose target lies in one of `subnets`: the DNAT elements of
/// a bridge being reclaimed, whose owner's records (that would name them) are gone.
pub fn unpublish_into(subnets: &[super::Subnet]) -> Result<(), NftError> {
    if subnets.is_empty() || !table_exists()? {
        return Ok(());
    }
    let mut script = String::new();
    for map in ["ports", "ports_on"] {
        let output = Command::new("nft")
            .args(["-j", "list", "map", "ip", TABLE, map])
            .stderr(Stdio::null())
            .output()
            .map_err(NftError::Spawn)?;
        if !output.status.success() {
            continue;
        }
        let listing: serde_json::Value =
            serde_json::from_slice(&output.stdout).map_err(|e| NftError::Failed {
                what: format!("listing map {map}"),
                message: e.to_string(),
            })?;
        for key in keys_targeting(&listing, subnets) {
            script.push_str(&format!("delete element ip {TABLE} {map} {{ {key} }}\n"));
        }
    }
    if script.is_empty() {
        return Ok(());
    }
    apply(&script, "removing the ports of a reclaimed bridge")
}

/// The keys (`tcp . 8080`, `127.0.0.1 . tcp . 8080`) of the elements of an `nft -j list map`
/// answer whose target address lies in one of `subnets`.
fn keys_targeting(listing: &serde_json::Value, subnets: &[super::Subnet]) -> Vec<String> {
    let concat = |value: &serde_json::Value| -> Option<Vec<String>> {
        Some(
            value
                .get("concat")?
                .as_array()?
                .iter()
                .map(|part| match part {
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect(),
        )
    };
    let entries = listing.get("nftables").and_then(|v| v.as_array());
    entries
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.get("map")?.get("elem")?.as_array())
        .flatten()
        .filter_map(|element| {
            let pair = element.as_array()?;
            let key = concat(pair.first()?)?;
            let target = concat(pair.get(1)?)?;
            let ip: Ipv4Addr = target.first()?.parse().ok()?;
            subnets
                .iter()
                .any(|s| s.contains(ip))
                .then(|| key.join(" . "))
        })
        .collect()
}

fn is_missing(err: &NftError) -> bool {
    matches!(err, NftError::Failed { message, .. }
        if message.contains("No such file or directory") || message.contains("does not exist"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reclaimed_subnets_select_their_elements() {
        // `nft -j list map ip husk ports_on` of nftables 1.0.6 (Debian 12).
        let listing: serde_json::Value = serde_json::from_str(
            r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"map": {"family": "ip",
            "name": "ports_on", "table": "husk", "elem": [
            [{"concat": ["127.0.0.1", "tcp", 8081]}, {"concat": ["10.87.0.2", 80]}],
            [{"concat": ["127.0.0.1", "udp", 53]}, {"concat": ["10.86.4.2", 53]}]]}}]}"#,
        )
        .unwrap();
        let subnet: super::super::Subnet = "10.87.0.0/16".parse().unwrap();
        assert_eq!(
            keys_targeting(&listing, &[subnet]),
            vec!["127.0.0.1 . tcp . 8081".to_string()]
        );
        assert!(keys_targeting(&listing, &["10.1.0.0/16".parse().unwrap()]).is_empty());
        assert!(keys_targeting(&serde_json::json!({"nftables": 3}), &[subnet]).is_empty());
    }
}
