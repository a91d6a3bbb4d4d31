//! A container joining a network and leaving it: the kernel state (bridge, veth pair, the
//! container's namespace configured before its init runs, nft elements, reserved host ports)
//! made from the network store and undone from it.
//!
//! The container's network namespace is made here, before the init exists: this thread
//! unshares into a fresh one, keeps a descriptor of it and an rtnetlink socket inside it, and
//! returns to its own; the veth's container end is created directly inside, configured
//! (address, route, loopback), and the init then only `setns`es into it. No round trip with
//! the init, and the namespace lives exactly as long as the container's processes (and this
//! descriptor): when it goes, the kernel deletes the veth pair with it.
//!
//! A VM container's end is a tap on the same bridge instead (src/network/tap.rs): the monitor's
//! virtio-net device reads and writes it, and the guest agent configures the address, route,
//! MTU and /etc files the start request carries. Process and VM containers on one network are
//! then the same kind of member: an address on the bridge, names in each other's hosts files.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn};

use super::netlink::{Interface, Rtnl};
use super::{
    nft, Endpoint, Network, NetworkError, Networks, PortRequest, Protocol, Published, StoreLock,
};
use crate::container::spec::NetworkMode;
use crate::container::{Containers, Isolation, Record, Status};

const MTU: u32 = 1500;
/// The container's end of its veth pair.
const CONTAINER_INTERFACE: &str = "eth0";

/// What the container needs to be in its network: its link, and the generated /etc/hosts and
/// /etc/resolv.conf.
pub struct NetworkJoin {
    pub link: Link,
    pub hosts: String,
    pub resolv: String,
}

/// How the container reaches its network.
pub enum Link {
    /// Process isolation: the namespace, configured, that the init enters.
    Namespace(OwnedFd),
    /// VM isolation: a tap on the bridge for the monitor's virtio-net device, and what the
    /// guest configures on its end.
    Tap {
        tap: File,
        interface: GuestInterface,
    },
}

/// The guest's side of a VM container's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestInterface {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: [u8; 6],
    pub mtu: u16,
}

impl NetworkJoin {
    /// The namespace a process container's init enters.
    pub fn netns(&self) -> Option<&OwnedFd> {
        match &self.link {
            Link::Namespace(fd) => Some(fd),
            Link::Tap { .. } => None,
        }
    }

    /// A VM container's tap and guest interface.
    pub fn tap(&self) -> Option<(&File, &GuestInterface)> {
        match &self.link {
            Link::Tap { tap, interface } => Some((tap, interface)),
            Link::Namespace(_) => None,
        }
    }
}

/// A container's hold on its network for as long as it runs: the namespace, the reserved
/// host ports. Dropping it releases the endpoint (veth, DNAT, address, hosts entries).
pub struct Attachment {
    root: PathBuf,
    container_id: String,
    join: NetworkJoin,
    /// Bound (not listening) sockets on each published host port, so neither another
    /// container nor a host program can take one while the container has it.
    _reservations: Vec<OwnedFd>,
    /// Whether an endpoint was made (joining another container's namespace makes none).
    owns_endpoint: bool,
}

impl Attachment {
    pub fn join(&self) -> &NetworkJoin {
        &self.join
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if self.owns_endpoint {
            if let Err(err) = release_container(&self.root, &self.container_id) {
                eprintln!(
                    "husk: releasing the network of {}: {err}",
                    self.container_id
                );
            }
        }
    }
}

/// Join the network the container's options name; None for `none` and `host` (the spec's
/// namespaces say all there is to say).
pub fn attach(
    root: &Path,
    record: &Record,
    container_dir: &Path,
    hostname: &str,
) -> Result<Option<Attachment>, NetworkError> {
    match &record.options.network {
        NetworkMode::None | NetworkMode::Host => Ok(None),
        NetworkMode::Container(other) => join_container(root, record, other).map(Some),
        NetworkMode::Network(name) => {
            let mut attachment = join_network(root, record, name, container_dir, hostname)?;
            let extras = &record.options.extra_networks;
            if extras.is_empty() {
                return Ok(Some(attachment));
            }
            let Link::Namespace(netns) = &attachment.join.link else {
                return Err(one_vm_network());
            };
            let netns = netns
                .try_clone()
                .map_err(super::io_err(Path::new("netns")))?;
            for (index, extra) in extras.iter().enumerate() {
                // On an error, dropping `attachment` releases every endpoint made so far.
                join_another(
                    root,
                    record,
                    extra,
                    &netns,
                    index + 1,
                    container_dir,
                    hostname,
                )?;
            }
            attachment.join.hosts = hosts_file(&Networks::open(root)?.list()?, &record.id);
            Ok(Some(attachment))
        }
    }
}

