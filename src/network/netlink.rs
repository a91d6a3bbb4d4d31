//! The few rtnetlink requests a bridge network needs, sent synchronously on one socket:
//! bridges, veth pairs (the container's end created straight inside its namespace), link
//! state, addresses and the default route; and for a VM container handed a network namespace,
//! the ingress qdiscs and redirect filters that join its interface to the guest's tap. Messages are built and parsed by
//! netlink-packet-route; the socket is netlink-sys. (rtnetlink, the async layer over the same
//! crates, would bring a tokio runtime into every `husk run` for six requests.)

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirror, TcActionMirrorOption,
    TcActionOption, TcActionType, TcAttribute, TcFilterU32, TcFilterU32Option, TcHandle, TcHeader,
    TcMessage, TcMirror, TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// The kernel's answer to one request, or the socket failing.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("{op}: {source}")]
    Kernel {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{op}: the kernel's answer could not be parsed")]
    Garbled { op: String },
}

impl NetlinkError {
    /// The errno the kernel answered with, if it answered.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// One IPv4 route: where it leads and through which link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Addr,
    pub prefix: u8,
    pub link: Option<u32>,
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub alias: Option<String>,
    /// The hardware address, when the link has an Ethernet-sized one.
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub loopback: bool,
}

/// One IPv4 address of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub link: u32,
    pub address: Ipv4Addr,
    pub prefix: u8,
}

/// The ingress qdisc's handle (`ffff:`), the parent of every ingress filter.
const INGRESS_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};
/// `ETH_P_ALL` in network byte order, as tcm_info's protocol half carries it.
const ETH_P_ALL_BE: u32 = (libc::ETH_P_ALL as u16).to_be() as u32;

/// A connected NETLINK_ROUTE socket of the network namespace it was opened in.
pub struct Rtnl {
    socket: Socket,
    sequence: u32,
}

