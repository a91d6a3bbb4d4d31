//! Bridge networks, Docker's model: `bridge` (the default network, no name resolution) and
//! user-defined networks, each a Linux bridge with a subnet; a container joins with a veth
//! pair, gets an address from the network's allocator, reaches the outside through NAT and
//! publishes ports through DNAT (nft.rs). Containers on a user-defined network find each
//! other by name and alias through /etc/hosts, which husk rewrites for every member when one
//! joins or leaves.
//!
//! State: one JSON file per network under `<root>/networks/`, holding its endpoints (the
//! address allocations), written atomically and changed only under one flock, so concurrent
//! husk calls never hand out one address twice. Kernel state (bridge, veth, nft elements) is
//! made from it and released from it, so `rm` of a container whose supervisor was killed
//! still finds what to undo.
//!
//! Several husk roots may share one network namespace (a test suite, a user's second
//! `--root`): kernel state there is changed under a second flock, one per namespace, and each
//! bridge carries its owner's mark, `husk:<record path>`, in its alias. A root whose bridge
//! name or subnet another root holds picks free ones when its bridge is first made (unless
//! `--subnet` fixed them), and a bridge whose record is gone (its root deleted) is reclaimed.

pub mod attach;
pub mod netlink;
pub mod netns_link;
pub mod nft;
pub mod ports;
pub mod tap;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

pub use attach::{attach, release_container, Attachment, GuestInterface, Link, NetworkJoin};
pub use ports::{PortRequest, Protocol, Published};

/// Docker's name for the default network.
pub const DEFAULT_NETWORK: &str = "bridge";
const DEFAULT_BRIDGE: &str = "husk0";
/// The default network's subnet: away from Docker's 172.17.0.0/16 and Podman's 10.88.0.0/16,
/// so that husk can live beside both on one host.
const DEFAULT_SUBNET: Subnet = Subnet {
    address: Ipv4Addr::new(10, 87, 0, 0),
    prefix: 16,
};
/// User-defined networks get a /24 of 10.86.0.0/16 unless `--subnet` says otherwise.
const POOL_BASE: [u8; 2] = [10, 86];
/// Where the per-namespace locks live: shared by every root, gone at reboot with the state.
const NAMESPACE_LOCKS: &str = "/run/husk";
/// A bridge alias naming its owner; the kernel keeps at most 255 bytes of alias.
const OWNER_MARK: &str = "husk:";
const MAX_ALIAS: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network {0} not found")]
    NotFound(String),
    #[error("network with name {0} already exists")]
    NameInUse(String),
    #[error("invalid network name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),
    #[error("invalid subnet {0:?}: expected an IPv4 CIDR such as 10.90.0.0/24")]
    InvalidSubnet(String),
    #[error("invalid pool request: Pool overlaps with other one on this address space ({0})")]
    Overlap(String),
    #[error("no free subnet left in 10.86.0.0/16 for a new network; give one with --subnet")]
    PoolExhausted,
    #[error("network {network}: {reason}")]
    Taken { network: String, reason: String },
    #[error("{0}")]
    Address(String),
    #[error("{0} is a pre-defined network and cannot be removed")]
    Predefined(String),
    #[error("error while removing network: network {name} id {id} has active endpoints")]
    InUse { name: String, id: String },
    #[error("network store at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("network record {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    #[error(transparent)]
    Nft(#[from] nft::NftError),
    #[error("{0}")]
    Port(String),
    #[error("{op}: {source}")]
    Sys {
        op: String,
        #[source]
        source: nix::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NetworkError + '_ {
    move |source| NetworkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An IPv4 subnet, `address/prefix` with the host bits clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Subnet {
    pub address: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.address)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.address) || other.contains(self.address)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) | !self.mask())
    }

    /// The first usable address, Docker's gateway when none is given.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) + 1)
    }

    /// Usable for a host: inside, neither the network's own address nor its broadcast.
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && ip != self.address && ip != self.broadcast()
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = NetworkError;

    fn from_str(text: &str) -> Result<Self, NetworkError> {
        let bad = || NetworkError::InvalidSubnet(text.to_string());
        let (address, prefix) = text.split_once('/').ok_or_else(bad)?;
        let address: Ipv4Addr = address.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        // A /31 or /32 leaves no address for a gateway and a container.
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let subnet = Subnet { address, prefix };
        // Docker takes 10.1.2.3/24 as 10.1.2.0/24.
        Ok(Subnet {
            address: Ipv4Addr::from(u32::from(address) & subnet.mask()),
            prefix,
        })
    }
}

