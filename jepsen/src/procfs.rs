//! Read-only inspection of `/proc`: who listens on a node's address, which
//! process holds that socket, and which `orrery` processes belong to a test.
//! The parsing is kept in pure functions over the files' text, so it is
//! tested on fixed strings.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

/// One `st` = LISTEN line of `/proc/<pid>/net/tcp`.
#[derive(Debug, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddrV4,
    pub inode: u64,
}

/// `0100007F:4269` (the kernel prints the raw network-order address as a
/// native-endian u32, and the port in host order).
fn parse_hex_addr(s: &str) -> Option<SocketAddrV4> {
    let (ip, port) = s.split_once(':')?;
    if ip.len() != 8 {
        return None;
    }
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(ip.to_ne_bytes()), port))
}

/// Listening sockets in the text of a `/proc/<pid>/net/tcp` file; lines
/// that do not parse are skipped (the header among them).
pub fn parse_listeners(tcp: &str) -> Vec<Listener> {
    tcp.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
            if f.len() < 10 || f[3] != "0A" {
                return None;
            }
            Some(Listener {
                addr: parse_hex_addr(f[1])?,
                inode: f[9].parse().ok()?,
            })
        })
        .collect()
}

/// Inodes of the sockets listening on `addr` (or on its port, any address).
pub fn listening_inodes(tcp: &str, addr: SocketAddrV4) -> Vec<u64> {
    parse_listeners(tcp)
        .into_iter()
        .filter(|l| {
            l.addr.port() == addr.port()
                && (l.addr.ip() == addr.ip() || l.addr.ip().is_unspecified())
        })
        .map(|l| l.inode)
        .collect()
}

/// The inode of a `/proc/<pid>/fd/<n>` link target `socket:[123]`.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The state letter of a `/proc/<pid>/stat` line (`R`, `S`, `T`, `Z`, …);
/// the command name in parentheses may itself contain spaces and `)`.
pub fn stat_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Decides whether the process with `stat` (its `/proc/<pid>/stat` text,
/// `None` when gone) and open-file links `fd_links` is the one listening on
/// `addr`, given `tcp` (its namespace's `/proc/net/tcp`). Returns the
/// listening socket's inode, or why not.
pub fn check_listener(
    stat: Option<&str>,
    tcp: &str,
    fd_links: &[String],
    addr: SocketAddrV4,
) -> Result<u64, String> {
    match stat.map(stat_state) {
        None => return Err("the process is gone".into()),
        Some(Some('Z')) => return Err("the process is a zombie (it exited)".into()),
        Some(Some('X')) => return Err("the process is dead".into()),
        Some(None) => return Err("its /proc/<pid>/stat does not parse".into()),
        Some(Some(_)) => {}
    }
    let inodes = listening_inodes(tcp, addr);
    if inodes.is_empty() {
        return Err(format!("nothing listens on {addr}"));
    }
    let held: BTreeSet<u64> = fd_links.iter().filter_map(|l| socket_inode(l)).collect();
    inodes
        .iter()
        .copied()
        .find(|i| held.contains(i))
        .ok_or_else(|| {
            format!(
                "{addr} is served by socket inode(s) {inodes:?}, which the process does not hold"
            )
        })
}

fn read_fd_links(pid: i32) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

fn read_cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn all_pids() -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Who holds socket `inode`: `pid (cmdline)`, for error messages.
pub fn socket_owner(inode: u64) -> Option<String> {
    let want = format!("socket:[{inode}]");
    all_pids().into_iter().find_map(|pid| {
        read_fd_links(pid)
            .contains(&want)
            .then(|| format!("pid {pid} ({})", read_cmdline(pid).join(" ")))
    })
}

/// Who listens on `addr` in this process's network namespace (the nodes'
/// namespace), as `pid (cmdline)` where the owner can be found.
pub fn listeners_on(addr: SocketAddrV4) -> Vec<String> {
    let tcp = std::fs::read_to_string("/proc/self/net/tcp").unwrap_or_default();
    listening_inodes(&tcp, addr)
        .into_iter()
        .map(|i| socket_owner(i).unwrap_or_else(|| format!("socket inode {i} (owner not found)")))
        .collect()
}

/// Checks that `pid` is alive, not a zombie, and is the process listening
/// on `addr` (and, for a clock-skewed node, that it really loaded
/// `libfaketime`: the dynamic loader only warns when a preload fails).
pub fn verify_node(pid: i32, addr: SocketAddrV4, faketime: Option<&Path>) -> Result<(), String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    // The started process's own view: it is in the nodes' namespace.
    let tcp = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let links = read_fd_links(pid);
    if let Err(why) = check_listener(stat.as_deref(), &tcp, &links, addr) {
        let owners = listeners_on(addr);
        return Err(format!(
            "started pid {pid} is not the node answering on {addr}: {why}{}",
            if owners.is_empty() {
                String::new()
            } else {
                format!("; it is answered by {}", owners.join(", "))
            }
        ));
    }
    if let Some(lib) = faketime {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        let name = lib.file_name().map(|n| n.to_string_lossy().into_owned());
        if !name.is_some_and(|n| maps.contains(&n)) {
            return Err(format!(
                "pid {pid} was started with LD_PRELOAD={} but did not load it: its clock is not skewed",
                lib.display()
            ));
        }
    }
    Ok(())
}

