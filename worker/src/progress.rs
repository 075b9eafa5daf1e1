//! How `play` shows its tasks' events on stdout: one JSON object per line
//! (`--progress json`) or a live line per task (`--progress tty`).

use vodfleet_engine::event::Event;

/// How events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressStyle {
    Tty,
    Json,
    None,
}

/// Prints one event of task `task_id` (every JSON line carries the task's id).
pub fn print(style: ProgressStyle, task_id: &str, e: &Event) {
    let json = || {
        let mut v = serde_json::to_value(e).expect("events serialise");
        v["task_id"] = task_id.into();
        v.to_string()
    };
    match style {
        ProgressStyle::None => {}
        ProgressStyle::Json => println!("{}", json()),
        ProgressStyle::Tty => match e {
            Event::Progress {
                item,
                loop_index,
                offset_ms,
                timeline_ms,
                lag_ms,
                destinations,
            } => {
                let dests: Vec<String> = destinations
                    .iter()
                    .map(|d| format!("#{} {:?} {:.0} kbit/s", d.index, d.state, d.kbps))
                    .collect();
                // One line rewritten in place: a live view rather than a scrolling log.
                print!(
                    "\r\x1b[K{task_id}: item {} loop {} at {} | timeline {} | lag {} ms | {}",
                    item + 1,
                    loop_index + 1,
                    clock(*offset_ms),
                    clock(*timeline_ms),
                    lag_ms,
                    dests.join(" | ")
                );
                use std::io::Write;
                let _ = std::io::stdout().flush();
            }
            other => println!(
                "\r\x1b[K{}",
                serde_json::to_string(other).expect("events serialise")
            ),
        },
    }
}

fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}
