//! The two pure parts of the shared cache (`source::cache`): the set of
//! byte ranges an entry's file holds, and the least-recently-used choice of
//! what to evict. Property-tested against plain models.

use std::collections::BTreeMap;

/// Byte ranges held, as disjoint, non-adjacent `[start, end)` intervals.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RangeSet {
    map: BTreeMap<u64, u64>,
    total: u64,
}

impl RangeSet {
    /// Adds `[start, end)`; returns how many bytes were not held before.
    pub fn insert(&mut self, start: u64, end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        let (mut lo, mut hi) = (start, end);
        let mut removed = 0;
        // The interval starting at or before `start` that reaches it, then
        // every one starting inside [start, end]: they merge.
        if let Some((&s, &e)) = self.map.range(..=start).next_back() {
            if e >= start {
                lo = s;
                hi = hi.max(e);
                removed += e - s;
                self.map.remove(&s);
            }
        }
        let inside: Vec<(u64, u64)> = self.map.range(lo..=hi).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in inside {
            hi = hi.max(e);
            removed += e - s;
            self.map.remove(&s);
        }
        self.map.insert(lo, hi);
        let added = (hi - lo) - removed;
        self.total += added;
        added
    }

    /// How many bytes are held contiguously from `pos`.
    pub fn run_from(&self, pos: u64) -> u64 {
        match self.map.range(..=pos).next_back() {
            Some((_, &e)) if e > pos => e - pos,
            _ => 0,
        }
    }

    /// The first byte at or after `from` that is not held.
    pub fn next_gap(&self, from: u64) -> u64 {
        from + self.run_from(from)
    }

    /// Bytes held in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Intervals held (a small number: one per region fetched).
    #[cfg(test)]
    pub fn intervals(&self) -> usize {
        self.map.len()
    }
}

/// Least recently used first: which of `(last_used, bytes)` to evict, by
/// index, so that `total` falls to `max` or below.
pub fn eviction_order(candidates: &[(u64, u64)], total: u64, max: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by_key(|&i| candidates[i].0);
    let mut left = total;
    let mut out = Vec::new();
    for i in order {
        if left <= max {
            break;
        }
        left = left.saturating_sub(candidates[i].1);
        out.push(i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn merges_overlapping_and_adjacent_ranges() {
        let mut r = RangeSet::default();
        assert_eq!(r.insert(10, 20), 10);
        assert_eq!(r.insert(30, 40), 10);
        assert_eq!(r.intervals(), 2);
        assert_eq!(r.insert(20, 30), 10, "adjacent on both sides");
        assert_eq!(r.intervals(), 1);
        assert_eq!(r.insert(5, 45), 10);
        assert_eq!((r.total(), r.run_from(5), r.run_from(45)), (40, 40, 0));
        assert_eq!(r.next_gap(0), 0);
        assert_eq!(r.next_gap(7), 45);
        assert_eq!(r.insert(7, 7), 0);
    }

    #[test]
    fn evicts_least_recently_used_until_under_the_bound() {
        // (last_used, bytes)
        let c = [(5, 100), (1, 100), (3, 100)];
        assert_eq!(eviction_order(&c, 300, 250), vec![1]);
        assert_eq!(eviction_order(&c, 300, 100), vec![1, 2]);
        assert_eq!(eviction_order(&c, 300, 300), Vec::<usize>::new());
        assert_eq!(
            eviction_order(&c, 900, 0),
            vec![1, 2, 0],
            "all, when pinned ones hold the rest"
        );
    }

    proptest! {
        #[test]
        fn behaves_like_a_bitmap(ops in proptest::collection::vec((0u64..200, 0u64..40), 0..40), probe in 0u64..260) {
            let mut r = RangeSet::default();
            let mut bits = [false; 260];
            for (start, n) in ops {
                let before = bits.iter().filter(|b| **b).count() as u64;
                let added = r.insert(start, start + n);
                for b in &mut bits[start as usize..(start + n) as usize] { *b = true; }
                let after = bits.iter().filter(|b| **b).count() as u64;
                prop_assert_eq!(added, after - before);
            }
            prop_assert_eq!(r.total(), bits.iter().filter(|b| **b).count() as u64);
            let run = bits[probe as usize..].iter().take_while(|b| **b).count() as u64;
            prop_assert_eq!(r.run_from(probe), run);
            prop_assert_eq!(r.next_gap(probe), probe + run);
            // Disjoint and never adjacent: as many intervals as runs of held bytes.
            let runs = bits.windows(2).filter(|w| !w[0] && w[1]).count() + usize::from(bits[0]);
            prop_assert_eq!(r.intervals(), runs);
        }

        #[test]
        fn eviction_frees_enough_and_oldest_first(c in proptest::collection::vec((0u64..1000, 0u64..100), 0..20), max in 0u64..1000) {
            let total: u64 = c.iter().map(|x| x.1).sum();
            let out = eviction_order(&c, total, max);
            let freed: u64 = out.iter().map(|&i| c[i].1).sum();
            if total > max { prop_assert!(total - freed <= max || out.len() == c.len()); }
            // What is evicted is never newer than what is kept, and no more than needed.
            for &i in &out {
                for (j, k) in c.iter().enumerate() {
                    if !out.contains(&j) { prop_assert!(c[i].0 <= k.0); }
                }
            }
            if let Some(&last) = out.last() { prop_assert!(total - (freed - c[last].1) > max); }
        }
    }
}