impl Rtnl {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        socket.bind_auto().map_err(NetlinkError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Socket)?;
        Ok(Self {
            socket,
            sequence: 0,
        })
    }

    /// Send one request and read until its acknowledgement; `Ok(replies)` holds any messages
    /// the kernel sent before it (a lookup's answer).
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        op: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|source| NetlinkError::Kernel {
                op: op.to_string(),
                source,
            })?;
        let garbled = || NetlinkError::Garbled { op: op.to_string() };
        let mut replies = Vec::new();
        loop {
            let (bytes, _) = self.socket.recv_from_full().map_err(NetlinkError::Socket)?;
            let mut offset = 0;
            while offset < bytes.len() {
                let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[offset..])
                    .map_err(|_| garbled())?;
                let length = message.header.length as usize;
                if length == 0 {
                    return Err(garbled());
                }
                offset += length;
                if message.header.sequence_number != self.sequence {
                    continue;
                }
                match message.payload {
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            None => Ok(replies),
                            Some(code) => Err(NetlinkError::Kernel {
                                op: op.to_string(),
                                source: std::io::Error::from_raw_os_error(-code.get()),
                            }),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    _ => {}
                }
            }
        }
    }

    /// Every IPv4 route with a destination (all tables, default routes left out), with the
    /// link it leaves through.
    pub fn ipv4_routes(&mut self) -> Result<Vec<Route>, NetlinkError> {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        let replies = self.request(
            RouteNetlinkMessage::GetRoute(message),
            NLM_F_DUMP,
            "listing routes",
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewRoute(route)
                    if route.header.destination_prefix_length > 0 =>
                {
                    let destination = route.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
                        _ => None,
                    })?;
                    let link = route.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Oif(index) => Some(*index),
                        _ => None,
                    });
                    Some(Route {
                        destination,
                        prefix: route.header.destination_prefix_length,
                        link,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Every link of this namespace: index, name and alias (`ip link set NAME alias ...`).
    pub fn links(&mut self) -> Result<Vec<Interface>, NetlinkError> {
        let replies = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
            "listing links",
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => {
                    let mut name = None;
                    let mut alias = None;
                    let mut mac = None;
                    let mut mtu = None;
                    for attribute in link.attributes {
                        match attribute {
                            LinkAttribute::IfName(n) => name = Some(n),
                            LinkAttribute::IfAlias(a) => alias = Some(a),
                            LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a).ok(),
                            LinkAttribute::Mtu(m) => mtu = Some(m),
                            _ => {}
                        }
                    }
                    Some(Interface {
                        index: link.header.index,
                        name: name?,
                        alias,
                        mac,
                        mtu,
                        loopback: link.header.flags.contains(LinkFlags::Loopback),
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Set the alias of link `index`: the owner's mark on a bridge.
    pub fn set_alias(&mut self, index: u32, alias: &str) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.attributes = vec![LinkAttribute::IfAlias(alias.to_string())];
        self.request(
            RouteNetlinkMessage::SetLink(message),
            0,
            &format!("setting the alias of link {index}"),
        )
        .map(drop)
    }

    /// The index of the link called `name`, None when there is none.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        match self.request(
            RouteNetlinkMessage::GetLink(message),
            0,
            &format!("looking up link {name}"),
        ) {
            Ok(replies) => Ok(replies.into_iter().find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link.header.index),
                _ => None,
            })),
            Err(err) if err.errno() == Some(libc::ENODEV) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Create a bridge called `name` (EEXIST when it is there already).
    pub fn create_bridge(&mut self, name: &str) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
        ];
        self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("creating bridge {name}"),
        )
        .map(drop)
    }

    /// Create a veth pair: `host_name` here, attached to `bridge` and up, and its peer called
    /// `peer_name` with address `mac` created directly in the namespace `netns`.
    pub fn create_veth(
        &mut self,
        host_name: &str,
        peer_name: &str,
        mac: [u8; 6],
        netns: BorrowedFd,
        bridge: u32,
        mtu: u32,
    ) -> Result<(), NetlinkError> {
        let mut peer = LinkMessage::default();
        peer.attributes = vec![
            LinkAttribute::IfName(peer_name.to_string()),
            LinkAttribute::Address(mac.to_vec()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::NetNsFd(netns.as_raw_fd()),
        ];
        let mut message = LinkMessage::default();
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        message.attributes = vec![
            LinkAttribute::IfName(host_name.to_string()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::Controller(bridge),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]),
        ];
        self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("creating veth pair {host_name}"),
        )
        .map(drop)
    }

    /// Put link `index` on `bridge` with `mtu` and bring it up (a VM's tap).
    pub fn attach_to_bridge(
        &mut self,
        index: u32,
        bridge: u32,
        mtu: u32,
    ) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        message.attributes = vec![LinkAttribute::Mtu(mtu), LinkAttribute::Controller(bridge)];
        self.request(
            RouteNetlinkMessage::SetLink(message),
            0,
            &format!("putting link {index} on bridge {bridge}"),
        )
        .map(drop)
    }

    /// Bring link `index` up.
    pub fn set_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        self.request(
            RouteNetlinkMessage::SetLink(message),
            0,
            &format!("bringing link {index} up"),
        )
        .map(drop)
    }

    /// Delete the link called `name`; a link already gone is fine.
    pub fn delete_link(&mut self, name: &str) -> Result<(), NetlinkError> {
        let Some(index) = self.link_index(name)? else {
            return Ok(());
        };
        let mut message = LinkMessage::default();
        message.header.index = index;
        match self.request(
            RouteNetlinkMessage::DelLink(message),
            0,
            &format!("deleting link {name}"),
        ) {
            Ok(_) => Ok(()),
            Err(err) if err.errno() == Some(libc::ENODEV) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Give link `index` the address `address/prefix` (EEXIST when it has it).
    pub fn add_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.prefix_len = prefix;
        message.header.index = index;
        message.attributes = vec![
            AddressAttribute::Local(IpAddr::V4(address)),
            AddressAttribute::Address(IpAddr::V4(address)),
        ];
        self.request(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("adding address {address}/{prefix}"),
        )
        .map(drop)
    }

    /// Every IPv4 address of this namespace.
    pub fn ipv4_addresses(&mut self) -> Result<Vec<Address>, NetlinkError> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        let replies = self.request(
            RouteNetlinkMessage::GetAddress(message),
            NLM_F_DUMP,
            "listing addresses",
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewAddress(message) => {
                    let address = message.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                        _ => None,
                    })?;
                    Some(Address {
                        link: message.header.index,
                        address,
                        prefix: message.header.prefix_len,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// The gateway of the main table's IPv4 default route, if there is one.
    pub fn ipv4_default_gateway(&mut self) -> Result<Option<Ipv4Addr>, NetlinkError> {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        let replies = self.request(
            RouteNetlinkMessage::GetRoute(message),
            NLM_F_DUMP,
            "listing routes",
        )?;
        Ok(replies.into_iter().find_map(|reply| match reply {
            RouteNetlinkMessage::NewRoute(route)
                if route.header.destination_prefix_length == 0
                    && route.header.table == RouteHeader::RT_TABLE_MAIN =>
            {
                route.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
                    _ => None,
                })
            }
            _ => None,
        }))
    }

    /// Set link `index`'s MTU and bring it up.
    pub fn set_mtu_up(&mut self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        message.attributes = vec![LinkAttribute::Mtu(mtu)];
        self.request(
            RouteNetlinkMessage::SetLink(message),
            0,
            &format!("setting the MTU of link {index}"),
        )
        .map(drop)
    }

    /// Give link `index` an ingress qdisc (EEXIST when it has one).
    pub fn add_ingress_qdisc(&mut self, index: u32) -> Result<(), NetlinkError> {
        let message = TcMessage::from_parts(
            TcHeader {
                index: index as i32,
                handle: INGRESS_HANDLE,
                parent: TcHandle::INGRESS,
                ..TcHeader::default()
            },
            vec![TcAttribute::Kind("ingress".into())],
        );
        self.request(
            RouteNetlinkMessage::NewQueueDiscipline(message),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("adding an ingress qdisc to link {index}"),
        )
        .map(drop)
    }

    /// Remove link `index`'s ingress qdisc and its filters; none there is fine.
    pub fn delete_ingress_qdisc(&mut self, index: u32) -> Result<(), NetlinkError> {
        let message = TcMessage::from_parts(
            TcHeader {
                index: index as i32,
                handle: INGRESS_HANDLE,
                parent: TcHandle::INGRESS,
                ..TcHeader::default()
            },
            vec![],
        );
        match self.request(
            RouteNetlinkMessage::DelQueueDiscipline(message),
            0,
            &format!("removing the ingress qdisc of link {index}"),
        ) {
            Ok(_) => Ok(()),
            Err(err) if matches!(err.errno(), Some(libc::ENOENT | libc::EINVAL)) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Steal every frame arriving on link `from` and send it out of link `to`: a u32 filter
    /// that matches all (`match u8 0 0`, as Kata's tcfilter model has it; cls_matchall is
    /// not in every kernel) with a mirred egress redirect, on `from`'s ingress qdisc.
    pub fn redirect_ingress(&mut self, from: u32, to: u32) -> Result<(), NetlinkError> {
        let mut key = TcU32Key::default();
        key.mask = 0;
        key.val = 0;
        let mut selector = TcU32Selector::default();
        selector.flags = TcU32SelectorFlags::Terminal;
        selector.nkeys = 1;
        selector.keys = vec![key];
        let mut generic = TcActionGeneric::default();
        generic.action = TcActionType::Stolen;
        let mut mirror = TcMirror::default();
        mirror.generic = generic;
        mirror.eaction = TcMirrorActionType::EgressRedir;
        mirror.ifindex = to;
        let mut action = TcAction::default();
        action.attributes = vec![
            TcActionAttribute::Kind(TcActionMirror::KIND.into()),
            TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
                mirror,
            ))]),
        ];
        let message = TcMessage::from_parts(
            TcHeader {
                index: from as i32,
                parent: INGRESS_HANDLE,
                // Priority 1, every protocol.
                info: (1 << 16) | ETH_P_ALL_BE,
                ..TcHeader::default()
            },
            vec![
                TcAttribute::Kind(TcFilterU32::KIND.into()),
                TcAttribute::Options(vec![
                    TcOption::U32(TcFilterU32Option::Selector(selector)),
                    TcOption::U32(TcFilterU32Option::Action(vec![action])),
                ]),
            ],
        );
        self.request(
            RouteNetlinkMessage::NewTrafficFilter(message),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("redirecting link {from} to link {to}"),
        )
        .map(drop)
    }

    /// The default route through `gateway`.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> Result<(), NetlinkError> {
        let mut message = RouteMessage::default();
        message.header = RouteHeader {
            address_family: AddressFamily::Inet,
            table: RouteHeader::RT_TABLE_MAIN,
            protocol: RouteProtocol::Boot,
            scope: RouteScope::Universe,
            kind: RouteType::Unicast,
            ..RouteHeader::default()
        };
        message
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        self.request(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("adding the default route via {gateway}"),
        )
        .map(drop)
    }
}
