//! Bridge networking, end to end with the real kernel and Debian's nftables: published ports
//! reached with curl, names between containers, outbound NAT to a second namespace, address
//! allocation at scale, taken ports, and cleanup after `rm`, `rm -f` and a killed monitor.
//!
//! Every test runs husk inside a network namespace it made itself (`ip netns add`), so that
//! the container subnets, bridges and nft table exist only there; nothing is sent to an
//! address outside it. The namespace goes when the test ends.

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::cli::Husk;

/// A network namespace of this test's own, deleted (with anything left in it) on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "husk-t{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::SeqCst)
        );
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(status.success(), "ip netns add {name}");
        let netns = Netns { name };
        netns.sh("ip link set lo up");
        netns
    }

    /// A command inside the namespace.
    fn cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.name))
            .arg(program);
        cmd
    }

    /// `sh -c` inside the namespace; its output, printed.
    fn run_sh(&self, script: &str) -> Output {
        let out = self
            .cmd("sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        eprintln!(
            "[{}] {script} -> {:?}\n{}{}",
            self.name,
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn sh(&self, script: &str) -> String {
        let out = self.run_sh(script);
        assert!(out.status.success(), "{script} failed in {}", self.name);
        String::from_utf8(out.stdout).unwrap()
    }

    /// Interfaces whose names start with `prefix`.
    fn links(&self, prefix: &str) -> Vec<String> {
        self.sh("ip -o link show")
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with(prefix))
            .collect()
    }

    /// The elements of husk's port maps, in nft's own words.
    fn published_elements(&self) -> String {
        let out = self.run_sh("nft list map ip husk ports; nft list map ip husk ports_on");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(':') && !l.contains("type"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for round in 0..5 {
            match Command::new("ip")
                .args(["netns", "del", &self.name])
                .output()
            {
                Ok(out) if out.status.success() => return,
                Ok(out) if round == 4 => common::note_leftover(&format!(
                    "ip netns del {}: {}",
                    self.name,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                _ => std::thread::sleep(Duration::from_millis(200 << round)),
            }
        }
    }
}

/// A husk (process isolation, busybox imported) whose every call runs in `netns`.
struct Lab {
    // Declared first: its drop (rm -f of every container) runs before the namespace goes.
    husk: Husk,
    netns: Netns,
}

impl Lab {
    fn new(test: &str) -> Option<Self> {
        for tool in ["nft", "ip", "nsenter", "curl"] {
            if !common::cli::tool_exists(tool) {
                common::note_skip(test, &format!("{tool} is not installed (scripts/setup.sh)"));
                return None;
            }
        }
        let husk = common::cli::process_husk(test, |rootfs| {
            std::fs::create_dir_all(rootfs.join("www")).unwrap();
            std::fs::write(rootfs.join("www/index.html"), "page from the container\n").unwrap();
        })?;
        let netns = Netns::new();
        Some(Lab {
            husk: husk.in_netns(&netns.name),
            netns,
        })
    }

    /// As `new`, with VM isolation as the default (on the monitor of `common::vm_monitor`) and
    /// the same busybox image.
    fn vm(test: &str) -> Option<Self> {
        let (kernel, agent) = match common::guest_assets() {
            Ok(assets) => assets.clone(),
            Err(why) => {
                common::note_skip(test, &why);
                return None;
            }
        };
        let lab = Lab::new(test)?;
        let mut husk = Husk::new(vec![
            ("HUSK_ISOLATION", "vm".into()),
            ("HUSK_KERNEL", kernel.into_os_string()),
            ("HUSK_AGENT", agent.into_os_string()),
            ("HUSK_VMM", common::vm_monitor().into()),
        ]);
        husk.import_busybox(|rootfs| {
            std::fs::create_dir_all(rootfs.join("www")).unwrap();
            std::fs::write(rootfs.join("www/index.html"), "page from the vm\n").unwrap();
        });
        husk = husk.in_netns(&lab.netns.name);
        let Lab {
            husk: process,
            netns,
        } = lab;
        drop(process);
        Some(Lab { husk, netns })
    }

    /// The container's address on its network, from `inspect`.
    fn ip_of(&self, name: &str) -> String {
        self.husk
            .ok(&[
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                name,
            ])
            .trim()
            .to_string()
    }

    fn endpoints_on_disk(&self) -> usize {
        let dir = self.husk.root.path().join("networks");
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .map(|e| {
                        let v: serde_json::Value =
                            serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
                        v["endpoints"].as_object().map_or(0, |m| m.len())
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Nothing of any container is left: no veth, no DNAT element, no address allocation.
    fn assert_released(&self) {
        assert_eq!(self.netns.links("veth"), Vec::<String>::new(), "veths left");
        assert_eq!(self.netns.links("tap"), Vec::<String>::new(), "taps left");
        assert_eq!(self.netns.published_elements(), "", "nft elements left");
        assert_eq!(self.endpoints_on_disk(), 0, "address allocations left");
    }

    /// `curl` of a URL inside the namespace, retried while the server comes up.
    fn curl(&self, url: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.netns.run_sh(&format!("curl -sS -m 5 {url}"));
            if out.status.success() {
                return String::from_utf8(out.stdout).unwrap();
            }
            assert!(Instant::now() < deadline, "curl {url} kept failing");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn httpd(lab: &Lab, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend(["busybox", "httpd", "-f", "-p", "80", "-h", "/www"]);
    lab.husk.ok(&args).trim().to_string()
}

#[test]
fn a_published_port_serves_the_containers_page_on_loopback_and_host_addresses() {
    let Some(lab) = Lab::new(module_path!()) else {
        return;
    };
    httpd(&lab, "web", &["--network", "bridge", "-p", "8080:80"]);
    assert_eq!(
        lab.curl("http://127.0.0.1:8080/"),
        "page from the container\n"
    );
    // The bridge's own address is an address of this host, as docker0's is.
    assert_eq!(
        lab.curl("http://10.87.0.1:8080/"),
        "page from the container\n"
    );
    // And the container directly, on its network.
    let ip = lab.ip_of("web");
    assert!(ip.starts_with("10.87."), "{ip}");
    assert_eq!(
        lab.curl(&format!("http://{ip}/")),
        "page from the container\n"
    );

    // From another container on the bridge, through the host's address (hairpin NAT: needed
    // where bridged frames skip netfilter, that is without br_netfilter).
    let hairpin = lab.husk.ok(&[
        "run",
        "--rm",
        "--network",
        "bridge",
        "busybox",
        "sh",
        "-c",
        "timeout 5 wget -qO- http://10.87.0.1:8080/; echo wget: $?",
    ]);
    assert_eq!(hairpin, "page from the container\nwget: 0\n");
    assert_eq!(lab.husk.ok(&["port", "web"]), "80/tcp -> 0.0.0.0:8080\n");
    assert_eq!(lab.husk.ok(&["port", "web", "80/tcp"]), "0.0.0.0:8080\n");
    let ps = lab.husk.ok(&["ps", "--format", "{{.Names}} {{.Ports}}"]);
    assert_eq!(ps, "web 0.0.0.0:8080->80/tcp\n");
    let settings = lab
        .husk
        .ok(&["inspect", "-f", "{{json .NetworkSettings}}", "web"]);
    let settings: serde_json::Value = serde_json::from_str(&settings).unwrap();
    assert_eq!(settings["IPAddress"], ip.as_str());
    assert_eq!(settings["Gateway"], "10.87.0.1");
    assert_eq!(settings["IPPrefixLen"], 16);
    assert_eq!(settings["Ports"]["80/tcp"][0]["HostPort"], "8080");
    assert_eq!(settings["Networks"]["bridge"]["IPAddress"], ip.as_str());
    // Docker's MAC for the address: 02:42 and its four bytes.
    let octets: Vec<u8> = ip.split('.').map(|o| o.parse().unwrap()).collect();
    let mac = format!(
        "02:42:{:02x}:{:02x}:{:02x}:{:02x}",
        octets[0], octets[1], octets[2], octets[3]
    );
    assert_eq!(settings["MacAddress"], mac.as_str());

    lab.husk.ok(&["stop", "-t", "1", "web"]);
    // A stopped container holds no address and no port, as in Docker.
    assert_eq!(lab.ip_of("web"), "");
    lab.assert_released();
    // The port is free again for the next one.
    httpd(&lab, "web2", &["--network", "bridge", "-p", "8080:80"]);
    assert_eq!(
        lab.curl("http://127.0.0.1:8080/"),
        "page from the container\n"
    );
}

#[test]
fn publish_all_maps_the_images_exposed_ports_to_free_host_ports() {
    let Some(lab) = Lab::new(module_path!()) else {
        return;
    };
    lab.husk
        .import_busybox_as("exposing:latest", &["EXPOSE 80"], |rootfs| {
            std::fs::create_dir_all(rootfs.join("www")).unwrap();
            std::fs::write(rootfs.join("www/index.html"), "exposed\n").unwrap();
        });
    lab.husk.ok(&[
        "run",
        "-d",
        "--name",
        "auto",
        "--network",
        "bridge",
        "-P",
        "exposing",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let mapping = lab.husk.ok(&["port", "auto", "80"]);
    let port: u16 = mapping.trim().rsplit(':').next().unwrap().parse().unwrap();
    assert!(port >= 1024, "{mapping}");
    assert_eq!(lab.curl(&format!("http://127.0.0.1:{port}/")), "exposed\n");
}

/// A UDP echo server and client in C, built static (busybox's nc here has no UDP):
/// `udp serve PORT` answers each datagram with "echo:" and the datagram and prints it;
/// `udp ask IP PORT TEXT` sends TEXT and prints the answer (exit 1 on no answer in 1 s).
const UDP_TOOL: &str = r#"
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    char buf[512];
    if (argc == 3 && !strcmp(argv[1], "serve")) {
        a.sin_port = htons(atoi(argv[2]));
        if (bind(s, (struct sockaddr *)&a, sizeof a)) return 2;
        for (;;) {
            struct sockaddr_in from; socklen_t len = sizeof from;
            ssize_t n = recvfrom(s, buf + 5, sizeof buf - 6, 0, (struct sockaddr *)&from, &len);
            if (n < 0) continue;
            memcpy(buf, "echo:", 5);
            sendto(s, buf, n + 5, 0, (struct sockaddr *)&from, len);
            buf[n + 5] = 0; printf("%s\n", buf + 5); fflush(stdout);
        }
    }
    if (argc == 5 && !strcmp(argv[1], "ask")) {
        struct timeval t = {1, 0};
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t);
        a.sin_port = htons(atoi(argv[3]));
        inet_pton(AF_INET, argv[2], &a.sin_addr);
        sendto(s, argv[4], strlen(argv[4]), 0, (struct sockaddr *)&a, sizeof a);
        ssize_t n = recv(s, buf, sizeof buf - 1, 0);
        if (n < 0) return 1;
        buf[n] = 0; printf("%s\n", buf);
        return 0;
    }
    return 3;
}
"#;

/// The UDP tool built static into `dir`, or None when this host has no C compiler.
fn build_udp_tool(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let source = dir.join("udp.c");
    std::fs::write(&source, UDP_TOOL).unwrap();
    let binary = dir.join("udp");
    let status = Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .ok()?;
    status.success().then_some(binary)
}

#[test]
fn udp_ports_are_published_too() {
    let Some(lab) = Lab::new(module_path!()) else {
        return;
    };
    check_udp_is_published(&lab, module_path!());
}

#[test]
fn containers_on_a_user_network_reach_each_other_by_name_and_alias() {
    let Some(lab) = Lab::new(module_path!()) else {
        return;
    };
    let id = lab.husk.ok(&["network", "create", "backend"]);
    assert_eq!(id.trim().len(), 64);
    httpd(
        &lab,
        "db",
        &["--network", "backend", "--network-alias", "database"],
    );
    for name in ["db", "database"] {
        let out = lab.husk.ok(&[
            "run",
            "--rm",
            "--network",
            "backend",
            "busybox",
            "wget",
            "-qO-",
            &format!("http://{name}/"),
        ]);
        assert_eq!(out, "page from the container\n", "{name}");
    }
    // A member that came later is known to the earlier one (its /etc/hosts is rewritten).
    lab.husk.ok(&[
        "run",
        "-d",
        "--name",
        "late",
        "--network",
        "backend",
        "busybox",
        "sleep",
        "60",
    ]);
    let hosts = lab.husk.ok(&["exec", "db", "cat", "/etc/hosts"]);
    assert!(
        hosts.contains(&format!("{}\tlate", lab.ip_of("late"))),
        "{hosts}"
    );
    lab.husk.ok(&["rm", "-f", "late"]);
    let hosts = lab.husk.ok(&["exec", "db", "cat", "/etc/hosts"]);
    assert!(!hosts.contains("late"), "{hosts}");

    // `network inspect` lists the member; `network rm` refuses while it is there.
    let members = lab.husk.ok(&[
        "network",
        "inspect",
        "-f",
        "{{json .Containers}}",
        "backend",
    ]);
    assert!(members.contains("\"Name\":\"db\""), "{members}");
    let out = lab.husk.run(&["network", "rm", "backend"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has active endpoints"));
    lab.husk.ok(&["rm", "-f", "db"]);
    lab.husk.ok(&["network", "rm", "backend"]);
    assert_eq!(
        lab.netns.links("husk-"),
        Vec::<String>::new(),
        "bridge left"
    );
    lab.assert_released();
}

#[test]
fn the_default_bridge_does_not_resolve_names_and_networks_are_isolated() {
    let Some(lab) = Lab::new(module_path!()) else {
        return;
    };
    httpd(&lab, "web", &["--network", "bridge"]);
    let ip = lab.ip_of("web");
    let out = lab.husk.run(&[
        "run",
        "--rm",
        "--network",
        "bridge",
        "busybox",
        "sh",
        "-c",
        "timeout 3 wget -qO- http://web/",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a name resolved on the default bridge"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad address 'web'"));
    // By address it works, on the same network...
    let page = lab.husk.ok(&[
        "run",
        "--rm",
        "--network",
        "bridge",
        "busybox",
        "wget",
        "-qO-",
        &format!("http://{ip}/"),
    ]);
    assert_eq!(page, "page from the container\n");
    // ...and not from another network (Docker's isolation between networks).
    lab.husk.ok(&["network", "create", "other"]);
    let out = lab.husk.run(&[
        "run",
        "--rm",
        "--network",
        "other",
        "busybox",
        "sh",
        "-c",
        // Not as PID 1, which would ignore the timeout's SIGTERM.
        &format!("timeout 3 wget -qO- http://{ip}/; echo wget: $?"),
    ]);
    // Dropped in forward: no answer at all, so the timeout ends it (143: SIGTERM).
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "wget: 143\n",
        "reached a container on another network: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn network_container_shares_another_containers_namespace() {
    let Some(lab) = Lab::new(module_path!()) else {
        return;
    };
    httpd(&lab, "web", &["--network", "bridge"]);
    let ip = lab.ip_of("web");
    let out = lab.husk.ok(&[
        "run",
        "--rm",
        "--network",
        "container:web",
        "busybox",
        "sh",
        "-c",
        "ip -o -4 addr show eth0; wget -qO- http://127.0.0.1/",
    ]);
    assert!(out.contains(&format!("inet {ip}/16")), "{out}");
    assert!(out.ends_with("page from the container\n"), "{out}");
    let mode = lab
        .husk
        .ok(&["inspect", "-f", "{{.HostConfig.NetworkMode}}", "web"]);
    assert_eq!(mode, "bridge\n");
    // A container that does not run has no namespace to join.
    lab.husk
        .ok(&["create", "--name", "idle", "busybox", "true"]);
    let out = lab.husk.run(&[
        "run",
        "--rm",
        "--network",
        "container:idle",
        "busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("non running container"));
}

#[test]
fn outbound_traffic_is_masqueraded_to_a_server_in_a_second_namespace() {
    let Some(lab) = Lab::new(module_path!()) else {
        return;
    };
    check_outbound_is_masqueraded(&lab);
}

#[test]
fn fifty_containers_on_one_network_get_distinct_addresses_and_leave_nothing() {
    let Some(lab) = Lab::new(module_path!()) else {
        return;
    };
    lab.husk
        .ok(&["network", "create", "--subnet", "10.90.0.0/24", "crowd"]);
    let mut ips = std::collections::BTreeSet::new();
    let mut names = Vec::new();
    for n in 0..50 {
        let name = format!("c{n}");
        lab.husk.ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "crowd",
            "busybox",
            "sleep",
            "300",
        ]);
        let ip = lab.ip_of(&name);
        assert!(ip.starts_with("10.90.0."), "{ip}");
        assert!(ips.insert(ip.clone()), "{ip} given twice");
        names.push(name);
    }
    assert_eq!(lab.netns.links("veth").len(), 50);
    // The last one reaches the first by name through the rewritten hosts files.
    lab.husk
        .ok(&["exec", "c49", "ping", "-c", "1", "-W", "2", "c0"]);
    let mut args = vec!["rm", "-f"];
    args.extend(names.iter().map(String::as_str));
    lab.husk.ok(&args);
    lab.assert_released();
}

#[test]
fn a_taken_host_port_is_one_clear_error_and_creates_nothing() {
    let Some(lab) = Lab::new(module_path!()) else {
        return;
    };
    httpd(&lab, "first", &["--network", "bridge", "-p", "8080:80"]);
    let links = lab.netns.links("veth");
    let elements = lab.netns.published_elements();
    for detach in [true, false] {
        let mut args = vec!["run"];
        if detach {
            args.push("-d");
        }
        args.extend(["--network", "bridge", "-p", "8080:80", "busybox", "true"]);
        let out = lab.husk.run(&args);
        assert_eq!(out.status.code(), Some(125));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("Bind for 0.0.0.0:8080 failed: port is already allocated"),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert_eq!(lab.netns.links("veth"), links);
        assert_eq!(lab.netns.published_elements(), elements);
        assert_eq!(lab.endpoints_on_disk(), 1);
    }
    // A host program holding a port: the same line.
    let mut holder = lab
        .netns
        .cmd("busybox")
        .args(["httpd", "-f", "-p", "9090", "-h", "/"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    // busybox httpd listens on [::]:9090, which holds the IPv4 port too.
    while !lab
        .netns
        .sh("cat /proc/net/tcp /proc/net/tcp6")
        .contains(":2382 ")
    {
        assert!(Instant::now() < deadline, "the holder never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = lab.husk.run(&[
        "run",
        "--rm",
        "--network",
        "bridge",
        "-p",
        "9090:80",
        "busybox",
        "true",
    ]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("port is already allocated"));
    assert_eq!(lab.endpoints_on_disk(), 1);
}

#[test]
fn rm_rm_force_and_a_killed_monitor_leave_no_network_state() {
    let Some(lab) = Lab::new(module_path!()) else {
        return;
    };
    lab.husk.ok(&["network", "create", "n1"]);
    // rm of a stopped container, rm -f of a running one.
    lab.husk.ok(&[
        "run",
        "--name",
        "done",
        "--network",
        "n1",
        "-p",
        "7000:80",
        "busybox",
        "true",
    ]);
    httpd(&lab, "running", &["--network", "n1", "-p", "7001:80"]);
    lab.husk.ok(&["rm", "done"]);
    lab.husk.ok(&["rm", "-f", "running"]);
    lab.assert_released();

    // A detached container whose monitor is killed: the container outlives it, so its state
    // stays until `rm -f` finds it on disk and undoes it.
    let id = httpd(&lab, "orphan", &["--network", "n1", "-p", "7002:80"]);
    assert_eq!(
        lab.curl("http://127.0.0.1:7002/"),
        "page from the container\n"
    );
    let monitor = Command::new("pgrep")
        .args(["-f", &format!("container-monitor {id}")])
        .output()
        .unwrap();
    let monitor: i32 = String::from_utf8_lossy(&monitor.stdout)
        .lines()
        .next()
        .expect("the monitor is running")
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    lab.husk.ok(&["rm", "-f", "orphan"]);
    lab.assert_released();
    lab.husk.ok(&["network", "rm", "n1"]);
    assert_eq!(lab.netns.links("husk-"), Vec::<String>::new());
}

#[test]
fn network_flags_that_cannot_be_honoured_are_refused_before_anything_exists() {
    let Some(lab) = Lab::new(module_path!()) else {
        return;
    };
    for (args, message) in [
        (
            vec!["run", "--network", "none", "-p", "80:80", "busybox", "true"],
            "conflicting options: port publishing",
        ),
        (
            vec![
                "run",
                "--network",
                "bridge",
                "--ip",
                "10.87.0.9",
                "busybox",
                "true",
            ],
            "user defined networks only",
        ),
        (
            vec![
                "run",
                "--network",
                "bridge",
                "-p",
                "8000-8001:80",
                "busybox",
                "true",
            ],
            "port ranges are not supported",
        ),
        (
            vec![
                "run",
                "--network",
                "bridge",
                "-p",
                "80/sctp",
                "busybox",
                "true",
            ],
            "invalid proto: sctp",
        ),
        (
            vec!["run", "--network", "nosuch", "busybox", "true"],
            "network nosuch not found",
        ),
        (
            vec!["run", "--network", "container:nosuch", "busybox", "true"],
            "No such container: nosuch",
        ),
        (
            vec![
                "run",
                "--isolation",
                "vm",
                "--network",
                "container:nosuch",
                "busybox",
                "true",
            ],
            "a VM's network stack is its own kernel's",
        ),
        (
            vec![
                "network",
                "create",
                "--subnet",
                "10.87.5.0/24",
                "overlapping",
            ],
            "overlaps",
        ),
        (vec!["network", "rm", "bridge"], "pre-defined network"),
    ] {
        let out = lab.husk.run(&args);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
    assert_eq!(lab.husk.ok(&["ps", "-a", "-q"]), "");
    assert_eq!(lab.netns.links("veth"), Vec::<String>::new());
}

#[test]
fn add_host_dns_hostname_and_a_fixed_ip_reach_the_containers_files() {
    let Some(lab) = Lab::new(module_path!()) else {
        return;
    };
    lab.husk.ok(&[
        "network",
        "create",
        "--subnet",
        "10.91.0.0/24",
        "--gateway",
        "10.91.0.254",
        "fixed",
    ]);
    let out = lab.husk.ok(&[
        "run",
        "--rm",
        "--network",
        "fixed",
        "--ip",
        "10.91.0.77",
        "--hostname",
        "box",
        "--add-host",
        "db.example:10.0.0.9",
        "--dns",
        "10.0.0.53",
        "busybox",
        "sh",
        "-c",
        "ip -o -4 addr show eth0; ip route; cat /etc/hosts /etc/resolv.conf; hostname",
    ]);
    assert!(out.contains("inet 10.91.0.77/24"), "{out}");
    assert!(out.contains("default via 10.91.0.254"), "{out}");
    assert!(out.contains("10.0.0.9\tdb.example"), "{out}");
    assert!(out.contains("10.91.0.77\tbox"), "{out}");
    assert!(out.contains("nameserver 10.0.0.53"), "{out}");
    assert!(out.ends_with("box\n"), "{out}");
    let taken = lab.husk.ok(&[
        "run",
        "-d",
        "--name",
        "holder",
        "--network",
        "fixed",
        "--ip",
        "10.91.0.78",
        "busybox",
        "sleep",
        "60",
    ]);
    assert!(!taken.is_empty());
    let out = lab.husk.run(&[
        "run",
        "--rm",
        "--network",
        "fixed",
        "--ip",
        "10.91.0.78",
        "busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Address already in use"));
}

/// A UDP port published by a container of `lab`'s default isolation answers through
/// 127.0.0.1 (the static echo tool, as busybox nc has no UDP).
fn check_udp_is_published(lab: &Lab, test: &str) {
    let build = tempfile::tempdir().unwrap();
    let Some(tool) = build_udp_tool(build.path()) else {
        common::note_skip(test, "no C compiler for the static UDP tool (cc -static)");
        return;
    };
    lab.husk.import_busybox_as("udp:latest", &[], |rootfs| {
        std::fs::copy(&tool, rootfs.join("bin/udp")).unwrap();
    });
    lab.husk.ok(&[
        "run",
        "-d",
        "--name",
        "listener",
        "--network",
        "bridge",
        "-p",
        "5353:5353/udp",
        "udp",
        "udp",
        "serve",
        "5353",
    ]);
    assert_eq!(
        lab.husk.ok(&["port", "listener"]),
        "5353/udp -> 0.0.0.0:5353\n"
    );
    let ask = format!("{} ask 127.0.0.1 5353 datagram", tool.display());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = lab.netns.run_sh(&ask);
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "echo:datagram\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no UDP answer through the published port"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The answer can come back before the listener's own line reaches its log (a VM's output
    // travels through the guest's console), so the log is awaited, not read once.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lab.husk.logs("listener").contains("datagram") {
        assert!(
            Instant::now() < deadline,
            "the listener's log never showed the datagram"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A container of `lab`'s default isolation reaches a server in a second namespace of the
/// test, on a documentation subnet (192.0.2.0/24) that exists only between the two. It has
/// no route back to the container's subnet, so only a masqueraded request can be answered.
fn check_outbound_is_masqueraded(lab: &Lab) {
    let outside = Netns::new();
    lab.netns.sh(&format!(
        "ip link add up0 type veth peer name down0 netns {} && ip addr add 192.0.2.1/24 dev up0 && ip link set up0 up",
        outside.name
    ));
    outside.sh("ip addr add 192.0.2.2/24 dev down0 && ip link set down0 up");
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "from outside\n").unwrap();
    let mut server: Child = outside
        .cmd("busybox")
        .args(["httpd", "-f", "-vv", "-p", "80", "-h"])
        .arg(www.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = fetch_from_container(lab, &["--network", "bridge"], "http://192.0.2.2/");
    assert_eq!(out, "from outside\n");
    let _ = server.kill();
    let log = server.wait_with_output().unwrap();
    // The server saw the host's address, not the container's.
    let log = String::from_utf8_lossy(&log.stderr);
    assert!(log.contains("192.0.2.1"), "{log}");
    assert!(!log.contains("10.87."), "{log}");
}

// VM isolation: the same networks through a tap and the monitor's virtio-net device (under
// QEMU in the main suite here, on husk's own monitor in the nested tier).

/// A server on port 80 serving `text`, in either isolation (busybox httpd in the container).
fn web(lab: &Lab, name: &str, text: &str, extra: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    let script =
        format!("mkdir -p /srv && echo {text} > /srv/index.html && exec httpd -f -p 80 -h /srv");
    args.extend(["busybox", "sh", "-c", &script]);
    lab.husk.ok(&args).trim().to_string()
}

/// `wget` of a URL from a new container, retried while the server comes up (busybox 1.35's
/// `wget -T` crashes: timeout bounds each try instead).
fn fetch_from_container(lab: &Lab, extra: &[&str], url: &str) -> String {
    let script = format!(
        "for i in $(seq 1 50); do timeout 3 wget -qO- {url} && exit 0; sleep 0.2; done; exit 1"
    );
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(extra);
    args.extend(["busybox", "sh", "-c", &script]);
    lab.husk.ok(&args)
}

#[test]
fn vm_a_published_port_serves_the_vms_page_and_inspect_says_where() {
    let Some(lab) = Lab::vm(module_path!()) else {
        return;
    };
    httpd(&lab, "vmweb", &["--network", "bridge", "-p", "8080:80"]);
    assert_eq!(lab.curl("http://127.0.0.1:8080/"), "page from the vm\n");
    assert_eq!(lab.curl("http://10.87.0.1:8080/"), "page from the vm\n");
    let ip = lab.ip_of("vmweb");
    assert!(ip.starts_with("10.87."), "{ip}");
    assert_eq!(lab.curl(&format!("http://{ip}/")), "page from the vm\n");
    // From another VM on the bridge, through the host's address (hairpin NAT; in the nested
    // tier's L1 bridged frames skip netfilter, as br_netfilter is not loaded there).
    assert_eq!(
        fetch_from_container(&lab, &["--network", "bridge"], "http://10.87.0.1:8080/"),
        "page from the vm\n"
    );
    assert_eq!(lab.husk.ok(&["port", "vmweb"]), "80/tcp -> 0.0.0.0:8080\n");
    let ps = lab.husk.ok(&["ps", "--format", "{{.Names}} {{.Ports}}"]);
    assert_eq!(ps, "vmweb 0.0.0.0:8080->80/tcp\n");
    // The guest's own view: the address, the MAC and the route husk allocated.
    let octets: Vec<u8> = ip.split('.').map(|o| o.parse().unwrap()).collect();
    let mac = format!(
        "02:42:{:02x}:{:02x}:{:02x}:{:02x}",
        octets[0], octets[1], octets[2], octets[3]
    );
    let view = lab.husk.ok(&[
        "exec",
        "vmweb",
        "sh",
        "-c",
        "ip -o addr show eth0; ip link show eth0; ip route",
    ]);
    assert!(view.contains(&format!("inet {ip}/16")), "{view}");
    assert!(view.contains(&mac), "{view}");
    assert!(view.contains("mtu 1500"), "{view}");
    assert!(view.contains("default via 10.87.0.1 dev eth0"), "{view}");
    let settings = lab
        .husk
        .ok(&["inspect", "-f", "{{json .NetworkSettings}}", "vmweb"]);
    let settings: serde_json::Value = serde_json::from_str(&settings).unwrap();
    assert_eq!(settings["Networks"]["bridge"]["MacAddress"], mac.as_str());
    assert_eq!(settings["Ports"]["80/tcp"][0]["HostPort"], "8080");
    // The guest's kernel is not the host's: this page came through the VM.
    assert_ne!(
        lab.husk.ok(&["exec", "vmweb", "uname", "-r"]).trim(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap()
            .trim()
    );
    lab.husk.ok(&["stop", "-t", "1", "vmweb"]);
    assert_eq!(
        lab.netns.links("tap"),
        Vec::<String>::new(),
        "a stopped VM keeps no tap"
    );
    assert_eq!(lab.netns.published_elements(), "");
}

#[test]
fn vm_udp_ports_are_published_too() {
    let Some(lab) = Lab::vm(module_path!()) else {
        return;
    };
    check_udp_is_published(&lab, module_path!());
}

#[test]
fn vm_and_process_containers_on_one_network_reach_each_other_by_name() {
    let Some(lab) = Lab::vm(module_path!()) else {
        return;
    };
    lab.husk.ok(&["network", "create", "mixed"]);
    web(
        &lab,
        "proc",
        "from-process",
        &["--isolation", "process", "--network", "mixed"],
    );
    web(
        &lab,
        "guest",
        "from-vm",
        &["--network", "mixed", "--network-alias", "vmalias"],
    );
    // A process container reaches the VM by name and alias (its hosts file was rewritten as
    // the VM joined)...
    assert_eq!(
        fetch_from_container(
            &lab,
            &["--isolation", "process", "--network", "mixed"],
            "http://guest/"
        ),
        "from-vm\n"
    );
    assert_eq!(
        fetch_from_container(
            &lab,
            &["--isolation", "process", "--network", "mixed"],
            "http://vmalias/"
        ),
        "from-vm\n"
    );
    // ...a VM reaches the process container and the other VM by name...
    assert_eq!(
        fetch_from_container(&lab, &["--network", "mixed"], "http://proc/"),
        "from-process\n"
    );
    assert_eq!(
        fetch_from_container(&lab, &["--network", "mixed"], "http://guest/"),
        "from-vm\n"
    );
    // ...and the running VM itself resolves the process container: its /etc/hosts came in
    // the start request...
    let hosts = lab.husk.ok(&["exec", "guest", "cat", "/etc/hosts"]);
    assert!(hosts.contains("\tproc "), "{hosts}");
    // ...and a container that joins after the VM started: the agent got the new file.
    web(
        &lab,
        "late",
        "from-late",
        &["--isolation", "process", "--network", "mixed"],
    );
    let fetched = lab.husk.ok(&[
        "exec", "guest", "sh", "-c",
        "for i in $(seq 1 50); do timeout 3 wget -qO- http://late/ && exit 0; sleep 0.2; done; exit 1",
    ]);
    assert_eq!(fetched, "from-late\n");
    // When a member leaves, its name goes from the VM's file too.
    lab.husk.ok(&["rm", "-f", "late"]);
    let hosts = lab.husk.ok(&["exec", "guest", "cat", "/etc/hosts"]);
    assert!(!hosts.contains("late"), "{hosts}");
    // Not its image's files: bound over them, from a tmpfs of the agent's.
    let mounts = lab.husk.ok(&["exec", "guest", "cat", "/proc/mounts"]);
    assert!(mounts.contains(" /etc/hosts tmpfs "), "{mounts}");
    assert!(mounts.contains(" /etc/resolv.conf tmpfs "), "{mounts}");
    // A VM has one virtio-net device: a second network is refused with one line.
    lab.husk.ok(&["network", "create", "second"]);
    let out = lab.husk.run(&["network", "connect", "second", "guest"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("one virtio-net device"), "{stderr}");
}

#[test]
fn vm_outbound_traffic_is_masqueraded_to_a_server_in_a_second_namespace() {
    let Some(lab) = Lab::vm(module_path!()) else {
        return;
    };
    check_outbound_is_masqueraded(&lab);
}

#[test]
fn vm_a_taken_port_rm_and_a_killed_monitor_leave_no_network_state() {
    let Some(lab) = Lab::vm(module_path!()) else {
        return;
    };
    lab.husk.ok(&["network", "create", "n1"]);
    let id = httpd(&lab, "vm1", &["--network", "n1", "-p", "7001:80"]);
    assert_eq!(lab.curl("http://127.0.0.1:7001/"), "page from the vm\n");
    assert_eq!(lab.netns.links("tap"), vec![format!("tap{}", &id[..11])]);
    // The port is the VM's: a second container is refused before any VM boots.
    let out = lab
        .husk
        .run(&["run", "--network", "n1", "-p", "7001:80", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Bind for 0.0.0.0:7001 failed: port is already allocated"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(lab.netns.links("tap").len(), 1);
    assert_eq!(lab.endpoints_on_disk(), 1);

    // kill -9 of the process that holds the VM (QEMU, or husk's monitor): the container
    // ends as killed, and its tap goes with the monitor's descriptor.
    let pid: i32 = lab
        .husk
        .ok(&["inspect", "-f", "{{.State.Pid}}", "vm1"])
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab
        .husk
        .ok(&["inspect", "-f", "{{.State.Status}}", "vm1"])
        .trim()
        != "exited"
    {
        assert!(
            Instant::now() < deadline,
            "the killed VM's container never exited"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        lab.husk
            .ok(&["inspect", "-f", "{{.State.ExitCode}}", "vm1"])
            .trim(),
        "137"
    );
    assert_eq!(lab.netns.links("tap"), Vec::<String>::new());
    assert_eq!(lab.netns.published_elements(), "");
    lab.husk.ok(&["rm", "vm1"]);
    // rm -f of a running VM.
    httpd(&lab, "vm2", &["--network", "n1", "-p", "7002:80"]);
    assert_eq!(lab.curl("http://127.0.0.1:7002/"), "page from the vm\n");
    lab.husk.ok(&["rm", "-f", "vm2"]);
    lab.assert_released();
    lab.husk.ok(&["network", "rm", "n1"]);
    assert_eq!(lab.netns.links("husk-"), Vec::<String>::new());
}

#[test]
fn a_new_network_avoids_subnets_the_namespace_already_routes() {
    let Some(lab) = Lab::new(module_path!()) else {
        return;
    };
    // Someone else's network on the first /24 of husk's pool (another runtime, a VPN).
    lab.netns
        .sh("ip link add other0 type veth peer name other1 && ip addr add 10.86.0.1/24 dev other0 && ip link set other0 up");
    lab.husk.ok(&["network", "create", "mine"]);
    let subnet = lab.husk.ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
        "mine",
    ]);
    assert_eq!(subnet.trim(), "10.86.1.0/24");
}

#[test]
fn bridge_is_the_default_and_roots_sharing_a_namespace_get_bridges_of_their_own() {
    let Some(lab) = Lab::new(module_path!()) else {
        return;
    };
    let eth0 = |husk: &Husk| {
        husk.ok(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "ip -o -4 addr show eth0 | awk '{ print $4 }'",
        ])
        .trim()
        .to_string()
    };
    // No --network: the container joins the default network, `bridge`, as with Docker.
    assert_eq!(eth0(&lab.husk), "10.87.0.2/16");

    // A second root in the same namespace: husk0 and 10.87.0.0/16 are the first one's, so
    // its default network moves to a free bridge name and subnet when its bridge is made.
    let second = common::cli::process_husk(module_path!(), |_| {})
        .unwrap()
        .in_netns(&lab.netns.name);
    assert_eq!(eth0(&second), "10.86.0.2/24");
    let ipam = second.ok(&["network", "inspect", "-f", "{{json .IPAM}}", "bridge"]);
    let ipam: serde_json::Value = serde_json::from_str(&ipam).unwrap();
    assert_eq!(ipam["Config"][0]["Subnet"], "10.86.0.0/24");
    let mut bridges = lab.netns.links("husk");
    bridges.sort();
    assert_eq!(bridges, ["husk0", "husk1"]);
    // Each bridge carries its owner's mark.
    let alias_of = |bridge: &str| {
        lab.netns
            .sh(&format!("ip -o link show {bridge}"))
            .split(" alias ")
            .nth(1)
            .map(|a| a.trim().to_string())
            .unwrap_or_default()
    };
    let root_of = |husk: &Husk| std::fs::canonicalize(husk.root.path()).unwrap();
    assert!(
        alias_of("husk0").starts_with(&format!("husk:{}/networks/", root_of(&lab.husk).display())),
        "{}",
        alias_of("husk0")
    );

    // A root that is gone (its record deleted with it) leaves a stale bridge and, had its
    // container been killed with it, a port published into that bridge's subnet. The next
    // root to make a bridge reclaims both: the same host port serves its own container.
    lab.netns.sh(
        "ip link set husk0 alias husk:/nonexistent/networks/gone.json && \
         nft add element ip husk ports '{ tcp . 8080 : 10.87.0.9 . 80 }'",
    );
    let third = common::cli::process_husk(module_path!(), |rootfs| {
        std::fs::create_dir_all(rootfs.join("www")).unwrap();
        std::fs::write(rootfs.join("www/index.html"), "page of the third root\n").unwrap();
    })
    .unwrap()
    .in_netns(&lab.netns.name);
    let web = ["run", "-d", "--name", "web", "-p", "8080:80", "busybox"];
    third.ok(&[&web[..], &["httpd", "-f", "-p", "80", "-h", "/www"]].concat());
    assert_eq!(
        lab.curl("http://127.0.0.1:8080/"),
        "page of the third root\n"
    );
    let ip = third
        .ok(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            "web",
        ])
        .trim()
        .to_string();
    assert_eq!(ip, "10.87.0.2");
    assert!(
        alias_of("husk0").starts_with(&format!("husk:{}/networks/", root_of(&third).display())),
        "{}",
        alias_of("husk0")
    );
    assert!(!lab.netns.published_elements().contains("10.87.0.9"));
    // The first root's bridge went to the third (it had been marked gone): with no container
    // on it, the first root's default network moves on to a bridge and subnet still free.
    assert_eq!(eth0(&lab.husk), "10.86.1.2/24");
    let mut bridges = lab.netns.links("husk");
    bridges.sort();
    assert_eq!(bridges, ["husk0", "husk1", "husk2"]);

    // A network whose subnet the user fixed is not moved: an overlap is one clear error.
    second.ok(&["network", "create", "--subnet", "10.87.5.0/24", "fixed"]);
    let out = second.run(&["run", "--rm", "--network", "fixed", "busybox", "true"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("network fixed: its subnet 10.87.5.0/24 overlaps 10.87.0.0/16"),
        "{stderr}"
    );
    assert!(!lab
        .netns
        .links("husk")
        .iter()
        .any(|l| l.starts_with("husk-")));
}

/// A container of `lab`'s default isolation, root with CAP_NET_ADMIN on its own interface,
/// reaches a neighbour with its own MAC and address, and nothing once it takes another address
/// or another MAC: the bridge port is held to what husk gave it (nft table `bridge husk`).
fn check_spoofed_sources_are_dropped(lab: &Lab) {
    lab.husk.ok(&["network", "create", "guarded"]);
    web(
        lab,
        "target",
        "reached",
        &["--network", "guarded", "--isolation", "process"],
    );
    let script = "\
        t() { timeout 3 wget -qO- http://target/ 2>/dev/null || echo dropped; }
        for i in $(seq 1 50); do timeout 3 wget -qO- http://target/ >/dev/null 2>&1 && break; sleep 0.2; done
        echo own: $(t)
        me=$(ip -o -4 addr show eth0 | awk '{ print $4 }')
        spoofed=${me%.*}.200/${me#*/}
        ip addr del $me dev eth0 && ip addr add $spoofed dev eth0
        echo address: $(t)
        ip addr del $spoofed dev eth0 && ip addr add $me dev eth0
        echo back: $(t)
        ip link set eth0 down && ip link set eth0 address 02:42:0a:56:00:63 && ip link set eth0 up
        echo mac: $(t)";
    let out = lab.husk.ok(&[
        "run",
        "--rm",
        "--network",
        "guarded",
        "--cap-add",
        "NET_ADMIN",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(
        out,
        "own: reached\naddress: dropped\nback: reached\nmac: dropped\n"
    );
}

#[test]
fn a_container_cannot_send_with_another_address_or_mac() {
    let Some(lab) = Lab::new(module_path!()) else {
        return;
    };
    check_spoofed_sources_are_dropped(&lab);
    lab.husk.ok(&["rm", "-f", "target"]);
    // Its guard goes with it.
    assert_eq!(
        lab.netns
            .sh("nft list set bridge husk sources | grep -c veth || true")
            .trim(),
        "0"
    );
}

#[test]
fn vm_a_guest_cannot_send_with_another_address_or_mac() {
    let Some(lab) = Lab::vm(module_path!()) else {
        return;
    };
    check_spoofed_sources_are_dropped(&lab);
}

#[test]
fn connect_and_disconnect_a_running_container_and_a_stopped_one() {
    let Some(lab) = Lab::new(module_path!()) else {
        return;
    };
    lab.husk.ok(&["network", "create", "front"]);
    lab.husk.ok(&["network", "create", "back"]);
    web(&lab, "api", "from-api", &["--network", "back"]);
    lab.husk.ok(&[
        "run",
        "-d",
        "--name",
        "app",
        "--network",
        "front",
        "busybox",
        "sleep",
        "600",
    ]);
    let in_app = |script: &str| {
        lab.husk
            .ok(&["exec", "app", "sh", "-c", script])
            .trim()
            .to_string()
    };
    let interfaces = || in_app("ip -o -4 addr show | awk '{ print $2 }' | sort | xargs");
    let reach_api = || in_app("timeout 3 wget -qO- http://api/ 2>/dev/null || echo unreachable");
    assert_eq!(interfaces(), "eth0 lo");
    assert_eq!(reach_api(), "unreachable");

    // Running: eth1 on `back`, with an alias; names resolve both ways at once.
    lab.husk
        .ok(&["network", "connect", "--alias", "frontend", "back", "app"]);
    assert_eq!(interfaces(), "eth0 eth1 lo");
    assert_eq!(reach_api(), "from-api");
    let from_api = lab
        .husk
        .ok(&["exec", "api", "sh", "-c", "grep -c frontend /etc/hosts"]);
    assert_eq!(from_api.trim(), "1");
    let networks = lab
        .husk
        .ok(&["inspect", "-f", "{{json .NetworkSettings.Networks}}", "app"]);
    let networks: serde_json::Value = serde_json::from_str(&networks).unwrap();
    let names: Vec<&String> = networks.as_object().unwrap().keys().collect();
    assert_eq!(names, ["back", "front"]);
    // The default route stays with the first network.
    assert!(in_app("ip route show default").contains("dev eth0"));
    let out = lab.husk.run(&["network", "connect", "back", "app"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists in network back"));

    // Running disconnect: eth1 and its address go, the name with them.
    lab.husk.ok(&["network", "disconnect", "back", "app"]);
    assert_eq!(interfaces(), "eth0 lo");
    assert_eq!(reach_api(), "unreachable");
    assert!(!lab
        .husk
        .ok(&["exec", "api", "cat", "/etc/hosts"])
        .contains("frontend"));

    // Stopped: connect is remembered, and the next start joins both.
    lab.husk.ok(&["stop", "-t", "1", "app"]);
    lab.husk.ok(&["network", "connect", "back", "app"]);
    lab.husk.ok(&["start", "app"]);
    assert_eq!(interfaces(), "eth0 eth1 lo");
    assert_eq!(reach_api(), "from-api");

    // Disconnecting the first network of a stopped container makes the next one first.
    lab.husk.ok(&["stop", "-t", "1", "app"]);
    lab.husk.ok(&["network", "disconnect", "front", "app"]);
    lab.husk.ok(&["start", "app"]);
    assert_eq!(interfaces(), "eth0 lo");
    assert_eq!(reach_api(), "from-api");
    let mode = lab
        .husk
        .ok(&["inspect", "-f", "{{.HostConfig.NetworkMode}}", "app"]);
    assert_eq!(mode.trim(), "back");

    lab.husk.ok(&["rm", "-f", "app", "api"]);
    lab.assert_released();
}
