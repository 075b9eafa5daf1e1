//! One continuous output timeline per task (docs/design/timeline.md).
//!
//! A task plays *segments*: an item, or one range of an item's `relofftime`,
//! on every loop. Each segment's source timestamps are moved so that the
//! segment starts where the previous one ended; a destination therefore sees
//! timestamps that only grow, across files, cuts and loops, in one RTMP session.
//!
//! All values are microseconds. `src_start` is the source time that maps to the
//! segment's first output instant: the first keyframe's PTS in copy mode, the
//! cut point in transcode mode.

/// Which output stream a timestamp belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Video = 0,
    Audio = 1,
}

#[derive(Debug, Default)]
pub struct Timeline {
    /// Output time of the current segment's start.
    offset: i64,
    /// Source time that maps to `offset`.
    src_start: i64,
    /// Latest end (pts + duration) seen per track in this segment, in source time.
    end: [Option<i64>; 2],
    /// Last DTS handed out per track, in output time.
    last_dts: [Option<i64>; 2],
    started: bool,
    /// Output time of the first segment (a resumed task goes on from its position).
    base: i64,
}

impl Timeline {
    #[cfg(test)]
    pub fn new() -> Timeline {
        Timeline::default()
    }

    /// A timeline whose first segment starts at output time `base_us`.
    pub fn starting_at(base_us: i64) -> Timeline {
        Timeline {
            base: base_us.max(0),
            // What `reached` says before the first segment (a slate may come first).
            offset: base_us.max(0),
            ..Timeline::default()
        }
    }

    /// Starts a segment whose presentation begins at source time `src_start`.
    /// `first_dts` is the earliest DTS the segment will emit (below `src_start`
    /// when B-frames delay decoding); the very first segment is shifted by that
    /// much so no output timestamp is negative.
    pub fn begin(&mut self, src_start: i64, first_dts: i64) {
        if self.started {
            self.offset += self.segment_duration();
        } else {
            self.offset = self.base + (src_start - first_dts).max(0);
            self.started = true;
        }
        self.src_start = src_start;
        self.end = [None, None];
    }

    /// Starts a slate segment at the end of what is on air; its packets are
    /// placed in the slate's own time, from 0 (docs/design/sources.md, "Never dark").
    pub fn begin_slate(&mut self) {
        self.begin(0, 0);
    }

    /// Output time `track` reached in the current segment; `None` when
    /// nothing of it was placed since the segment began.
    pub fn reach_out(&self, track: Track) -> Option<i64> {
        self.end[track as usize].map(|e| self.offset + e - self.src_start)
    }

    /// How far the video's decode order runs behind its presentation at the
    /// end of what is on air (the B-frame delay of the item playing), for a
    /// next video frame of `frame_us`: a slate's pictures are given that much
    /// less DTS, so decode times go on without a hole.
    pub fn video_delay(&self, frame_us: i64) -> i64 {
        let Some(last) = self.last_dts[Track::Video as usize] else {
            return 0;
        };
        let reach = self.reach_out(Track::Video).unwrap_or(self.reached());
        (reach - last - frame_us).clamp(0, MAX_SLATE_DELAY_US)
    }

    /// Extends the current segment to `src_end` on `track` without placing a
    /// packet (a slate drawn by the task's encoder, which stamps its own packets).
    pub fn extend(&mut self, track: Track, src_end: i64) {
        let t = track as usize;
        self.end[t] = Some(self.end[t].map_or(src_end, |e| e.max(src_end)));
    }

    /// How far `track` of the current segment reached, in source time.
    pub fn source_reach(&self, track: Track) -> Option<i64> {
        self.end[track as usize]
    }

    /// Output time of the current segment's start.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Length of the current segment so far: up to the end of its video (which
    /// carries the frame cadence), or of its audio when there is no video; never
    /// shorter than the audio already emitted, so audio never goes back at a seam.
    pub fn segment_duration(&self) -> i64 {
        let v = self.end[Track::Video as usize];
        let a = self.end[Track::Audio as usize];
        let end = match (v, a) {
            (Some(v), Some(a)) => v.max(a - AUDIO_OVERHANG_US),
            (Some(v), None) => v,
            (None, Some(a)) => a,
            (None, None) => self.src_start,
        };
        (end - self.src_start).max(0)
    }

    /// Output time of the current segment's start.
    #[cfg(test)]
    pub fn segment_offset(&self) -> i64 {
        self.offset
    }

    /// Output time reached so far (end of what has been placed).
    pub fn reached(&self) -> i64 {
        self.offset + self.segment_duration()
    }

    /// The source time of output time `out_us` in the current segment (the inverse
    /// of [`Self::place`], for encoded packets that carry output time only).
    pub fn source_time(&self, out_us: i64) -> i64 {
        self.src_start + (out_us - self.offset)
    }

    /// Maps a packet (or frame, with `dts == pts`) onto the output timeline.
    /// Returns `(pts, dts)`; DTS strictly grows per track and PTS is never below DTS.
    pub fn place(&mut self, track: Track, pts: i64, dts: i64, duration: i64) -> (i64, i64) {
        let t = track as usize;
        let end = pts + duration.max(0);
        self.end[t] = Some(self.end[t].map_or(end, |e| e.max(end)));
        let mut out_dts = self.offset + (dts - self.src_start);
        let mut out_pts = self.offset + (pts - self.src_start);
        if let Some(last) = self.last_dts[t] {
            if out_dts <= last {
                // Only at a seam whose B-frame delay differs from the last item's,
                // or with a broken source: nudge forward rather than go back.
                out_dts = last + 1;
            }
        }
        out_dts = out_dts.max(0);
        out_pts = out_pts.max(out_dts);
        self.last_dts[t] = Some(out_dts);
        (out_pts, out_dts)
    }
}

