//! The playlist plan: which item of which pass plays next, and which ranges of
//! it, for items × `relofftime` ranges × loops × a resume position × a
//! playlist replaced while it plays.
//!
//! Pure: the task asks [`Plan::next`] what to play, plays it, and tells the plan
//! how it went with [`Plan::done`]. Tested on tables below.

use vodfleet_proto::command::Range;
use vodfleet_proto::Position;

/// How playing one item went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Played {
    /// Something of it went on air.
    Yes,
    /// Its resume offset lay past its end: not a failure, the pass goes on.
    Skipped,
    /// It could not be played (the task reports it and goes on).
    Failed,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Play this item (index into the current list) in this pass (0-based).
    Play { item: usize, pass: u32 },
    /// The loop count is reached.
    Finished,
    /// A whole pass went by without one playable item: nothing ever will play.
    Unplayable,
}

/// Where a task is in its playlist.
#[derive(Debug, Clone)]
pub struct Plan {
    items: usize,
    /// Passes to play; 0 plays forever.
    loops: u32,
    item: usize,
    pass: u32,
    played_this_pass: bool,
}

impl Plan {
    /// A list of `items` (at least one) played `loops` times (0: forever), from
    /// `first_item`, or from a resume position. A position past the end of a
    /// list that got shorter starts the next pass.
    pub fn new(items: usize, first_item: usize, loops: u32, resume: Option<Position>) -> Plan {
        let (item, pass) = match resume {
            Some(p) if p.item < items => (p.item, p.loop_index),
            Some(p) => (0, p.loop_index + 1),
            None => (first_item.min(items.saturating_sub(1)), 0),
        };
        Plan {
            items: items.max(1),
            loops,
            item,
            pass,
            played_this_pass: false,
        }
    }

    /// What to play now.
    pub fn next(&self) -> Next {
        if self.loops > 0 && self.pass >= self.loops {
            Next::Finished
        } else {
            Next::Play {
                item: self.item,
                pass: self.pass,
            }
        }
    }

    /// The item after the current one, wrapping (what to fetch ahead).
    pub fn following(&self) -> usize {
        (self.item + 1) % self.items
    }

    /// Records how the current item went and moves on.
    pub fn done(&mut self, played: Played) -> Next {
        if played != Played::Failed {
            self.played_this_pass = true;
        }
        self.item += 1;
        if self.item == self.items {
            self.item = 0;
            self.pass += 1;
            if !std::mem::take(&mut self.played_this_pass) {
                return Next::Unplayable;
            }
        }
        self.next()
    }

    /// A new list of `items` replaces the current one: it plays from its first
    /// item; the pass count and the output timeline go on.
    pub fn replace(&mut self, items: usize) {
        self.items = items.max(1);
        self.item = 0;
        self.played_this_pass = false;
    }
}

/// An item's ranges, whole when it has no `relofftime`.
pub fn whole() -> Vec<Range> {
    vec![Range {
        start_ms: 0,
        // Far past any media, yet safe to turn into microseconds.
        end_ms: u64::MAX / 2000,
    }]
}

/// The ranges of an item that remain when playback resumes at `from_ms`: those
/// ending after it, the first one starting there. Nothing is left when `from_ms`
/// is at or past the media's end.
pub fn resume_ranges(ranges: Vec<Range>, from_ms: u64, duration_ms: u64) -> Vec<Range> {
    if from_ms >= duration_ms {
        return Vec::new();
    }
    ranges
        .into_iter()
        .filter(|r| r.end_ms > from_ms)
        .map(|r| Range {
            start_ms: r.start_ms.max(from_ms),
            end_ms: r.end_ms,
        })
        .collect()
}

/// `absofftime` ranges (Unix ms) as offsets into a recording that started at
/// `start_ms` and lasts `duration_ms`: each is clipped to the recording, and
/// one that lies wholly before or after it is dropped. Empty when none
/// overlaps the recording.
pub fn absolute_ranges(abs: &[Range], start_ms: u64, duration_ms: u64) -> Vec<Range> {
    let stop_ms = start_ms.saturating_add(duration_ms);
    abs.iter()
        .filter(|r| r.end_ms > start_ms && r.start_ms < stop_ms)
        .map(|r| Range {
            start_ms: r.start_ms.saturating_sub(start_ms),
            end_ms: r.end_ms.min(stop_ms) - start_ms,
        })
        .collect()
}

