//! Network namespaces: each node gets its own namespace and address on a private bridge, so that
//! packets between two nodes can be dropped (`ip route add blackhole` inside the sender's
//! namespace) without touching the host's firewall. Needs root and iproute2.
//!
//! Names carry the harness's pid (`schaos<pid>n<id>`, bridge `scb<pid>`), so concurrent runs do
//! not collide and a later run can remove what a killed run left behind (`clean_stale`).

use crate::schedule::NodeId;
use anyhow::{anyhow, bail, Context};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::Command;

/// The harness's own address on the bridge (last octet).
const HOST_OCTET: u8 = 254;
/// Node ids must fit the last octet of the /24 below the harness's address.
pub const MAX_NODE_ID: NodeId = 250;
const NAMESPACE_PREFIX: &str = "schaos";
const BRIDGE_PREFIX: &str = "scb";

fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip").args(args).output().context("cannot run `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether this process may create namespaces (root with a working `ip netns`).
pub fn available() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false);
    root && ip(&["netns", "list"]).is_ok()
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces and bridges of earlier runs whose harness is gone.
pub fn clean_stale() {
    if let Ok(list) = ip(&["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            let Some(rest) = name.strip_prefix(NAMESPACE_PREFIX) else { continue };
            let Some(pid) = rest.split('n').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
            if !pid_alive(pid) {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    if let Ok(list) = ip(&["-o", "link", "show", "type", "bridge"]) {
        for line in list.lines() {
            let Some(name) = line.split(':').nth(1).map(str::trim) else { continue };
            let Some(pid) = name.strip_prefix(BRIDGE_PREFIX).and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if !pid_alive(pid) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

/// The namespaces and bridge of one run; everything is removed on drop.
#[derive(Debug)]
pub struct Network {
    pid: u32,
    bridge: String,
    /// First three octets of the run's /24.
    prefix: [u8; 3],
    namespaces: BTreeMap<NodeId, String>,
    /// Dropped directions (from, to), to undo on heal.
    blocked: BTreeSet<(NodeId, NodeId)>,
}

impl Network {
    /// Creates the bridge and the harness's address on a /24 that no interface uses yet.
    pub fn create() -> anyhow::Result<Network> {
        clean_stale();
        let pid = std::process::id();
        let used = ip(&["-4", "-o", "addr", "show"])?;
        let second = 100 + (pid % 100) as u8;
        let mut third = ((pid / 100) % 256) as u8;
        let mut prefix = [10, second, third];
        for _ in 0..256 {
            let probe = format!(" {}.{}.{}.", prefix[0], prefix[1], prefix[2]);
            if !used.contains(&probe) {
                break;
            }
            third = third.wrapping_add(1);
            prefix = [10, second, third];
        }
        let bridge = format!("{BRIDGE_PREFIX}{pid}");
        // Built before the first change, so that an error below drops it and removes what exists.
        let net = Network { pid, bridge, prefix, namespaces: BTreeMap::new(), blocked: BTreeSet::new() };
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        let host = format!("{}/24", net.host_ip());
        ip(&["addr", "add", &host, "dev", &net.bridge])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        Ok(net)
    }

    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], HOST_OCTET)
    }

    pub fn node_ip(&self, id: NodeId) -> Ipv4Addr {
        Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], id.min(MAX_NODE_ID) as u8)
    }

    pub fn namespace(&self, id: NodeId) -> Option<&str> {
        self.namespaces.get(&id).map(String::as_str)
    }

    /// Creates node `id`'s namespace with its address, linked to the bridge (idempotent).
    pub fn add_node(&mut self, id: NodeId) -> anyhow::Result<Ipv4Addr> {
        if id == 0 || id > MAX_NODE_ID {
            bail!("node id {id} out of range 1..={MAX_NODE_ID} for network namespaces");
        }
        if self.namespaces.contains_key(&id) {
            return Ok(self.node_ip(id));
        }
        let ns = format!("{NAMESPACE_PREFIX}{}n{id}", self.pid);
        let host_end = format!("sc{}v{id}", self.pid);
        let node_end = format!("sc{}p{id}", self.pid);
        ip(&["netns", "add", &ns])?;
        self.namespaces.insert(id, ns.clone());
        ip(&["link", "add", &host_end, "type", "veth", "peer", "name", &node_end])?;
        ip(&["link", "set", &node_end, "netns", &ns])?;
        ip(&["link", "set", &host_end, "master", &self.bridge])?;
        ip(&["link", "set", &host_end, "up"])?;
        let addr = format!("{}/24", self.node_ip(id));
        ip(&["-n", &ns, "addr", "add", &addr, "dev", &node_end])?;
        ip(&["-n", &ns, "link", "set", &node_end, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(self.node_ip(id))
    }

    /// Drops every packet `from` sends to `to` (one direction).
    pub fn block(&mut self, from: NodeId, to: NodeId) -> anyhow::Result<()> {
        let ns = self.namespace(from).ok_or_else(|| anyhow!("node {from} has no namespace"))?.to_string();
        let dst = format!("{}/32", self.node_ip(to));
        ip(&["-n", &ns, "route", "replace", "blackhole", &dst])?;
        self.blocked.insert((from, to));
        Ok(())
    }

    /// Lets every packet through again.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        for (from, to) in std::mem::take(&mut self.blocked) {
            let Some(ns) = self.namespace(from).map(str::to_string) else { continue };
            let dst = format!("{}/32", self.node_ip(to));
            if let Err(e) = ip(&["-n", &ns, "route", "del", "blackhole", &dst]) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn teardown(&mut self) {
        for (_, ns) in std::mem::take(&mut self.namespaces) {
            let _ = ip(&["netns", "del", &ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::process::{Child, Stdio};

    /// A UDP echo server inside `ns` (python3: present wherever the test suite runs).
    fn echo_server(ns: &str, port: u16) -> Child {
        let code = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',{port}))\n\
             while True:\n  d,a=s.recvfrom(64)\n  s.sendto(d,a)\n"
        );
        Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", &code])
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Whether a datagram sent from `ns` to `to:port` is echoed within `seconds` (resent every
    /// 100 ms, so a server still starting is not mistaken for a partition).
    fn echoed(ns: &str, to: Ipv4Addr, port: u16, seconds: f64) -> bool {
        let code = format!(
            "import socket,time,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(0.1)\n\
             end=time.time()+{seconds}\n\
             while time.time()<end:\n  try:\n    s.sendto(b'x',('{to}',{port}))\n    s.recvfrom(64)\n    sys.exit(0)\n  \
             except OSError:\n    pass\nsys.exit(1)\n"
        );
        Command::new("ip").args(["netns", "exec", ns, "python3", "-c", &code]).status().unwrap().success()
    }

    #[test]
    fn a_blocked_direction_drops_packets_until_healed() {
        if !available() || Command::new("python3").arg("--version").output().is_err() {
            eprintln!("skipped: needs root, `ip netns` and python3");
            return;
        }
        let mut net = Network::create().unwrap();
        net.add_node(1).unwrap();
        net.add_node(2).unwrap();
        let (ns1, ns2) = (net.namespace(1).unwrap().to_string(), net.namespace(2).unwrap().to_string());
        let mut server1 = echo_server(&ns1, 9001);
        let mut server2 = echo_server(&ns2, 9002);
        let result = std::panic::catch_unwind(|| {
            assert!(echoed(&ns1, net.node_ip(2), 9002, 10.0), "1 -> 2 before the partition");
            assert!(echoed(&ns2, net.node_ip(1), 9001, 10.0), "2 -> 1 before the partition");
        });
        let mut blocked = || {
            net.block(1, 2).unwrap();
            // One way: 1 cannot reach 2 (nor get 2's echo of it); 2's packets to 1 still arrive,
            // but 1's echo back is dropped, so neither round trip completes.
            let one_to_two = echoed(&ns1, net.node_ip(2), 9002, 1.0);
            let two_to_one = echoed(&ns2, net.node_ip(1), 9001, 1.0);
            net.heal().unwrap();
            let healed = echoed(&ns1, net.node_ip(2), 9002, 10.0);
            (one_to_two, two_to_one, healed)
        };
        let after = result.is_ok().then(&mut blocked);
        let _ = server1.kill();
        let _ = server2.kill();
        let _ = server1.wait();
        let _ = server2.wait();
        result.unwrap();
        assert_eq!(after, Some((false, false, true)));
        let names = (net.namespace(1).unwrap().to_string(), net.bridge.clone());
        drop(net);
        let list = ip(&["netns", "list"]).unwrap();
        assert!(!list.contains(&names.0), "namespace left behind: {list}");
        assert!(ip(&["link", "show", &names.1]).is_err(), "bridge left behind");
    }
}