impl From<Subnet> for String {
    fn from(subnet: Subnet) -> String {
        subnet.to_string()
    }
}

impl TryFrom<String> for Subnet {
    type Error = NetworkError;
    fn try_from(text: String) -> Result<Self, NetworkError> {
        text.parse()
    }
}

/// One container's place on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub container_name: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    /// `--network-alias`, resolved by the other members as the name is.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The host end of the container's link: its veth, or its VM's tap.
    pub host_link: String,
    /// The container runs in a VM: its /etc/hosts lives in the guest and is sent there.
    #[serde(default)]
    pub in_vm: bool,
    /// Ports published through this endpoint (DNAT elements to remove on release).
    #[serde(default)]
    pub published: Vec<Published>,
    /// The container's generated /etc/hosts, rewritten when members come and go.
    pub hosts_file: PathBuf,
    /// Its hostname and `--add-host` lines, for rewriting that file.
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub extra_hosts: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    pub bridge: String,
    pub created: DateTime<Utc>,
    /// husk chose the subnet (no `--subnet`), so it may choose another when this namespace
    /// already routes it by the time the bridge is made.
    #[serde(default)]
    pub auto_subnet: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Container id -> endpoint: the address allocations.
    #[serde(default)]
    pub endpoints: BTreeMap<String, Endpoint>,
}

impl Network {
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    /// The default network does not resolve container names (Docker's legacy bridge).
    pub fn resolves_names(&self) -> bool {
        self.name != DEFAULT_NETWORK
    }

    /// husk may still move the network to another subnet and bridge name: it chose them, and
    /// no container holds an address on it.
    pub fn movable(&self) -> bool {
        (self.auto_subnet || self.name == DEFAULT_NETWORK) && self.endpoints.is_empty()
    }

    /// The next free address, lowest first, never the gateway.
    fn allocate(&self, requested: Option<Ipv4Addr>) -> Result<Ipv4Addr, NetworkError> {
        let taken =
            |ip: Ipv4Addr| ip == self.gateway || self.endpoints.values().any(|e| e.ip == ip);
        if let Some(ip) = requested {
            if !self.subnet.is_host(ip) {
                return Err(NetworkError::Address(format!(
                    "invalid address {ip}: it does not belong to the network's subnet {}",
                    self.subnet
                )));
            }
            if taken(ip) {
                return Err(NetworkError::Address(format!(
                    "Address already in use: {ip} on network {}",
                    self.name
                )));
            }
            return Ok(ip);
        }
        let first = u32::from(self.subnet.address) + 1;
        let last = u32::from(self.subnet.broadcast());
        (first..last)
            .map(Ipv4Addr::from)
            .find(|ip| !taken(*ip))
            .ok_or_else(|| {
                NetworkError::Address(format!(
                    "no available IPv4 addresses on network {} ({})",
                    self.name, self.subnet
                ))
            })
    }
}

/// What `network create` is asked for.
#[derive(Debug, Clone, Default)]
pub struct NetworkRequest {
    pub name: String,
    pub subnet: Option<Subnet>,
    pub gateway: Option<Ipv4Addr>,
    pub labels: BTreeMap<String, String>,
}

/// The network store of one husk root.
pub struct Networks {
    dir: PathBuf,
}

/// Held while the store (and the kernel state made from it) changes: the root's lock, then
/// the network namespace's (always in that order).
pub struct StoreLock {
    _lock: Flock<File>,
    _namespace: Flock<File>,
}

fn exclusive_lock(path: PathBuf) -> Result<Flock<File>, NetworkError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| NetworkError::Io {
        path,
        source: errno.into(),
    })
}

