//! Machine, load, processes.

use std::process::Command;

pub fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Other heavy jobs on the box right now (the CPU benchmark, cargo), by name.
pub fn others_running() -> String {
    // `[p]` so the pattern does not match the shell running pgrep.
    let p = sh("pgrep -f '[p]assthrough.py' | head -1");
    // Not counting the `cargo bench` that runs us.
    let parent = std::os::unix::process::parent_id().to_string();
    let c = sh("pgrep -x 'cargo|rustc'")
        .lines()
        .filter(|l| l.trim() != parent)
        .count();
    let mut v = Vec::new();
    if !p.is_empty() {
        v.push("passthrough.py".to_owned());
    }
    if c > 0 {
        v.push(format!("{c} other cargo/rustc"));
    }
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = sh("free -m | awk '/^Mem:/ {print $2}'");
    format!(
        "{n} cores ({cpu}), {mem} MB RAM, {}; load average (1/5/15 min) at start {}",
        sh("uname -sr"),
        loadavg()
    )
}

/// (RSS kB, PSS kB) of a process from `/proc/PID/smaps_rollup`.
pub fn mem_kb(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

/// utime + stime of a process, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at ")".
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // state is f[0]; utime = field 14 → f[11], stime = 15 → f[12].
    let hz = sh("getconf CLK_TCK").parse::<f64>().unwrap_or(100.0);
    (ticks(11) + ticks(12)) / hz
}

/// (busy, total) jiffies of the whole machine from `/proc/stat`.
pub fn machine_jiffies() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The machine's RabbitMQ (the oldest `beam.smp`; tests may start private nodes).
pub fn broker_pid() -> Option<u32> {
    sh("pgrep -o -x beam.smp").parse().ok()
}

/// The pid of the `redis-server` listening on `port` (its argv shows `:PORT`).
pub fn redis_pid(port: u16) -> Option<u32> {
    let needle = format!(":{port}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        (cmd.starts_with("redis-server") && cmd.contains(&needle)).then_some(pid)
    })
}