fn one_vm_network() -> NetworkError {
    NetworkError::Address(
        "a container with --isolation vm is on one network: husk's monitor gives its guest one \
         virtio-net device"
            .into(),
    )
}

/// The host end of a container's link to its `index`th network (0: its first): `veth` or
/// `tap` and eleven hex digits: the id's first eleven for the first network; for the others
/// (at most 15) the first ten and a digit other than the id's eleventh, so no two collide.
fn host_link_name(record: &Record, index: usize) -> Result<String, NetworkError> {
    let kind = match record.isolation {
        Isolation::Vm => "tap",
        Isolation::Process => "veth",
    };
    let id = &record.id;
    if index == 0 {
        return Ok(format!("{kind}{}", &id[..11.min(id.len())]));
    }
    let first_last = id.chars().nth(10);
    let digit = "0123456789abcdef"
        .chars()
        .filter(|c| Some(*c) != first_last)
        .nth(index - 1)
        .ok_or_else(|| {
            NetworkError::Address("a container is on at most 16 networks in husk".into())
        })?;
    Ok(format!("{kind}{}{digit}", &id[..10.min(id.len())]))
}

/// Join one more network from inside the container's namespace `netns`, as `eth<index>`: an
/// address there, no default route (that stays with the first network), names resolved. The
/// endpoint is recorded first, as in `join_network`; on an error it is released again.
pub fn join_another(
    root: &Path,
    record: &Record,
    extra: &crate::container::spec::ExtraNetwork,
    netns: &OwnedFd,
    index: usize,
    container_dir: &Path,
    hostname: &str,
) -> Result<(), NetworkError> {
    if record.isolation == Isolation::Vm {
        return Err(one_vm_network());
    }
    let networks = Networks::open(root)?;
    let lock = networks.lock()?;
    let mut network = networks.find(&extra.name)?;
    if network.endpoints.contains_key(&record.id) {
        return Err(NetworkError::Address(format!(
            "endpoint with name {} already exists in network {}",
            record.name, network.name
        )));
    }
    let mut rtnl = Rtnl::open()?;
    let bridge = ensure_bridge(&mut rtnl, &networks, &lock, &mut network)?;
    let ip = network.allocate(extra.ip)?;
    let mac = mac_for(ip);
    let endpoint = Endpoint {
        container_name: record.name.clone(),
        ip,
        mac: mac_text(mac),
        aliases: extra.aliases.clone(),
        host_link: host_link_name(record, index)?,
        in_vm: false,
        published: Vec::new(),
        hosts_file: container_dir.join("etc").join("hosts"),
        hostname: hostname.to_string(),
        extra_hosts: record.options.add_hosts.clone(),
    };
    network
        .endpoints
        .insert(record.id.clone(), endpoint.clone());
    networks.save(&lock, &network)?;
    let configured = (|| -> Result<(), NetworkError> {
        let interface = format!("eth{index}");
        rtnl.create_veth(
            &endpoint.host_link,
            &interface,
            mac,
            netns.as_fd(),
            bridge,
            MTU,
        )?;
        let mut inside = rtnl_in(netns)?;
        let eth = inside.link_index(&interface)?.ok_or_else(|| {
            NetworkError::Address(format!("{interface} did not arrive in the container"))
        })?;
        inside.add_address(eth, ip, network.subnet.prefix)?;
        inside.set_up(eth)?;
        Ok(nft::admit(&endpoint.host_link, &endpoint.mac, ip, &[])?)
    })();
    if let Err(err) = configured {
        drop(lock);
        let _ = release_endpoint(root, &record.id, &network.id);
        return Err(err);
    }
    let all = networks.list()?;
    if endpoint.hosts_file.exists() {
        let _ = std::fs::write(&endpoint.hosts_file, hosts_file(&all, &record.id));
    }
    rewrite_members_hosts(&all, &network, &record.id);
    Ok(())
}

