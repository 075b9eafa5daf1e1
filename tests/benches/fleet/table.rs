//! Figures as they stand in the markdown tables.

use std::time::Duration;

pub fn mb(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

pub fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

/// Nearest-rank percentile of sorted values.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**not met**"
    }
}

pub fn opt_i(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "—".into())
}

pub fn opt_ms(d: Option<Duration>) -> String {
    d.map(ms).unwrap_or_else(|| "—".into())
}
