//! Arguments: which sections, how many runs, where the tables go.

use std::path::PathBuf;

pub struct Args {
    pub quick: bool,
    pub sections: Vec<String>,
    pub out: Option<PathBuf>,
    /// Overrides for the counts (for trying things out).
    pub latency_n: Option<usize>,
    pub intake_n: Option<usize>,
    pub intake_coordinators: Vec<usize>,
    /// The options above as given (for the "command" lines).
    pub opts: String,
}

pub const SECTIONS: [&str; 4] = ["latency", "failover", "handoff", "intake"];

pub fn args() -> Args {
    let mut a = Args {
        quick: false,
        sections: Vec::new(),
        out: None,
        latency_n: None,
        intake_n: None,
        intake_coordinators: vec![1, 2],
        opts: String::new(),
    };
    let mut it = std::env::args().skip(1).peekable();
    while let Some(s) = it.next() {
        if matches!(
            s.as_str(),
            "--quick" | "--latency-n" | "--intake-n" | "--intake-coordinators"
        ) {
            a.opts.push(' ');
            a.opts.push_str(&s);
            if s != "--quick" {
                if let Some(v) = it.peek() {
                    a.opts.push(' ');
                    a.opts.push_str(v);
                }
            }
        }
        match s.as_str() {
            "--quick" => a.quick = true,
            "--out" => a.out = it.next().map(PathBuf::from),
            "--latency-n" => a.latency_n = it.next().and_then(|v| v.parse().ok()),
            "--intake-n" => a.intake_n = it.next().and_then(|v| v.parse().ok()),
            "--intake-coordinators" => {
                a.intake_coordinators = it
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|v| v.parse().ok())
                    .collect()
            }
            // cargo bench passes --bench; libtest-style flags are ignored.
            s if s.starts_with('-') => {}
            s if SECTIONS.contains(&s) => a.sections.push(s.to_owned()),
            s => eprintln!("ignoring unknown argument {s:?} (sections: {SECTIONS:?})"),
        }
    }
    if a.sections.is_empty() {
        a.sections = SECTIONS.iter().map(|s| s.to_string()).collect();
    }
    a
}

/// The command that reproduces one section with the options of this run.
pub fn bench_cmd(section: &str, a: &Args) -> String {
    format!(
        "`cargo bench -p vodfleet-tests --bench fleet -- {section}{}`",
        a.opts
    )
}