/// `network connect` of a running process container: one more interface in its namespace,
/// the next `eth<N>` free.
pub fn connect_running(
    root: &Path,
    record: &Record,
    extra: &crate::container::spec::ExtraNetwork,
) -> Result<(), NetworkError> {
    if record.isolation == Isolation::Vm {
        return Err(one_vm_network());
    }
    let pid = match (record.effective_status(), record.state.pid) {
        (Status::Running, Some(pid)) => pid,
        _ => {
            return Err(NetworkError::Address(format!(
                "container {} is not running",
                record.name
            )))
        }
    };
    let netns: OwnedFd = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(super::io_err(Path::new("/proc/PID/ns/net")))?
        .into();
    let held: Vec<Endpoint> = super::endpoints_of(root, &record.id)
        .into_iter()
        .map(|(_, endpoint)| endpoint)
        .collect();
    let index = (1..16)
        .find(|&index| {
            host_link_name(record, index)
                .is_ok_and(|name| !held.iter().any(|e| e.host_link == name))
        })
        .ok_or_else(|| {
            NetworkError::Address("a container is on at most 16 networks in husk".into())
        })?;
    let hostname = held
        .first()
        .map(|e| e.hostname.clone())
        .or_else(|| record.options.hostname.clone())
        .unwrap_or_else(|| record.short_id().to_string());
    let store = Containers::open(root).map_err(|e| NetworkError::Address(e.to_string()))?;
    join_another(
        root,
        record,
        extra,
        &netns,
        index,
        &store.dir_of(&record.id),
        &hostname,
    )
}

/// The container leaves one network (`network disconnect` of a running container): its veth
/// on it goes (and with it the interface inside), its address, guard and hosts entries.
pub fn release_endpoint(
    root: &Path,
    container_id: &str,
    network_id: &str,
) -> Result<(), NetworkError> {
    release(root, container_id, Some(network_id))
}

/// An rtnetlink socket inside the namespace `netns` (opened there by this thread, which then
/// returns to its own: a socket belongs to the namespace it was opened in).
fn rtnl_in(netns: &OwnedFd) -> Result<Rtnl, NetworkError> {
    let ours = File::open("/proc/thread-self/ns/net")
        .map_err(super::io_err(Path::new("/proc/thread-self/ns/net")))?;
    nix::sched::setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| {
        NetworkError::Sys {
            op: "entering the container's network namespace".into(),
            source,
        }
    })?;
    let _back = NamespaceReturn(ours.into());
    Ok(Rtnl::open()?)
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `--network container:ID`: the other container's namespace, hosts and resolv.conf.
fn join_container(root: &Path, record: &Record, other: &str) -> Result<Attachment, NetworkError> {
    if record.isolation == Isolation::Vm {
        return Err(NetworkError::Address(
            "--network container: is not supported with --isolation vm: a VM's network stack is \
             its own kernel's"
                .into(),
        ));
    }
    let store = Containers::open(root).map_err(|e| NetworkError::Address(e.to_string()))?;
    let target = store
        .find(other)
        .map_err(|e| NetworkError::Address(e.to_string()))?;
    if target.isolation == Isolation::Vm {
        return Err(NetworkError::Address(format!(
            "cannot join the network of {}: it runs with --isolation vm, in its own kernel",
            target.short_id()
        )));
    }
    let pid = match (target.effective_status(), target.state.pid) {
        (Status::Running, Some(pid)) => pid,
        _ => {
            return Err(NetworkError::Address(format!(
                "cannot join network of a non running container: {}",
                target.id
            )))
        }
    };
    let netns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(super::io_err(Path::new("/proc/PID/ns/net")))?;
    let etc = store.dir_of(&target.id).join("etc");
    let read = |name: &str| std::fs::read_to_string(etc.join(name)).unwrap_or_default();
    Ok(Attachment {
        root: root.to_path_buf(),
        container_id: record.id.clone(),
        join: NetworkJoin {
            link: Link::Namespace(netns.into()),
            hosts: read("hosts"),
            resolv: read("resolv.conf"),
        },
        _reservations: Vec::new(),
        owns_endpoint: false,
    })
}