/// The lock of the calling thread's network namespace, named by the namespace's inode.
fn namespace_lock() -> Result<Flock<File>, NetworkError> {
    use std::os::unix::fs::MetadataExt;
    let ns = Path::new("/proc/thread-self/ns/net");
    let inode = fs::metadata(ns).map_err(io_err(ns))?.ino();
    let dir = Path::new(NAMESPACE_LOCKS);
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    exclusive_lock(dir.join(format!("netns-{inode}.lock")))
}

/// A free subnet for a network: `preferred` when nothing overlaps it, else the first /24 of
/// the pool that overlaps neither another network of this root nor a route of the namespace.
fn free_subnet(
    preferred: Option<Subnet>,
    others: &[Network],
    routed: &[Subnet],
) -> Result<Subnet, NetworkError> {
    let free = |candidate: &Subnet| {
        !others.iter().any(|n| n.subnet.overlaps(candidate))
            && !routed.iter().any(|r| r.overlaps(candidate))
    };
    preferred
        .into_iter()
        .chain((0..=255u8).map(|third| Subnet {
            address: Ipv4Addr::new(POOL_BASE[0], POOL_BASE[1], third, 0),
            prefix: 24,
        }))
        .find(free)
        .ok_or(NetworkError::PoolExhausted)
}

/// The subnets this namespace routes (another runtime's bridge, a VPN, another root's
/// network), as Docker's pool allocation avoids them; with `except`, not those through that
/// link. Best effort: without a route dump, nothing is known to be routed.
fn routed_subnets(except: Option<u32>) -> Vec<Subnet> {
    netlink::Rtnl::open()
        .and_then(|mut rtnl| rtnl.ipv4_routes())
        .unwrap_or_default()
        .into_iter()
        .filter(|route| route.prefix <= 32 && (except.is_none() || route.link != except))
        .map(|route| Subnet {
            address: route.destination,
            prefix: route.prefix,
        })
        .collect()
}

impl Networks {
    /// Open (creating) the store; the default network is always there.
    pub fn open(root: &Path) -> Result<Self, NetworkError> {
        let dir = root.join("networks");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        // Absolute, because bridge owner marks name records by path.
        let dir = fs::canonicalize(&dir).map_err(io_err(&dir))?;
        let store = Self { dir };
        let lock = store.lock()?;
        if store.find_by_name(DEFAULT_NETWORK)?.is_none() {
            store.save(
                &lock,
                &Network {
                    id: new_id()?,
                    name: DEFAULT_NETWORK.to_string(),
                    driver: "bridge".into(),
                    subnet: DEFAULT_SUBNET,
                    gateway: DEFAULT_SUBNET.first_host(),
                    bridge: DEFAULT_BRIDGE.into(),
                    created: Utc::now(),
                    auto_subnet: true,
                    labels: BTreeMap::new(),
                    endpoints: BTreeMap::new(),
                },
            )?;
        }
        Ok(store)
    }