/// Audio frames rarely end exactly with the video (an AAC frame is ~23 ms);
/// a tail shorter than this does not lengthen the segment, so seams stay
/// within one audio frame instead of drifting by one per item.
const AUDIO_OVERHANG_US: i64 = 30_000;

/// The largest decode delay a slate takes over (a crafted file must not
/// push a slate's decode times far behind its pictures).
const MAX_SLATE_DELAY_US: i64 = 500_000;

#[cfg(test)]
mod tests {
    use super::*;

    const F: i64 = 40_000; // one frame at 25 fps

    /// Plays `frames` video frames with two B-frames of delay (DTS two frames
    /// behind PTS) starting at source time `start`.
    fn play(tl: &mut Timeline, start: i64, frames: i64) -> Vec<(i64, i64)> {
        tl.begin(start, start - 2 * F);
        (0..frames)
            .map(|i| tl.place(Track::Video, start + i * F, start + (i - 2) * F, F))
            .collect()
    }

    #[test]
    fn seams_continue_the_timeline_without_gaps_or_going_back() {
        let mut tl = Timeline::new();
        let a = play(&mut tl, 0, 50); // 2 s item
        let b = play(&mut tl, 5_000_000, 25); // a cut starting at 5 s in another item
        let c = play(&mut tl, 0, 50); // loop back to the first item
        let all: Vec<_> = a.iter().chain(&b).chain(&c).collect();
        assert_eq!(
            all[0],
            &(2 * F, 0),
            "first output DTS is zero, PTS carries the B-frame delay"
        );
        for w in all.windows(2) {
            assert!(w[1].1 > w[0].1, "DTS must grow: {:?} then {:?}", w[0], w[1]);
            assert_eq!(
                w[1].0 - w[0].0,
                F,
                "PTS advances by exactly one frame, seams included"
            );
        }
        assert_eq!(tl.reached(), 2 * F + (50 + 25 + 50) * F);
    }

    #[test]
    fn audio_tail_shorter_than_a_frame_does_not_drift() {
        let mut tl = Timeline::new();
        for _ in 0..10 {
            tl.begin(0, 0);
            tl.place(Track::Video, 0, 0, 2_000_000);
            // Audio ends 21 ms after the video, as AAC padding does.
            tl.place(Track::Audio, 1_998_000, 1_998_000, 23_000);
        }
        assert_eq!(
            tl.reached(),
            10 * 2_000_000,
            "ten 2 s items last exactly 20 s"
        );
    }

    #[test]
    fn audio_never_goes_back_at_a_seam() {
        let mut tl = Timeline::new();
        tl.begin(0, 0);
        tl.place(Track::Video, 0, 0, 1_000_000);
        let (_, a1) = tl.place(Track::Audio, 990_000, 990_000, 23_000);
        tl.begin(0, 0);
        let (_, a2) = tl.place(Track::Audio, 0, 0, 23_000);
        assert!(a2 > a1);
    }

    #[test]
    fn a_resumed_timeline_goes_on_from_its_base() {
        let mut tl = Timeline::starting_at(90_000_000);
        assert_eq!(tl.reached(), 90_000_000, "nothing placed yet: the base");
        // Resumed 30 s into an item with B-frames: first DTS two frames before the keyframe.
        tl.begin(30_000_000, 30_000_000 - 2 * F);
        let (pts, dts) = tl.place(Track::Video, 30_000_000, 30_000_000 - 2 * F, F);
        assert_eq!((pts, dts), (90_000_000 + 2 * F, 90_000_000));
        assert_eq!(
            tl.source_time(90_000_000 + 2 * F + 5 * F),
            30_000_000 + 5 * F
        );
    }

    #[test]
    fn a_slate_is_a_segment_whose_decode_times_continue_the_items() {
        let mut tl = Timeline::new();
        let a = play(&mut tl, 0, 50);
        let end_a = tl.reached();
        let delay = tl.video_delay(F);
        assert_eq!(delay, 2 * F, "the item's B-frame delay");
        tl.begin_slate();
        assert_eq!(
            tl.offset(),
            end_a,
            "the slate starts where the item reached"
        );
        let slate: Vec<_> = (0..25)
            .map(|i| tl.place(Track::Video, i * F, i * F - delay, F))
            .collect();
        assert_eq!(
            slate[0].0, end_a,
            "its first picture follows the item's last"
        );
        // The item goes on at a keyframe whose DTS is two frames before its PTS.
        let b = play(&mut tl, 10_000_000, 25);
        assert_eq!(b[0].0, end_a + 25 * F, "right after the slate");
        let all: Vec<_> = a.iter().chain(&slate).chain(&b).collect();
        for w in all.windows(2) {
            assert_eq!(
                w[1].1 - w[0].1,
                F,
                "DTS steps one frame: {:?} then {:?}",
                w[0],
                w[1]
            );
        }
        // A slate drawn by an encoder only extends its segment.
        tl.begin_slate();
        let before = tl.reached();
        tl.extend(Track::Video, 2_000_000);
        assert_eq!(tl.reached(), before + 2_000_000);
        tl.begin(5_000_000, 5_000_000);
        assert_eq!(tl.offset(), before + 2_000_000);
        assert_eq!(tl.source_reach(Track::Video), None);
    }

    #[test]
    fn audio_only_segments_use_the_audio_end() {
        let mut tl = Timeline::new();
        tl.begin(0, 0);
        tl.place(Track::Audio, 0, 0, 500_000);
        tl.begin(0, 0);
        assert_eq!(tl.segment_offset(), 500_000);
    }
}