fn join_network(
    root: &Path,
    record: &Record,
    name: &str,
    container_dir: &Path,
    hostname: &str,
) -> Result<Attachment, NetworkError> {
    let options = &record.options;
    let networks = Networks::open(root)?;
    let lock = networks.lock()?;
    let mut network = networks.find(name)?;
    // Ports first: a taken one fails the start before anything exists.
    let mut reservations = Vec::new();
    let mut bound = Vec::new();
    for request in &options.publish {
        let (fd, port) = reserve(request)?;
        reservations.push(fd);
        bound.push((request, port));
    }
    // The bridge before the address: making it may move a fresh network to a free subnet.
    let mut rtnl = Rtnl::open()?;
    let bridge = ensure_bridge(&mut rtnl, &networks, &lock, &mut network)?;
    let ip = network.allocate(options.ip)?;
    let published: Vec<Published> = bound
        .iter()
        .map(|(request, host_port)| Published {
            host_ip: request.host_ip,
            host_port: *host_port,
            container_ip: ip,
            container_port: request.container_port,
            protocol: request.protocol,
        })
        .collect();
    let mac = mac_for(ip);
    let endpoint = Endpoint {
        container_name: record.name.clone(),
        ip,
        mac: mac_text(mac),
        aliases: options.network_aliases.clone(),
        host_link: host_link_name(record, 0)?,
        in_vm: record.isolation == Isolation::Vm,
        published: published.clone(),
        hosts_file: container_dir.join("etc").join("hosts"),
        hostname: hostname.to_string(),
        extra_hosts: options.add_hosts.clone(),
    };
    // Recorded before any kernel state exists, so that every later failure (and a killed
    // husk) leaves something `release_container` finds and undoes.
    network
        .endpoints
        .insert(record.id.clone(), endpoint.clone());
    networks.save(&lock, &network)?;
    let attachment = Attachment {
        root: root.to_path_buf(),
        container_id: record.id.clone(),
        join: NetworkJoin {
            link: Link::Namespace(
                File::open("/dev/null")
                    .map_err(super::io_err(Path::new("/dev/null")))?
                    .into(),
            ),
            hosts: String::new(),
            resolv: resolv_conf(&options.dns),
        },
        _reservations: reservations,
        owns_endpoint: true,
    };
    // On any error below, dropping `attachment` undoes the endpoint (after the lock goes).
    let mut attachment = attachment;
    attachment.join.link = match record.isolation {
        Isolation::Process => Link::Namespace(new_configured_namespace(
            &mut rtnl, &endpoint, mac, bridge, &network,
        )?),
        Isolation::Vm => {
            let tap = super::tap::open(&endpoint.host_link)?;
            let index = rtnl.link_index(&endpoint.host_link)?.ok_or_else(|| {
                NetworkError::Address(format!("tap {} vanished", endpoint.host_link))
            })?;
            rtnl.attach_to_bridge(index, bridge, MTU)?;
            Link::Tap {
                tap,
                interface: GuestInterface {
                    ip,
                    prefix: network.subnet.prefix,
                    gateway: network.gateway,
                    mac,
                    mtu: MTU as u16,
                },
            }
        }
    };
    nft::admit(&endpoint.host_link, &endpoint.mac, ip, &published)?;
    let all = networks.list()?;
    attachment.join.hosts = hosts_file(&all, &record.id);
    rewrite_members_hosts(&all, &network, &record.id);
    drop(lock);
    Ok(attachment)
}