    pub fn lock(&self) -> Result<StoreLock, NetworkError> {
        let lock = exclusive_lock(self.dir.join(".lock"))?;
        Ok(StoreLock {
            _lock: lock,
            _namespace: namespace_lock()?,
        })
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// The alias that marks `network`'s bridge as this root's. A record path too long for an
    /// alias leaves the bare mark: such a bridge is never taken for stale.
    pub fn owner_mark(&self, network: &Network) -> String {
        let mark = format!("{OWNER_MARK}{}", self.path_of(&network.id).display());
        if mark.len() <= MAX_ALIAS {
            mark
        } else {
            format!("{OWNER_MARK}{}", network.id)
        }
    }

    /// Written atomically: a crash leaves the old record or the new one, never half.
    pub fn save(&self, _lock: &StoreLock, network: &Network) -> Result<(), NetworkError> {
        let path = self.path_of(&network.id);
        let tmp = self.dir.join(format!(".{}.tmp", network.id));
        let bytes = serde_json::to_vec_pretty(network).map_err(|source| NetworkError::Corrupt {
            path: path.clone(),
            source,
        })?;
        let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(&bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    pub fn list(&self) -> Result<Vec<Network>, NetworkError> {
        let mut networks = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let path = entry.map_err(io_err(&self.dir))?.path();
            if path.extension().is_some_and(|e| e == "json")
                && !path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                let bytes = fs::read(&path).map_err(io_err(&path))?;
                let network = serde_json::from_slice(&bytes)
                    .map_err(|source| NetworkError::Corrupt { path, source })?;
                networks.push(network);
            }
        }
        networks.sort_by_key(|n: &Network| n.created);
        Ok(networks)
    }

    fn find_by_name(&self, name: &str) -> Result<Option<Network>, NetworkError> {
        Ok(self.list()?.into_iter().find(|n| n.name == name))
    }

    /// By name, full id or unique id prefix, as Docker looks networks up.
    pub fn find(&self, key: &str) -> Result<Network, NetworkError> {
        let networks = self.list()?;
        if let Some(n) = networks.iter().find(|n| n.name == key || n.id == key) {
            return Ok(n.clone());
        }
        let mut prefixed = networks.into_iter().filter(|n| n.id.starts_with(key));
        match (prefixed.next(), prefixed.next()) {
            (Some(n), None) if !key.is_empty() => Ok(n),
            _ => Err(NetworkError::NotFound(key.to_string())),
        }
    }

    /// `network create`: the record only; the bridge is made when a container first joins.
    pub fn create(&self, request: NetworkRequest) -> Result<Network, NetworkError> {
        if !crate::container::names::is_valid(&request.name) {
            return Err(NetworkError::InvalidName(request.name));
        }
        let lock = self.lock()?;
        let existing = self.list()?;
        if existing.iter().any(|n| n.name == request.name) {
            return Err(NetworkError::NameInUse(request.name));
        }
        let subnet = match request.subnet {
            Some(subnet) => {
                if let Some(other) = existing.iter().find(|n| n.subnet.overlaps(&subnet)) {
                    return Err(NetworkError::Overlap(format!(
                        "{subnet} overlaps {} of network {}",
                        other.subnet, other.name
                    )));
                }
                subnet
            }
            None => free_subnet(None, &existing, &routed_subnets(None))?,
        };
        let gateway = match request.gateway {
            Some(gateway) if !subnet.is_host(gateway) => {
                return Err(NetworkError::Address(format!(
                    "invalid gateway {gateway}: it does not belong to subnet {subnet}"
                )))
            }
            Some(gateway) => gateway,
            None => subnet.first_host(),
        };
        let id = new_id()?;
        let network = Network {
            bridge: format!("husk-{}", &id[..10]),
            id,
            name: request.name,
            driver: "bridge".into(),
            subnet,
            gateway,
            created: Utc::now(),
            auto_subnet: request.subnet.is_none() && request.gateway.is_none(),
            labels: request.labels,
            endpoints: BTreeMap::new(),
        };
        self.save(&lock, &network)?;
        Ok(network)
    }

    /// `network rm`: refused while containers are attached; the bridge and its nft state go.
    pub fn remove(&self, key: &str) -> Result<Network, NetworkError> {
        let lock = self.lock()?;
        let network = self.find(key)?;
        if network.name == DEFAULT_NETWORK {
            return Err(NetworkError::Predefined(network.name));
        }
        if !network.endpoints.is_empty() {
            return Err(NetworkError::InUse {
                name: network.name,
                id: network.id,
            });
        }
        attach::remove_bridge(&network)?;
        let path = self.path_of(&network.id);
        fs::remove_file(&path).map_err(io_err(&path))?;
        drop(lock);
        Ok(network)
    }
}

/// The networks a container has an endpoint on now (it runs), with the endpoint.
pub fn endpoints_of(root: &Path, container_id: &str) -> Vec<(Network, Endpoint)> {
    if !root.join("networks").is_dir() {
        return Vec::new();
    }
    let Ok(networks) = Networks::open(root) else {
        return Vec::new();
    };
    networks
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|network| {
            let endpoint = network.endpoints.get(container_id)?.clone();
            Some((network, endpoint))
        })
        .collect()
}

/// Every running container's published ports, read once (for `ps`).
pub fn published_by_container(root: &Path) -> BTreeMap<String, Vec<Published>> {
    let mut ports: BTreeMap<String, Vec<Published>> = BTreeMap::new();
    if !root.join("networks").is_dir() {
        return ports;
    }
    let Ok(networks) = Networks::open(root) else {
        return ports;
    };
    for network in networks.list().unwrap_or_default() {
        for (id, endpoint) in network.endpoints {
            ports.entry(id).or_default().extend(endpoint.published);
        }
    }
    ports
}

