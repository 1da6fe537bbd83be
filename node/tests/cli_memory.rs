//! `weft node run` turns transparent huge pages off for its process
//! (`node/src/memory.rs`): the kernel reports `THP_enabled: 0` in the
//! running node's `/proc/PID/status`, where a process that did nothing
//! reports 1 on a kernel built with huge pages.

#![cfg(target_os = "linux")]

mod support;

use support::{mesh_dirs, run, wait_for};

/// The `THP_enabled` line of a process's status, if the kernel shows one.
fn thp_enabled(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_owned())
}

#[test]
fn a_running_node_has_transparent_huge_pages_off() {
    let dir = mesh_dirs(1);
    let node = run(dir.path(), "n1", &[]);
    let url = format!("http://{}/readyz", node.api);
    wait_for(30, "the node to be ready", || {
        reqwest::blocking::get(&url)
            .ok()
            .filter(|r| r.status().is_success())
    });
    let shown = thp_enabled(node.child.id());
    assert_eq!(
        shown.as_deref(),
        Some("0"),
        "the node's THP_enabled (this test process's: {:?})",
        thp_enabled(std::process::id())
    );
}
