//! The node's allocator (ADR 0036): jemalloc with a background thread that
//! returns freed memory to the kernel. What it buys is measured in
//! docs/benchmarks.md (RSS after a transient load); this pins that the
//! binary is built with it, so losing the `#[global_allocator]` or the
//! `background_thread:true` of `.cargo/config.toml` fails a test. The decay
//! times there are not checked.

use std::time::{Duration, Instant};

use warren_e2e::WarrenProcess;

/// Names of the threads of process `pid`.
fn thread_names(pid: u32) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let comm = std::fs::read_to_string(task?.path().join("comm"))?;
        names.push(comm.trim_end().to_owned());
    }
    Ok(names)
}

#[test]
fn the_node_runs_on_jemalloc_with_a_purging_background_thread() -> anyhow::Result<()> {
    let node = WarrenProcess::start_fresh()?;
    let pid = node.pid().ok_or_else(|| anyhow::anyhow!("the node does not run"))?;
    // jemalloc starts its background threads as it initializes and as arenas
    // come into use: look for a while rather than once.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let names = thread_names(pid)?;
        if names.iter().any(|name| name == "jemalloc_bg_thd") {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("no jemalloc background thread among the node's threads: {names:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