fn new_id() -> Result<String, NetworkError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| NetworkError::Io {
        path: PathBuf::from("getrandom"),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_normalise() {
        let s: Subnet = "10.1.2.3/24".parse().unwrap();
        assert_eq!(s.to_string(), "10.1.2.0/24");
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 1, 2, 255));
        assert!(s.is_host(Ipv4Addr::new(10, 1, 2, 254)));
        assert!(!s.is_host(Ipv4Addr::new(10, 1, 2, 255)));
        assert!(!s.is_host(Ipv4Addr::new(10, 1, 2, 0)));
        assert!(!s.is_host(Ipv4Addr::new(10, 1, 3, 1)));
        for bad in [
            "10.1.2.0",
            "10.1.2.0/31",
            "10.1.2.0/4",
            "::1/64",
            "x/24",
            "10.1.2.0/",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
        let wide: Subnet = "10.0.0.0/8".parse().unwrap();
        assert!(wide.overlaps(&s) && s.overlaps(&wide));
        assert!(!s.overlaps(&"10.1.3.0/24".parse().unwrap()));
    }

    #[test]
    fn store_allocates_distinct_addresses_and_refuses_conflicts() {
        let root = tempfile::tempdir().unwrap();
        let store = Networks::open(root.path()).unwrap();
        let default = store.find(DEFAULT_NETWORK).unwrap();
        assert_eq!(default.subnet, DEFAULT_SUBNET);
        let a = store
            .create(NetworkRequest {
                name: "a".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(a.subnet.to_string(), "10.86.0.0/24");
        assert_eq!(a.gateway, Ipv4Addr::new(10, 86, 0, 1));
        assert!(a.bridge.len() <= 15);
        let b = store
            .create(NetworkRequest {
                name: "b".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(b.subnet.to_string(), "10.86.1.0/24");
        assert!(matches!(
            store.create(NetworkRequest {
                name: "a".into(),
                ..Default::default()
            }),
            Err(NetworkError::NameInUse(_))
        ));
        assert!(matches!(
            store.create(NetworkRequest {
                name: "c".into(),
                subnet: Some("10.86.0.128/25".parse().unwrap()),
                ..Default::default()
            }),
            Err(NetworkError::Overlap(_))
        ));
        assert!(matches!(
            store.create(NetworkRequest {
                name: "d".into(),
                subnet: Some("10.90.0.0/24".parse().unwrap()),
                gateway: Some(Ipv4Addr::new(10, 91, 0, 1)),
                ..Default::default()
            }),
            Err(NetworkError::Address(_))
        ));

        let mut network = store.find("a").unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..50 {
            let ip = network.allocate(None).unwrap();
            assert!(network.subnet.is_host(ip) && ip != network.gateway);
            assert!(seen.insert(ip));
            network.endpoints.insert(
                format!("c{n}"),
                Endpoint {
                    container_name: format!("c{n}"),
                    ip,
                    mac: String::new(),
                    aliases: vec![],
                    host_link: String::new(),
                    in_vm: false,
                    published: vec![],
                    hosts_file: PathBuf::new(),
                    hostname: String::new(),
                    extra_hosts: vec![],
                },
            );
        }
        let taken = *seen.iter().next().unwrap();
        assert!(matches!(
            network.allocate(Some(taken)),
            Err(NetworkError::Address(_))
        ));
        assert!(network.allocate(Some(network.gateway)).is_err());
        assert!(network.allocate(Some(Ipv4Addr::new(10, 9, 9, 9))).is_err());
        assert_eq!(
            network
                .allocate(Some(Ipv4Addr::new(10, 86, 0, 200)))
                .unwrap(),
            Ipv4Addr::new(10, 86, 0, 200)
        );
        assert!(matches!(
            store.remove(DEFAULT_NETWORK),
            Err(NetworkError::Predefined(_))
        ));
        assert!(matches!(
            store.remove("nope"),
            Err(NetworkError::NotFound(_))
        ));
    }
}