/// Release everything a container holds on any network: its DNAT elements, veth, address
/// and hosts entries. Idempotent: `rm` calls it whether or not a supervisor already did.
pub fn release_container(root: &Path, container_id: &str) -> Result<(), NetworkError> {
    release(root, container_id, None)
}

/// Release the container's endpoints, on every network or on `only` (an id): guard and DNAT
/// elements, host link, address; then the hosts files of the members that stay (and its own,
/// when it stays on other networks) lose its names.
fn release(root: &Path, container_id: &str, only: Option<&str>) -> Result<(), NetworkError> {
    if !root.join("networks").is_dir() {
        return Ok(());
    }
    let networks = Networks::open(root)?;
    let lock = networks.lock()?;
    let mut left = Vec::new();
    for mut network in networks.list()? {
        if only.is_some_and(|id| id != network.id) {
            continue;
        }
        let Some(endpoint) = network.endpoints.remove(container_id) else {
            continue;
        };
        nft::dismiss(
            &endpoint.host_link,
            &endpoint.mac,
            endpoint.ip,
            &endpoint.published,
        )?;
        Rtnl::open()?.delete_link(&endpoint.host_link)?;
        networks.save(&lock, &network)?;
        left.push((network, endpoint.hosts_file));
    }
    if left.is_empty() {
        return Ok(());
    }
    let all = networks.list()?;
    for (network, own_hosts) in &left {
        if own_hosts.exists() {
            let _ = std::fs::write(own_hosts, hosts_file(&all, container_id));
        }
        rewrite_members_hosts(&all, network, container_id);
    }
    Ok(())
}

/// The network's bridge, created with its gateway address and nft state when missing (a new
/// network, or after a reboot), marked as this root's. Bridges of roots that are gone are
/// reclaimed first; a bridge name or subnet that another owner holds in this namespace moves a
/// fresh network husk chose them for, and is a clear error otherwise. The caller holds `lock`.
fn ensure_bridge(
    rtnl: &mut Rtnl,
    networks: &Networks,
    lock: &StoreLock,
    network: &mut Network,
) -> Result<u32, NetworkError> {
    let mark = networks.owner_mark(network);
    let mut links = rtnl.links()?;
    if let Some(link) = links.iter().find(|l| l.name == network.bridge) {
        match link.alias.as_deref() {
            Some(alias) if alias == mark => return Ok(link.index),
            // Made by a husk from before owner marks: this root's, by its record.
            None | Some("") => {
                rtnl.set_alias(link.index, &mark)?;
                return Ok(link.index);
            }
            Some(_) => {}
        }
    }
    if reclaim_stale_bridges(rtnl, &links, &mark)? {
        links = rtnl.links()?;
    }
    let mut moved = false;
    if let Some(link) = links.iter().find(|l| l.name == network.bridge) {
        let owner = link.alias.as_deref().unwrap_or_default();
        if !network.movable() {
            return Err(NetworkError::Taken {
                network: network.name.clone(),
                reason: format!(
                    "its bridge {} belongs to another owner in this network namespace ({owner})",
                    network.bridge
                ),
            });
        }
        network.bridge = free_bridge_name(network, &links)?;
        moved = true;
    }
    let routed = super::routed_subnets(None);
    if let Some(route) = routed.iter().find(|r| r.overlaps(&network.subnet)) {
        if !network.movable() {
            return Err(NetworkError::Taken {
                network: network.name.clone(),
                reason: format!(
                    "its subnet {} overlaps {route}, already routed in this network namespace",
                    network.subnet
                ),
            });
        }
        let others: Vec<Network> = networks
            .list()?
            .into_iter()
            .filter(|n| n.id != network.id)
            .collect();
        let preferred = (network.name == super::DEFAULT_NETWORK).then_some(super::DEFAULT_SUBNET);
        network.subnet = super::free_subnet(preferred, &others, &routed)?;
        network.gateway = network.subnet.first_host();
        moved = true;
    }
    if moved {
        networks.save(lock, network)?;
    }
    match rtnl.create_bridge(&network.bridge) {
        Ok(()) => {}
        Err(err) if err.errno() == Some(libc::EEXIST) => {}
        Err(err) => return Err(err.into()),
    }
    let index = rtnl
        .link_index(&network.bridge)?
        .ok_or_else(|| NetworkError::Address(format!("bridge {} vanished", network.bridge)))?;
    rtnl.set_alias(index, &mark)?;
    match rtnl.add_address(index, network.gateway, network.subnet.prefix) {
        Ok(()) => {}
        Err(err) if err.errno() == Some(libc::EEXIST) => {}
        Err(err) => return Err(err.into()),
    }
    rtnl.set_up(index)?;
    // Forwarding for the containers' outbound traffic (as dockerd sets it), and loopback
    // sources allowed onto this bridge only, for published ports reached on 127.0.0.1.
    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    write_sysctl(
        &format!("/proc/sys/net/ipv4/conf/{}/route_localnet", network.bridge),
        "1",
    )?;
    nft::add_bridge(&network.bridge)?;
    Ok(index)
}