/// A process found by [`scan_nodes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub cmdline: Vec<String>,
}

impl ProcInfo {
    pub fn to_json(&self) -> Value {
        json!({"pid": self.pid, "cmdline": self.cmdline.join(" ")})
    }
}

/// True when `args` (a command line) or `exe` (its `/proc/<pid>/exe`) is
/// `orrery` and its `--data-dir` lies under `root`: a node of this test,
/// whoever started it. Nodes of other tests (other directories) never match.
pub fn is_node_of(args: &[String], exe: Option<&Path>, orrery: &Path, root: &Path) -> bool {
    let is_orrery = args.first().is_some_and(|a0| Path::new(a0) == orrery) || exe == Some(orrery);
    if !is_orrery {
        return false;
    }
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let dir = if a == "--data-dir" {
            it.next().map(String::as_str)
        } else {
            a.strip_prefix("--data-dir=")
        };
        if let Some(d) = dir {
            return Path::new(d).starts_with(root);
        }
    }
    false
}

/// Every running `orrery` whose data directory is under `root`.
pub fn scan_nodes(orrery: &Path, root: &Path) -> Vec<ProcInfo> {
    all_pids()
        .into_iter()
        .filter_map(|pid| {
            let cmdline = read_cmdline(pid);
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            is_node_of(&cmdline, exe.as_deref(), orrery, root).then_some(ProcInfo { pid, cmdline })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(ip: Ipv4Addr, port: u16) -> String {
        format!("{:08X}:{port:04X}", u32::from_ne_bytes(ip.octets()))
    }

    fn tcp_line(sl: u32, local: &str, st: &str, inode: u64) -> String {
        format!(
            "  {sl}: {local} 00000000:0000 {st} 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0"
        )
    }

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

    fn addr(last: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, last), port)
    }

    fn table() -> String {
        [
            HEADER.to_string(),
            tcp_line(0, &hex(Ipv4Addr::new(127, 0, 0, 1), 17001), "0A", 1001),
            tcp_line(1, &hex(Ipv4Addr::new(127, 0, 0, 1), 17101), "0A", 1002),
            tcp_line(2, &hex(Ipv4Addr::new(127, 0, 0, 2), 17001), "0A", 2001),
            // An established connection to n1's client port: not a listener.
            tcp_line(3, &hex(Ipv4Addr::new(127, 0, 0, 1), 17001), "01", 3001),
            "garbage line".to_string(),
        ]
        .join("\n")
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn parses_a_real_proc_net_tcp_line() {
        let t = format!("{HEADER}\n   0: 0100007F:4269 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n");
        assert_eq!(
            parse_listeners(&t),
            vec![Listener {
                addr: addr(1, 0x4269),
                inode: 4242
            }]
        );
    }

    #[test]
    fn finds_listeners_by_address_and_port() {
        let t = table();
        assert_eq!(listening_inodes(&t, addr(1, 17001)), vec![1001]);
        assert_eq!(listening_inodes(&t, addr(2, 17001)), vec![2001]);
        assert!(listening_inodes(&t, addr(3, 17001)).is_empty());
        let any = format!(
            "{t}\n{}",
            tcp_line(9, &hex(Ipv4Addr::UNSPECIFIED, 17001), "0A", 9001)
        );
        assert_eq!(listening_inodes(&any, addr(3, 17001)), vec![9001]);
        assert!(listening_inodes("", addr(1, 17001)).is_empty());
    }

    #[test]
    fn parses_socket_links_and_stat_states() {
        assert_eq!(socket_inode("socket:[1001]"), Some(1001));
        assert_eq!(socket_inode("pipe:[1001]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(stat_state("42 (orrery) S 1 42 42 0"), Some('S'));
        assert_eq!(stat_state("42 (a) b) Z) Z 1 42"), Some('Z'));
        assert_eq!(stat_state("42 (orrery"), None);
    }

    #[test]
    fn the_started_process_must_hold_the_listening_socket() {
        let t = table();
        let running = Some("42 (orrery) S 1 42 42 0");
        let links = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mine = links(&["/dev/null", "socket:[1002]", "socket:[1001]"]);
        assert_eq!(check_listener(running, &t, &mine, addr(1, 17001)), Ok(1001));
        // A wrapper (faketime) whose child holds the socket.
        let wrapper = links(&["/dev/null", "pipe:[77]"]);
        let e = check_listener(running, &t, &wrapper, addr(1, 17001)).unwrap_err();
        assert!(e.contains("does not hold"), "{e}");
        // Another process's listener on the address (an orphan).
        let other = links(&["socket:[2001]"]);
        assert!(check_listener(running, &t, &other, addr(1, 17001)).is_err());
        assert!(check_listener(running, &t, &mine, addr(3, 17001))
            .unwrap_err()
            .contains("nothing listens"));
        assert!(check_listener(None, &t, &mine, addr(1, 17001))
            .unwrap_err()
            .contains("gone"));
        assert!(
            check_listener(Some("42 (orrery) Z 1"), &t, &mine, addr(1, 17001))
                .unwrap_err()
                .contains("zombie")
        );
    }

    #[test]
    fn matches_only_this_tests_orrery_nodes() {
        let orrery = Path::new("/t/debug/orrery");
        let root = Path::new("/s/register-all-1");
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let node = args(&[
            "/t/debug/orrery",
            "serve",
            "--id",
            "1",
            "--data-dir",
            "/s/register-all-1/data/n1",
        ]);
        assert!(is_node_of(&node, None, orrery, root));
        let eq = args(&[
            "/t/debug/orrery",
            "serve",
            "--data-dir=/s/register-all-1/data/n2",
        ]);
        assert!(is_node_of(&eq, None, orrery, root));
        // Another test's node, a prefix that is not a parent, other programs.
        let other = args(&[
            "/t/debug/orrery",
            "serve",
            "--data-dir",
            "/s/register-all-2/data/n1",
        ]);
        assert!(!is_node_of(&other, None, orrery, root));
        let prefix = args(&[
            "/t/debug/orrery",
            "serve",
            "--data-dir",
            "/s/register-all-10/data/n1",
        ]);
        assert!(!is_node_of(&prefix, None, orrery, root));
        let wrapper = args(&[
            "faketime",
            "-f",
            "+5s",
            "/t/debug/orrery",
            "serve",
            "--data-dir",
            "/s/register-all-1/data/n1",
        ]);
        assert!(!is_node_of(&wrapper, None, orrery, root));
        assert!(!is_node_of(
            &args(&["/t/debug/orrery", "serve"]),
            None,
            orrery,
            root
        ));
        assert!(!is_node_of(&[], None, orrery, root));
        // Started through another path to the same binary.
        let relative = args(&[
            "./orrery",
            "serve",
            "--data-dir",
            "/s/register-all-1/data/n3",
        ]);
        assert!(is_node_of(&relative, Some(orrery), orrery, root));
    }
}
