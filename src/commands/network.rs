//! `husk network create|ls|inspect|rm|prune|connect|disconnect`, and `husk port`.

use std::path::Path;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use husk::container::spec::{ExtraNetwork, NetworkMode};
use husk::container::{Containers, Status};
use husk::display::Table;
use husk::network::{Network, NetworkRequest, Networks, Subnet, DEFAULT_NETWORK};
use serde_json::{json, Value};

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more networks.
    Inspect(InspectArgs),
    /// Remove one or more networks.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove all networks no container uses.
    Prune(PruneArgs),
    /// Connect a container to a network (a running process container gets eth1, eth2, ...).
    Connect(ConnectArgs),
    /// Disconnect a container from a network.
    Disconnect(DisconnectArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Driver to manage the network (husk has bridge).
    #[arg(short, long, default_value = "bridge")]
    pub driver: String,
    /// Subnet in CIDR format (IPv4), e.g. 10.90.0.0/24.
    #[arg(long)]
    pub subnet: Option<String>,
    /// IPv4 gateway for the subnet.
    #[arg(long)]
    pub gateway: Option<std::net::Ipv4Addr>,
    /// Set metadata on a network (K=V).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    pub name: String,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only display network IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate the output.
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format the output using a Go-template subset: {{.Name}}, {{json .IPAM}}.
    #[arg(short, long)]
    pub format: Option<String>,
    #[arg(required = true, value_name = "NETWORK")]
    pub networks: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(required = true, value_name = "NETWORK")]
    pub networks: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation (husk never prompts).
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// IPv4 address on the network.
    #[arg(long)]
    pub ip: Option<std::net::Ipv4Addr>,
    /// Add a network-scoped alias for the container.
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
    pub network: String,
    pub container: String,
}

#[derive(Debug, Args)]
pub struct DisconnectArgs {
    /// Accepted as Docker's: the endpoint goes in any case.
    #[arg(short, long)]
    pub force: bool,
    pub network: String,
    pub container: String,
}

#[derive(Debug, Args)]
pub struct PortArgs {
    pub container: String,
    /// PRIVATE_PORT[/PROTO]: only this one.
    pub port: Option<String>,
}

/// Docker's shape of `network inspect`.
pub fn value(root: &Path, network: &Network) -> Value {
    let names = Containers::open(root).ok();
    let containers: serde_json::Map<String, Value> = network
        .endpoints
        .iter()
        .map(|(id, endpoint)| {
            let name = names
                .as_ref()
                .and_then(|s| s.load(id).ok())
                .map_or(endpoint.container_name.clone(), |r| r.name);
            (
                id.clone(),
                json!({
                    "Name": name,
                    "MacAddress": endpoint.mac,
                    "IPv4Address": format!("{}/{}", endpoint.ip, network.subnet.prefix),
                    "IPv6Address": "",
                }),
            )
        })
        .collect();
    json!({
        "Name": network.name,
        "Id": network.id,
        "Created": network.created.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "Scope": "local",
        "Driver": network.driver,
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": [{"Subnet": network.subnet.to_string(), "Gateway": network.gateway.to_string()}],
        },
        "Internal": false,
        "Attachable": false,
        "Containers": containers,
        "Options": {"com.docker.network.bridge.name": network.bridge},
        "Labels": network.labels,
    })
}

/// Names of the containers (of any status) whose options name this network.
pub fn users(root: &Path, network: &Network) -> Result<Vec<String>> {
    Ok(Containers::open(root)?
        .list()?
        .into_iter()
        .filter(|r| {
            matches!(&r.options.network, NetworkMode::Network(name)
                if *name == network.name || *name == network.id)
        })
        .map(|r| r.name)
        .collect())
}