/// A bridge name no link of this namespace has: `husk0`, `husk1`, ... for the default
/// network, `husk-` and ten more hex digits of the id for a user network.
fn free_bridge_name(network: &Network, links: &[Interface]) -> Result<String, NetworkError> {
    let taken = |name: &str| links.iter().any(|l| l.name == name);
    let candidates: Vec<String> = if network.name == super::DEFAULT_NETWORK {
        (0..1000).map(|n| format!("husk{n}")).collect()
    } else {
        network
            .id
            .as_bytes()
            .windows(10)
            .map(|w| format!("husk-{}", String::from_utf8_lossy(w)))
            .collect()
    };
    candidates
        .into_iter()
        .find(|name| !taken(name))
        .ok_or_else(|| NetworkError::Taken {
            network: network.name.clone(),
            reason: "no free bridge name left in this network namespace".into(),
        })
}

/// Delete every husk bridge whose owner's record is gone (its root was deleted): the link,
/// its nft state and the ports published into its subnet. True when one went.
fn reclaim_stale_bridges(
    rtnl: &mut Rtnl,
    links: &[Interface],
    own_mark: &str,
) -> Result<bool, NetworkError> {
    let routes = rtnl.ipv4_routes()?;
    let mut reclaimed = false;
    for link in links {
        let Some(record) = link
            .alias
            .as_deref()
            .filter(|alias| *alias != own_mark)
            .and_then(|alias| alias.strip_prefix(super::OWNER_MARK))
            .filter(|record| record.starts_with('/'))
        else {
            continue;
        };
        if Path::new(record).exists() {
            continue;
        }
        let subnets: Vec<super::Subnet> = routes
            .iter()
            .filter(|r| r.link == Some(link.index))
            .map(|r| super::Subnet {
                address: r.destination,
                prefix: r.prefix,
            })
            .collect();
        nft::unpublish_into(&subnets)?;
        nft::remove_bridge(&link.name)?;
        rtnl.delete_link(&link.name)?;
        reclaimed = true;
    }
    Ok(reclaimed)
}

/// The bridge and its nft state go with `network rm`.
pub(super) fn remove_bridge(network: &Network) -> Result<(), NetworkError> {
    nft::remove_bridge(&network.bridge)?;
    Rtnl::open()?.delete_link(&network.bridge)?;
    Ok(())
}

fn write_sysctl(path: &str, value: &str) -> Result<(), NetworkError> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(path, value).map_err(super::io_err(Path::new(path)))
}

/// Returns this thread to the namespace it came from, whatever happens in between.
struct NamespaceReturn(OwnedFd);

impl Drop for NamespaceReturn {
    fn drop(&mut self) {
        if let Err(err) = nix::sched::setns(self.0.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Staying in the container's namespace would send husk's own traffic there.
            eprintln!("husk: cannot return to the host network namespace: {err}");
            std::process::abort();
        }
    }
}

