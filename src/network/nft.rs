//! husk's nftables tables: NAT for outbound traffic, DNAT for published ports, isolation
//! between networks (`ip husk`), and each container's bridge port held to its own MAC and
//! address (`bridge husk`). The rules are fixed and written once; what changes per network and per
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

/// Anti-spoofing on the bridges: a frame entering a bridge from a container's port (its veth,
/// its VM's tap: `guarded`) must carry that endpoint's MAC and, for IPv4 and ARP, its address
/// (`sources`); anything else a container sends (another member's MAC or address, IPv6, other
/// ethertypes: husk networks are IPv4) is dropped before the bridge learns or forwards it. A
/// VM guest is root in its own kernel, and a process container with CAP_NET_RAW (Docker's
/// default set) writes raw frames: neither may pose as a neighbour or as the gateway.
const BRIDGE_DEFINITION: &str = r#"table bridge husk {
  set guarded { type ifname; }
  set sources { type ifname . ether_addr . ipv4_addr; }
  chain prerouting {
    type filter hook prerouting priority -300; policy accept;
    iifname != @guarded accept
    ether type ip iifname . ether saddr . ip saddr != @sources drop
    ether type arp iifname . ether saddr . arp saddr ip != @sources drop
    ether type != { ip, arp } drop
  }
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
    family_table_exists("ip")
}

fn family_table_exists(family: &str) -> Result<bool, NftError> {
    let status = Command::new("nft")
        .args(["list", "table", family, TABLE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(NftError::Spawn)?;
    Ok(status.success())
}

/// The table with its fixed rules, created when missing (callers hold the network lock, so
/// two husk calls never both create it).
pub fn ensure_table() -> Result<(), NftError> {
    if !table_exists()? {
        apply(DEFINITION, "creating table ip husk")?;
    }
    if !family_table_exists("bridge")? {
        apply(BRIDGE_DEFINITION, "creating table bridge husk")?;
    }
    Ok(())
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

/// The elements that admit one endpoint: its port guarded, its MAC and address as the only
/// source allowed in through it, and its published ports.
fn endpoint_elements(link: &str, mac: &str, ip: Ipv4Addr, ports: &[Published]) -> Vec<String> {
    let mut elements = vec![
        format!("bridge {TABLE} guarded {{ \"{link}\" }}"),
        format!("bridge {TABLE} sources {{ \"{link}\" . {mac} . {ip} }}"),
    ];
    for port in ports {
        let (map, element) = element(port);
        elements.push(format!("ip {TABLE} {map} {{ {element} }}"));
    }
    elements
}

/// A container joins: its guard and its DNAT elements, all in one transaction. One `nft` run
/// in the common case (every run costs milliseconds): the tables are made only when the first
/// try finds one missing.
pub fn admit(link: &str, mac: &str, ip: Ipv4Addr, ports: &[Published]) -> Result<(), NftError> {
    let script: String = endpoint_elements(link, mac, ip, ports)
        .iter()
        .map(|element| format!("add element {element}\n"))
        .collect();
    match apply(&script, "admitting a container") {
        Err(err) if is_missing(&err) => {
            ensure_table()?;
            apply(&script, "admitting a container")
        }
        other => other,
    }
}

/// A container leaves: what `admit` added, in one transaction, or, when some is already gone
/// (or a whole table is, or it joined before husk guarded ports), each element alone, skipping
/// the missing ones.
pub fn dismiss(link: &str, mac: &str, ip: Ipv4Addr, ports: &[Published]) -> Result<(), NftError> {
    // The key alone names an element of a map.
    let deletes: Vec<String> = endpoint_elements(link, mac, ip, ports)
        .into_iter()
        .map(|element| match element.split_once(" : ") {
            Some((key, _)) => format!("delete element {key} }}\n"),
            None => format!("delete element {element}\n"),
        })
        .collect();
    match apply(&deletes.concat(), "dismissing a container") {
        Ok(()) => return Ok(()),
        Err(err) if !is_missing(&err) => return Err(err),
        Err(_) => {}
    }
    for delete in &deletes {
        if let Err(err) = apply(delete, "dismissing a container") {
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
    fn an_endpoint_is_guarded_by_its_port_mac_and_address() {
        let port = Published {
            host_ip: None,
            host_port: 8080,
            container_ip: Ipv4Addr::new(10, 87, 0, 2),
            container_port: 80,
            protocol: Protocol::Tcp,
        };
        let elements = endpoint_elements(
            "vethabc",
            "02:42:0a:57:00:02",
            Ipv4Addr::new(10, 87, 0, 2),
            &[port],
        );
        assert_eq!(
            elements,
            [
                "bridge husk guarded { \"vethabc\" }",
                "bridge husk sources { \"vethabc\" . 02:42:0a:57:00:02 . 10.87.0.2 }",
                "ip husk ports { tcp . 8080 : 10.87.0.2 . 80 }",
            ]
        );
    }

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
