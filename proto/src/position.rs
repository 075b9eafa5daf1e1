//! Where a task is in its playlist. Reported by workers, kept by coordinators,
//! written to the 48 h resume record.

use serde::{Deserialize, Serialize};

/// A point in a task's playback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Position {
    /// 0-based index into the task's source list.
    pub item: usize,
    /// 0-based loop iteration.
    pub loop_index: u32,
    /// Offset into the item's media, in milliseconds of the source's own timeline.
    pub offset_ms: u64,
    /// Milliseconds of output timeline sent so far (what the destinations' clocks read).
    pub timeline_ms: u64,
}