/// A fresh network namespace holding the container's end of a new veth pair, configured.
fn new_configured_namespace(
    host: &mut Rtnl,
    endpoint: &Endpoint,
    mac: [u8; 6],
    bridge: u32,
    network: &Network,
) -> Result<OwnedFd, NetworkError> {
    let sys = |op: &str| {
        let op = op.to_string();
        move |source| NetworkError::Sys { op, source }
    };
    let ours = File::open("/proc/thread-self/ns/net")
        .map_err(super::io_err(Path::new("/proc/thread-self/ns/net")))?;
    let (netns, mut inside) = {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)
            .map_err(sys("creating the container's network namespace"))?;
        let _back = NamespaceReturn(ours.into());
        let netns = File::open("/proc/thread-self/ns/net")
            .map_err(super::io_err(Path::new("/proc/thread-self/ns/net")))?;
        // A socket belongs to the namespace it was opened in, wherever its user goes next.
        (OwnedFd::from(netns), Rtnl::open()?)
    };
    host.create_veth(
        &endpoint.host_link,
        CONTAINER_INTERFACE,
        mac,
        netns.as_fd(),
        bridge,
        MTU,
    )?;
    if let Some(lo) = inside.link_index("lo")? {
        inside.set_up(lo)?;
    }
    let eth = inside.link_index(CONTAINER_INTERFACE)?.ok_or_else(|| {
        NetworkError::Address("the container's interface did not arrive in its namespace".into())
    })?;
    inside.add_address(eth, endpoint.ip, network.subnet.prefix)?;
    inside.set_up(eth)?;
    inside.add_default_route(network.gateway)?;
    Ok(netns)
}

/// Docker's MAC for an address: 02:42 and the four address bytes.
fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

/// Bind (not listen) the host port so nothing else takes it; the port actually bound (a free
/// one for host port 0).
fn reserve(request: &PortRequest) -> Result<(OwnedFd, u16), NetworkError> {
    let kind = match request.protocol {
        Protocol::Tcp => SockType::Stream,
        Protocol::Udp => SockType::Datagram,
    };
    let ip = request.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let fd = socket::socket(AddressFamily::Inet, kind, SockFlag::SOCK_CLOEXEC, None).map_err(
        |source| NetworkError::Sys {
            op: "reserving a host port".into(),
            source,
        },
    )?;
    let address = SockaddrIn::from(SocketAddrV4::new(ip, request.host_port));
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &address).map_err(|errno| {
        NetworkError::Port(match errno {
            nix::Error::EADDRINUSE => format!(
                "Bind for {ip}:{} failed: port is already allocated",
                request.host_port
            ),
            nix::Error::EADDRNOTAVAIL => {
                format!(
                    "Bind for {ip}:{} failed: {ip} is not an address of this host",
                    request.host_port
                )
            }
            other => format!("Bind for {ip}:{} failed: {other}", request.host_port),
        })
    })?;
    let bound: SockaddrIn =
        socket::getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd)).map_err(|source| {
            NetworkError::Sys {
                op: "reading a reserved port".into(),
                source,
            }
        })?;
    Ok((fd, bound.port()))
}

const HOSTS_BASE: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// A member's /etc/hosts: its own address and hostname, `--add-host`, and on each user-defined
/// network it is on every other member by name and alias (Docker resolves these through its
/// embedded DNS; a file gives the same answers to every resolver, the static busybox one
/// included). `all` is every network of the root; only those the member is on count.
fn hosts_file(all: &[Network], id: &str) -> String {
    let mut text = HOSTS_BASE.to_string();
    let mine: Vec<(&Network, &Endpoint)> = all
        .iter()
        .filter_map(|network| Some((network, network.endpoints.get(id)?)))
        .collect();
    let Some((_, first)) = mine.first() else {
        return text;
    };
    for line in &first.extra_hosts {
        text.push_str(line);
        text.push('\n');
    }
    for (network, _) in mine.iter().filter(|(n, _)| n.resolves_names()) {
        for (other_id, other) in &network.endpoints {
            if other_id != id {
                let mut names = vec![other.container_name.clone()];
                names.extend(other.aliases.iter().cloned());
                names.push(other_id[..12.min(other_id.len())].to_string());
                text.push_str(&format!("{}\t{}\n", other.ip, names.join(" ")));
            }
        }
    }
    for (network, me) in &mine {
        let mut own = vec![me.hostname.clone()];
        if network.resolves_names() {
            own.push(me.container_name.clone());
            own.extend(me.aliases.iter().cloned());
        }
        own.dedup();
        text.push_str(&format!("{}\t{}\n", me.ip, own.join(" ")));
    }
    text
}

