//! A VM container handed a network namespace by path (a Kubernetes pod's, podman's CNI or
//! netavark namespace): the namespace was made and configured by someone else, with one
//! interface (a veth, usually `eth0`) holding the container's address. A guest cannot join a
//! namespace, so its interface is joined to the guest instead, as Kata's tcfilter model does:
//! a tap is created inside the namespace, and two ingress filters redirect every frame
//! arriving on the interface out of the tap and every frame the guest sends out of the
//! interface. The guest takes the interface's address, MAC, MTU and default gateway, so the
//! network outside sees the same endpoint it configured, and the namespace's own stack sees
//! none of the traffic.
//!
//! The tap is not persistent: it goes when the monitor's and holder's descriptors close. The
//! filters on the interface then redirect to nothing; whoever made the namespace deletes it
//! with its interface, and a later VM container in the same namespace replaces them.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;

use nix::sched::CloneFlags;

use super::netlink::{Interface, Rtnl};
use super::{tap, NetworkError};

/// The tap's name inside the namespace. One per namespace: a second VM container in the same
/// namespace would find the interface taken.
pub const TAP_NAME: &str = "husk-tap0";

/// What the guest configures on its interface: the namespace interface's own settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakenInterface {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub mac: [u8; 6],
    pub mtu: u16,
}

/// The tap joined to the namespace's interface, and what the guest takes from it.
pub struct NetnsLink {
    pub tap: File,
    pub interface: TakenInterface,
}

/// Join the one interface of the network namespace `netns` to a new tap in it.
pub fn take_over(netns: &File) -> Result<NetnsLink, NetworkError> {
    // A thread of its own enters the namespace (the tap is made in the namespace of the thread
    // that creates it) and ends there, so no thread of the caller ever changes namespace.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| {
                    NetworkError::Sys {
                        op: "entering the container's network namespace".into(),
                        source,
                    }
                })?;
                take_over_here()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(NetworkError::Address(
                    "taking over the network namespace's interface failed".into(),
                ))
            })
    })
}

fn take_over_here() -> Result<NetnsLink, NetworkError> {
    let mut rtnl = Rtnl::open()?;
    if rtnl.link_index(TAP_NAME)?.is_some() {
        return Err(NetworkError::Address(format!(
            "the network namespace already has {TAP_NAME}: one VM container per network \
             namespace (a pod's other containers must use process isolation)"
        )));
    }
    let links = rtnl.links()?;
    let interface = the_interface(&links)?;
    let address = rtnl
        .ipv4_addresses()?
        .into_iter()
        .find(|a| a.link == interface.index)
        .ok_or_else(|| {
            NetworkError::Address(format!(
                "{} in the network namespace has no IPv4 address",
                interface.name
            ))
        })?;
    if !(8..=32).contains(&address.prefix) {
        return Err(NetworkError::Address(format!(
            "{}/{} in the network namespace: the prefix is outside /8../32",
            address.address, address.prefix
        )));
    }
    let mac = interface.mac.ok_or_else(|| {
        NetworkError::Address(format!(
            "{} in the network namespace has no Ethernet address",
            interface.name
        ))
    })?;
    let mtu = interface
        .mtu
        .and_then(|m| u16::try_from(m).ok())
        .filter(|m| (68..=65517).contains(m))
        .unwrap_or(1500);
    let gateway = rtnl.ipv4_default_gateway()?;
    let tap = tap::open(TAP_NAME)?;
    let tap_index = rtnl
        .link_index(TAP_NAME)?
        .ok_or_else(|| NetworkError::Address(format!("{TAP_NAME} vanished after it was made")))?;
    rtnl.set_mtu_up(tap_index, u32::from(mtu))?;
    for link in [interface.index, tap_index] {
        match rtnl.add_ingress_qdisc(link) {
            Ok(()) => {}
            // Left by an earlier VM container of this namespace, whose tap is gone: its
            // filter redirects to nothing, so it is replaced.
            Err(err) if err.errno() == Some(libc::EEXIST) => {
                rtnl.delete_ingress_qdisc(link)?;
                rtnl.add_ingress_qdisc(link)?;
            }
            Err(err) => return Err(err.into()),
        }
    }
    rtnl.redirect_ingress(interface.index, tap_index)?;
    rtnl.redirect_ingress(tap_index, interface.index)?;
    Ok(NetnsLink {
        tap,
        interface: TakenInterface {
            address: address.address,
            prefix: address.prefix,
            gateway,
            mac,
            mtu,
        },
    })
}

/// The namespace's one interface besides loopback; none or several are refused, since which
/// one the guest should have would be a guess.
fn the_interface(links: &[Interface]) -> Result<&Interface, NetworkError> {
    let mut candidates = links.iter().filter(|l| !l.loopback);
    match (candidates.next(), candidates.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(NetworkError::Address(
            "the network namespace has no interface besides lo for the VM to take".into(),
        )),
        (Some(_), Some(_)) => Err(NetworkError::Address(format!(
            "the network namespace has several interfaces ({}): a VM container takes exactly one",
            links
                .iter()
                .filter(|l| !l.loopback)
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, loopback: bool) -> Interface {
        Interface {
            index,
            name: name.into(),
            alias: None,
            mac: Some([2, 0, 0, 0, 0, index as u8]),
            mtu: Some(1500),
            loopback,
        }
    }

    #[test]
    fn the_one_interface_besides_loopback_is_taken_and_any_other_count_refused() {
        let lo = link(1, "lo", true);
        let eth0 = link(2, "eth0", false);
        let eth1 = link(3, "eth1", false);
        assert_eq!(
            the_interface(&[lo.clone(), eth0.clone()]).unwrap().name,
            "eth0"
        );
        let none = the_interface(std::slice::from_ref(&lo)).unwrap_err();
        assert!(
            none.to_string().contains("no interface besides lo"),
            "{none}"
        );
        let several = the_interface(&[lo, eth0, eth1]).unwrap_err();
        assert!(several.to_string().contains("eth0, eth1"), "{several}");
    }
}