/// One contiguous range of one item, in source microseconds.
pub struct Segment {
    pub start: i64,
    pub end: i64,
    /// The item's own zero (its container start time).
    pub origin: i64,
    pub item: usize,
    pub pass: u32,
    /// The item's stream indexes of the output's video and audio.
    pub video: Option<usize>,
    pub audio: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start_ms: u64, end_ms: u64) -> Range {
        Range { start_ms, end_ms }
    }

    fn pos(item: usize, loop_index: u32) -> Position {
        Position {
            item,
            loop_index,
            offset_ms: 0,
            timeline_ms: 0,
        }
    }

    /// Plays the plan to its end with one outcome per item; returns the
    /// (item, pass) sequence and how it ended.
    fn walk(mut plan: Plan, outcome: impl Fn(usize, u32) -> Played) -> (Vec<(usize, u32)>, Next) {
        let mut seen = Vec::new();
        let mut next = plan.next();
        while let Next::Play { item, pass } = next {
            seen.push((item, pass));
            assert!(seen.len() < 100, "runaway plan");
            next = plan.done(outcome(item, pass));
        }
        (seen, next)
    }

    #[test]
    fn items_loops_and_resume_points_on_a_table() {
        // (items, first_item, loops, resume) → the sequence played
        type Row<'a> = (usize, usize, u32, Option<Position>, &'a [(usize, u32)]);
        let table: &[Row] = &[
            (3, 0, 1, None, &[(0, 0), (1, 0), (2, 0)]),
            (2, 0, 2, None, &[(0, 0), (1, 0), (0, 1), (1, 1)]),
            // `index` starts the first pass at that item; later passes start at 0.
            (3, 2, 2, None, &[(2, 0), (0, 1), (1, 1), (2, 1)]),
            // A first_item past the end is clamped to the last item.
            (2, 9, 1, None, &[(1, 0)]),
            // Resume in the middle of pass 1 of 2.
            (3, 0, 2, Some(pos(1, 1)), &[(1, 1), (2, 1)]),
            // A resume past a list that got shorter starts the next pass.
            (2, 0, 3, Some(pos(5, 0)), &[(0, 1), (1, 1), (0, 2), (1, 2)]),
            // Resumed at or after the loop count: nothing left.
            (2, 0, 2, Some(pos(0, 2)), &[]),
        ];
        for (items, first, loops, resume, want) in table {
            let plan = Plan::new(*items, *first, *loops, *resume);
            let (seen, end) = walk(plan, |_, _| Played::Yes);
            assert_eq!(
                &seen, want,
                "items {items} first {first} loops {loops} resume {resume:?}"
            );
            assert_eq!(end, Next::Finished);
        }
    }

    #[test]
    fn forever_goes_on_and_a_failing_item_is_skipped() {
        let mut plan = Plan::new(3, 0, 0, None);
        let mut seen = Vec::new();
        for _ in 0..9 {
            let Next::Play { item, pass } = plan.next() else {
                panic!("forever ended")
            };
            seen.push((item, pass));
            plan.done(if item == 1 {
                Played::Failed
            } else {
                Played::Yes
            });
        }
        assert_eq!(seen[..4], [(0, 0), (1, 0), (2, 0), (0, 1)]);
        assert_eq!(seen[8], (2, 2));
    }

    #[test]
    fn a_pass_without_one_playable_item_is_unplayable() {
        let (seen, end) = walk(Plan::new(2, 0, 0, None), |_, _| Played::Failed);
        assert_eq!((seen, end), (vec![(0, 0), (1, 0)], Next::Unplayable));
        // Skipped items (resume past their end) count as played: the pass goes on.
        let (_, end) = walk(Plan::new(2, 0, 2, None), |i, p| {
            if (i, p) == (0, 0) {
                Played::Skipped
            } else {
                Played::Failed
            }
        });
        assert_eq!(end, Next::Unplayable, "pass 1 has nothing playable");
    }

    #[test]
    fn a_replaced_list_plays_from_its_first_item_in_the_same_pass() {
        let mut plan = Plan::new(3, 0, 2, None);
        plan.done(Played::Yes); // item 0 of pass 0
        plan.replace(2);
        let (seen, end) = walk(plan, |_, _| Played::Yes);
        assert_eq!(seen, vec![(0, 0), (1, 0), (0, 1), (1, 1)]);
        assert_eq!(end, Next::Finished);
    }

    #[test]
    fn resuming_keeps_the_rest_of_the_ranges() {
        let cuts = vec![r(0, 10_000), r(20_000, 30_000), r(40_000, 50_000)];
        // (resume at, media duration) → ranges left
        let table: &[(u64, u64, &[Range])] = &[
            (25_000, 60_000, &[r(25_000, 30_000), r(40_000, 50_000)]),
            (15_000, 60_000, &[r(20_000, 30_000), r(40_000, 50_000)]),
            (
                0,
                60_000,
                &[r(0, 10_000), r(20_000, 30_000), r(40_000, 50_000)],
            ),
            (50_000, 60_000, &[]),
            (45_000, 45_000, &[]),
        ];
        for (from, duration, want) in table {
            assert_eq!(
                &resume_ranges(cuts.clone(), *from, *duration),
                want,
                "from {from}"
            );
        }
        assert_eq!(resume_ranges(whole(), 4_000, 9_000)[0].start_ms, 4_000);
        assert!(
            resume_ranges(whole(), 9_000, 9_000).is_empty(),
            "at the media's end: the next item plays"
        );
    }

    #[test]
    fn absolute_ranges_become_offsets_into_the_recording() {
        let t0 = 1_540_222_200_000; // the recording starts here and lasts 60 s
        let at = |a: u64, b: u64| r(t0 + a, t0 + b);
        let table: &[(&[Range], &[Range])] = &[
            (&[at(4_000, 8_000)], &[r(4_000, 8_000)]),
            // Clipped at both ends of the recording.
            (&[r(t0 - 5_000, t0 + 3_000)], &[r(0, 3_000)]),
            (&[at(50_000, 90_000)], &[r(50_000, 60_000)]),
            // Wholly before or after it: dropped; the rest kept in order.
            (
                &[r(t0 - 9_000, t0), at(10_000, 12_000), at(60_000, 70_000)],
                &[r(10_000, 12_000)],
            ),
            (&[at(60_000, 61_000)], &[]),
        ];
        for (abs, want) in table {
            assert_eq!(&absolute_ranges(abs, t0, 60_000), want, "{abs:?}");
        }
        assert_eq!(
            absolute_ranges(&[at(4_000, 8_000)], t0, u64::MAX),
            [r(4_000, 8_000)],
            "an unknown duration clips nothing at the end"
        );
    }
}