/// Every other member's /etc/hosts again, after one came to `network` or left it. Written
/// in place (the running container has the file bind-mounted; a rename would leave it the old
/// inode); a VM member's goes to its guest agent through its supervisor (best effort: a VM
/// that cannot be reached now gets the whole file at its next start).
fn rewrite_members_hosts(all: &[Network], network: &Network, changed: &str) {
    if !network.resolves_names() {
        return;
    }
    for (id, endpoint) in &network.endpoints {
        if id == changed {
            continue;
        }
        let text = hosts_file(all, id);
        if endpoint.in_vm {
            crate::vm::supervisor::update_hosts(id, &text);
        } else if endpoint.hosts_file.exists() {
            let _ = std::fs::write(&endpoint.hosts_file, text);
        }
    }
}

/// `--dns`, else the host's resolv.conf without loopback name servers (which mean nothing
/// in the container's namespace), as Docker does.
fn resolv_conf(dns: &[Ipv4Addr]) -> String {
    if !dns.is_empty() {
        return dns.iter().map(|ip| format!("nameserver {ip}\n")).collect();
    }
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    host.lines()
        .filter(|line| {
            let mut words = line.split_whitespace();
            !(words.next() == Some("nameserver")
                && words
                    .next()
                    .is_some_and(|ip| ip.starts_with("127.") || ip == "::1"))
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn endpoint(name: &str, ip: [u8; 4], aliases: &[&str]) -> Endpoint {
        Endpoint {
            container_name: name.into(),
            ip: Ipv4Addr::from(ip),
            mac: String::new(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            host_link: String::new(),
            in_vm: false,
            published: vec![],
            hosts_file: PathBuf::new(),
            hostname: format!("{name}-host"),
            extra_hosts: vec!["10.0.0.9\tdb.example".into()],
        }
    }

    fn network(name: &str) -> Network {
        let mut endpoints = BTreeMap::new();
        endpoints.insert("a".repeat(64), endpoint("web", [10, 86, 0, 2], &["www"]));
        endpoints.insert("b".repeat(64), endpoint("db", [10, 86, 0, 3], &[]));
        Network {
            id: "f".repeat(64),
            name: name.into(),
            driver: "bridge".into(),
            subnet: "10.86.0.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 86, 0, 1),
            bridge: "husk-ffffffffff".into(),
            created: chrono::Utc::now(),
            auto_subnet: true,
            labels: BTreeMap::new(),
            endpoints,
        }
    }

    #[test]
    fn members_of_a_user_network_resolve_each_other() {
        let hosts = hosts_file(&[network("mynet")], &"a".repeat(64));
        assert!(hosts.contains("10.86.0.3\tdb bbbbbbbbbbbb\n"), "{hosts}");
        assert!(hosts.contains("10.86.0.2\tweb-host web www\n"), "{hosts}");
        assert!(hosts.contains("10.0.0.9\tdb.example\n"));
    }

    #[test]
    fn the_default_bridge_resolves_only_itself() {
        let hosts = hosts_file(&[network(super::super::DEFAULT_NETWORK)], &"a".repeat(64));
        assert!(!hosts.contains("10.86.0.3"), "{hosts}");
        assert!(hosts.contains("10.86.0.2\tweb-host\n"), "{hosts}");
    }

    #[test]
    fn dns_flags_replace_the_hosts_servers() {
        assert_eq!(
            resolv_conf(&[Ipv4Addr::new(10, 0, 0, 53)]),
            "nameserver 10.0.0.53\n"
        );
        assert!(!resolv_conf(&[]).contains("nameserver 127."));
    }

    #[test]
    fn macs_are_dockers() {
        assert_eq!(
            mac_for(Ipv4Addr::new(10, 87, 0, 2)),
            [2, 0x42, 10, 87, 0, 2]
        );
    }
}