pub fn run(root: &Path, command: NetworkCommand) -> Result<i32> {
    let networks = Networks::open(root)?;
    match command {
        NetworkCommand::Create(args) => {
            if args.driver != "bridge" {
                bail!(
                    "plugin \"{}\" not found: husk networks use the bridge driver",
                    args.driver
                );
            }
            let mut labels = std::collections::BTreeMap::new();
            for label in &args.labels {
                let (k, v) = label.split_once('=').unwrap_or((label, ""));
                labels.insert(k.to_string(), v.to_string());
            }
            let network = networks.create(NetworkRequest {
                name: args.name,
                subnet: args
                    .subnet
                    .as_deref()
                    .map(str::parse::<Subnet>)
                    .transpose()?,
                gateway: args.gateway,
                labels,
            })?;
            println!("{}", network.id);
            Ok(0)
        }
        NetworkCommand::Ls(args) => {
            let list = networks.list()?;
            let id = |n: &Network| {
                if args.no_trunc {
                    n.id.clone()
                } else {
                    n.short_id().to_string()
                }
            };
            if args.quiet {
                list.iter().for_each(|n| println!("{}", id(n)));
                return Ok(0);
            }
            let mut table = Table::new(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"]);
            for network in &list {
                table.row(vec![
                    id(network),
                    network.name.clone(),
                    network.driver.clone(),
                    "local".into(),
                ]);
            }
            print!("{}", table.render());
            Ok(0)
        }
        NetworkCommand::Inspect(args) => {
            let mut found = Vec::new();
            let mut failed = false;
            for key in &args.networks {
                match networks.find(key) {
                    Ok(network) => found.push(value(root, &network)),
                    Err(err) => {
                        eprintln!("Error: {err}");
                        failed = true;
                    }
                }
            }
            super::print_inspected(args.format.as_deref(), &found)?;
            Ok(i32::from(failed))
        }
        NetworkCommand::Rm(args) => {
            let mut failed = false;
            for key in &args.networks {
                match networks.remove(key) {
                    Ok(_) => println!("{key}"),
                    Err(err) => {
                        eprintln!("Error response from daemon: {err}");
                        failed = true;
                    }
                }
            }
            Ok(i32::from(failed))
        }
        NetworkCommand::Prune(_) => {
            let mut removed = Vec::new();
            for network in networks.list()? {
                if network.name == DEFAULT_NETWORK || !network.endpoints.is_empty() {
                    continue;
                }
                if users(root, &network)?.is_empty() {
                    networks.remove(&network.id)?;
                    removed.push(network.name);
                }
            }
            if !removed.is_empty() {
                println!("Deleted Networks:");
                removed.iter().for_each(|n| println!("{n}"));
            }
            Ok(0)
        }
        NetworkCommand::Connect(args) => {
            let network = networks.find(&args.network)?;
            let store = Containers::open(root)?;
            let record = store.find(&args.container)?;
            let options = &record.options;
            let on_it = matches!(&options.network, NetworkMode::Network(n) if *n == network.name)
                || options
                    .extra_networks
                    .iter()
                    .any(|e| e.name == network.name);
            if on_it {
                bail!(
                    "endpoint with name {} already exists in network {}",
                    record.name,
                    network.name
                );
            }
            if (args.ip.is_some() || !args.aliases.is_empty()) && !network.resolves_names() {
                bail!("user specified IP address and aliases are supported on user defined networks only");
            }
            let running = record.effective_status() == Status::Running;
            match &options.network {
                NetworkMode::None if running => bail!(
                    "container {} is running with --network none: it has no interface of husk's to add to (stop it, connect, start)",
                    record.name
                ),
                NetworkMode::None => {
                    store.update(&record.id, |r| {
                        r.options.network = NetworkMode::Network(network.name.clone());
                        r.options.ip = args.ip;
                        r.options.network_aliases = args.aliases.clone();
                    })?;
                    return Ok(0);
                }
                NetworkMode::Host | NetworkMode::Container(_) => bail!(
                    "container sharing network namespace with another container or host cannot be connected to any other network"
                ),
                NetworkMode::Network(_) => {}
            }
            if record.isolation == husk::container::Isolation::Vm {
                bail!(
                    "container {} runs with --isolation vm and is on one network: husk's monitor gives its guest one virtio-net device",
                    record.name
                );
            }
            let extra = ExtraNetwork {
                name: network.name.clone(),
                ip: args.ip,
                aliases: args.aliases.clone(),
            };
            if running {
                husk::network::attach::connect_running(root, &record, &extra)?;
            }
            store.update(&record.id, |r| r.options.extra_networks.push(extra.clone()))?;
            Ok(0)
        }
        NetworkCommand::Disconnect(args) => {
            let network = networks.find(&args.network)?;
            let store = Containers::open(root)?;
            let record = store.find(&args.container)?;
            let first =
                matches!(&record.options.network, NetworkMode::Network(n) if *n == network.name);
            let extra = record
                .options
                .extra_networks
                .iter()
                .any(|e| e.name == network.name);
            if !first && !extra {
                bail!(
                    "container {} is not connected to network {}",
                    record.name,
                    network.name
                );
            }
            if record.effective_status() == Status::Running {
                if record.isolation == husk::container::Isolation::Vm {
                    bail!(
                        "container {} is running with --isolation vm: husk disconnects a VM container that is not running (stop it first)",
                        record.name
                    );
                }
                husk::network::attach::release_endpoint(root, &record.id, &network.id)?;
            }
            store.update(&record.id, |r| {
                let options = &mut r.options;
                if first {
                    // Published ports stay: they are the container's (Docker's PortBindings),
                    // published on whichever network is its first at the next start, and
                    // docker-compose disconnects and reconnects every container it creates.
                    if options.extra_networks.is_empty() {
                        options.network = NetworkMode::None;
                        options.ip = None;
                        options.network_aliases.clear();
                    } else {
                        // The next network becomes the first: eth0 and the default route at
                        // the next start.
                        let next = options.extra_networks.remove(0);
                        options.network = NetworkMode::Network(next.name);
                        options.ip = next.ip;
                        options.network_aliases = next.aliases;
                    }
                } else {
                    options.extra_networks.retain(|e| e.name != network.name);
                }
            })?;
            Ok(0)
        }
    }
}

/// `husk port CONTAINER [PRIVATE_PORT[/PROTO]]`: as `docker port` prints them.
pub fn port(root: &Path, args: PortArgs) -> Result<i32> {
    let record = Containers::open(root)?.find(&args.container)?;
    let published: Vec<husk::network::Published> = husk::network::endpoints_of(root, &record.id)
        .into_iter()
        .flat_map(|(_, e)| e.published)
        .collect();
    let wanted = match &args.port {
        None => None,
        Some(text) => {
            let (port, proto) = text.split_once('/').unwrap_or((text, "tcp"));
            Some((
                port.parse::<u16>()
                    .map_err(|_| anyhow::anyhow!("invalid port {text:?}"))?,
                proto.to_string(),
            ))
        }
    };
    let mut shown = 0;
    for port in &published {
        match &wanted {
            None => println!(
                "{}/{} -> {}:{}",
                port.container_port,
                port.protocol,
                port.host_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                port.host_port
            ),
            Some((p, proto))
                if *p == port.container_port && *proto == port.protocol.to_string() =>
            {
                println!(
                    "{}:{}",
                    port.host_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                    port.host_port
                )
            }
            Some(_) => continue,
        }
        shown += 1;
    }
    if shown == 0 {
        if let Some(text) = &args.port {
            bail!("No public port '{text}' published for {}", record.name);
        }
    }
    Ok(0)
}
