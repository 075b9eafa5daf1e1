//! The copy-mode cut gate: which demuxed packets of one range of one item go
//! on air, without decoding anything.
//!
//! Copy mode cannot cut between keyframes, so a range `[start, end)` plays
//! from the first video keyframe at or after the seek point, and its picture
//! runs on to just before the first keyframe at or after `end`: every frame
//! kept decodes, and none is missing in presentation order. Audio follows the
//! picture: audio before the first keyframe is held and only what starts at or
//! after that keyframe is kept; audio past `end` is held until the video's stop
//! is known, then kept where it lies before it. Audio-only items cut at `end`.
//! Why cuts land on keyframes: docs/design/timeline.md.
//!
//! Pure and generic over the payload, so it is table-tested without libav.

use crate::timeline::Track;

/// One demuxed packet, times in source microseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet<T> {
    pub track: Track,
    pub key: bool,
    pub pts: i64,
    pub dts: i64,
    pub dur: i64,
    pub data: T,
}

/// What one packet did to the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Step {
    /// The range began with this packet: the timeline starts at `(source
    /// start, first DTS)` before anything in `out` is placed on it.
    pub begin: Option<(i64, i64)>,
    /// Nothing more of this range will be kept: stop reading.
    pub done: bool,
}

/// Packets held while waiting for a keyframe (bounded: a broken file cannot grow it).
pub const HOLD_LIMIT: usize = 1024;

/// The gate of one range. Feed it every packet of the range's tracks in file
/// order with [`Gate::push`], then [`Gate::finish`] if the file ends first.
#[derive(Debug)]
pub struct Gate<T> {
    start: i64,
    end: i64,
    has_video: bool,
    begun: bool,
    /// Audio before the first keyframe would play before its picture exists.
    floor: i64,
    /// Where the video stopped (source PTS of the keyframe at or after `end`).
    video_stop: i64,
    video_done: bool,
    audio_done: bool,
    /// Audio read before the first keyframe.
    pending: Vec<Packet<T>>,
    /// Audio past `end`, while the video runs on to its next keyframe.
    tail: Vec<Packet<T>>,
}

impl<T> Gate<T> {
    /// A range `[start, end)` (source µs) of an item with these tracks.
    pub fn new(start: i64, end: i64, has_video: bool, has_audio: bool) -> Gate<T> {
        Gate {
            start,
            end,
            has_video,
            begun: false,
            floor: i64::MIN,
            video_stop: i64::MAX,
            video_done: !has_video,
            audio_done: !has_audio,
            pending: Vec::new(),
            tail: Vec::new(),
        }
    }

    /// Takes one packet; what goes on air now is appended to `out`, in order.
    pub fn push(&mut self, p: Packet<T>, out: &mut Vec<Packet<T>>) -> Step {
        let mut step = Step::default();
        match p.track {
            Track::Video => self.video(p, out, &mut step),
            Track::Audio => self.audio(p, out, &mut step),
        }
        step.done = self.video_done && self.audio_done;
        step
    }

    /// The file ended before a keyframe past the cut: the held audio belongs to the picture.
    pub fn finish(&mut self, out: &mut Vec<Packet<T>>) {
        out.append(&mut self.tail);
    }

    fn video(&mut self, p: Packet<T>, out: &mut Vec<Packet<T>>, step: &mut Step) {
        if !self.begun {
            if !p.key {
                return;
            }
            // The range starts at its first keyframe; audio from before it is dropped.
            step.begin = Some((p.pts, p.dts.min(p.pts)));
            self.begun = true;
            self.floor = p.pts;
            let (from, end) = (p.pts, self.end);
            out.extend(
                std::mem::take(&mut self.pending)
                    .into_iter()
                    .filter(|a| a.pts >= from && a.pts < end),
            );
        }
        if self.video_done {
            return;
        }
        if p.pts >= self.end && p.key {
            self.video_done = true;
            self.video_stop = p.pts;
            for a in std::mem::take(&mut self.tail) {
                if a.pts < self.video_stop {
                    out.push(a);
                } else {
                    self.audio_done = true;
                }
            }
        } else {
            out.push(p);
        }
    }

    fn audio(&mut self, p: Packet<T>, out: &mut Vec<Packet<T>>, step: &mut Step) {
        if !self.begun {
            if self.has_video {
                hold(&mut self.pending, p);
                return;
            }
            step.begin = Some((p.pts.max(self.start), p.dts.min(p.pts)));
            self.begun = true;
        }
        if self.audio_done || p.pts < self.floor {
            return;
        }
        let stop = if self.has_video {
            self.video_stop
        } else {
            self.end
        };
        if p.pts >= stop {
            self.audio_done = true;
        } else if p.pts >= self.end && !self.video_done {
            hold(&mut self.tail, p);
        } else {
            out.push(p);
        }
    }
}

fn hold<T>(q: &mut Vec<Packet<T>>, p: Packet<T>) {
    if q.len() >= HOLD_LIMIT {
        q.remove(0);
    }
    q.push(p);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file as a table: video at 25 fps with a keyframe every `gop` frames,
    /// AAC frames every 23 ms, interleaved by DTS. Payloads name the packet
    /// (`v3` = video frame 3, `a7` = audio frame 7).
    fn file(secs: i64, gop: i64, b_frames: bool) -> Vec<Packet<String>> {
        let mut v: Vec<Packet<String>> = (0..secs * 25)
            .map(|i| {
                let pts = i * 40_000;
                // With B-frames, decode time runs 80 ms ahead of presentation.
                let dts = if b_frames { pts - 80_000 } else { pts };
                Packet {
                    track: Track::Video,
                    key: i % gop == 0,
                    pts,
                    dts,
                    dur: 40_000,
                    data: format!("v{i}"),
                }
            })
            .collect();
        let a = (0..secs * 1_000_000 / 23_000).map(|i| Packet {
            track: Track::Audio,
            key: true,
            pts: i * 23_000,
            dts: i * 23_000,
            dur: 23_000,
            data: format!("a{i}"),
        });
        v.extend(a);
        v.sort_by_key(|p| (p.dts, p.track == Track::Video));
        v
    }

    /// Runs a range over the packets from `seek_to` (the demuxer's seek lands
    /// on the keyframe at or before it). Returns what went on air, where the
    /// timeline began, and whether the gate said "done" before the file ended.
    fn run(
        pkts: &[Packet<String>],
        seek_to: i64,
        start: i64,
        end: i64,
        video: bool,
    ) -> (Vec<String>, Option<(i64, i64)>, bool) {
        let mut g = Gate::new(start, end, video, true);
        let mut out = Vec::new();
        let mut begin = None;
        let mut done = false;
        for p in pkts
            .iter()
            .filter(|p| p.dts >= seek_to && (video || p.track == Track::Audio))
        {
            let s = g.push(p.clone(), &mut out);
            begin = begin.or(s.begin);
            if s.done {
                done = true;
                break;
            }
        }
        if !done {
            g.finish(&mut out);
        }
        (out.into_iter().map(|p| p.data).collect(), begin, done)
    }

    fn first_last(names: &[String], prefix: char) -> (String, String) {
        let of: Vec<&String> = names.iter().filter(|n| n.starts_with(prefix)).collect();
        (of[0].clone(), of[of.len() - 1].clone())
    }

    #[test]
    fn ranges_snap_to_keyframes_on_tables_of_layouts() {
        // (gop in frames, B-frames, seek to, range start, range end) →
        // (first and last video frame, first and last audio frame, begin pts)
        type Row<'a> = (
            i64,
            bool,
            i64,
            i64,
            i64,
            (&'a str, &'a str),
            (&'a str, &'a str),
            i64,
        );
        let table: &[Row] = &[
            // Whole range on keyframes: 2 s .. 4 s with a 1 s GOP plays frames 50..99.
            (
                25,
                false,
                2_000_000,
                2_000_000,
                4_000_000,
                ("v50", "v99"),
                ("a87", "a173"),
                2_000_000,
            ),
            // A cut inside a GOP runs on to the next keyframe (4 s → frame 100 is the stop).
            (
                25,
                false,
                2_000_000,
                2_000_000,
                3_500_000,
                ("v50", "v99"),
                ("a87", "a173"),
                2_000_000,
            ),
            // A start inside a GOP: the seek landed on the keyframe before (2 s).
            (
                50,
                false,
                2_000_000,
                2_600_000,
                4_000_000,
                ("v50", "v99"),
                ("a87", "a173"),
                2_000_000,
            ),
            // A 2 s GOP and an end at 5 s: the picture stops before 6 s.
            (
                50,
                false,
                2_000_000,
                2_000_000,
                5_000_000,
                ("v50", "v149"),
                ("a87", "a260"),
                2_000_000,
            ),
            // B-frames: decode order runs ahead; the stop is still the keyframe's PTS.
            (
                25,
                true,
                1_920_000,
                2_000_000,
                4_000_000,
                ("v50", "v99"),
                ("a87", "a173"),
                2_000_000,
            ),
        ];
        for &(gop, b, seek, start, end, v, a, begin_pts) in table {
            let f = file(10, gop, b);
            let (out, begin, done) = run(&f, seek, start, end, true);
            let row = format!("gop {gop} b {b} range {start}..{end}");
            assert!(done, "{row}: the gate ends the range before the file does");
            assert_eq!(
                first_last(&out, 'v'),
                (v.0.into(), v.1.into()),
                "{row}: video"
            );
            assert_eq!(
                first_last(&out, 'a'),
                (a.0.into(), a.1.into()),
                "{row}: audio"
            );
            assert_eq!(begin.map(|b| b.0), Some(begin_pts), "{row}: timeline start");
            // Audio never starts before the picture, nor runs past where it stops.
            for n in out.iter().filter(|n| n.starts_with('a')) {
                let i: i64 = n[1..].parse().unwrap();
                assert!(
                    i * 23_000 >= begin_pts,
                    "{row}: {n} before the first picture"
                );
            }
        }
    }

    #[test]
    fn a_range_past_the_last_keyframe_plays_to_the_end_with_its_held_audio() {
        let f = file(4, 50, false);
        let (out, _, done) = run(&f, 2_000_000, 2_000_000, 60_000_000, true);
        assert!(!done, "the file ends first");
        assert_eq!(first_last(&out, 'v'), ("v50".into(), "v99".into()));
        assert_eq!(
            first_last(&out, 'a').1,
            "a172",
            "audio to the end of the file"
        );
    }

    #[test]
    fn audio_after_the_cut_is_kept_up_to_the_picture_stop() {
        // End at 2.5 s with keyframes every 2 s: the picture runs to 4 s (frame 99),
        // so audio between 2.5 s and 4 s is held, then released.
        let f = file(10, 50, false);
        let (out, _, _) = run(&f, 0, 0, 2_500_000, true);
        assert_eq!(first_last(&out, 'v'), ("v0".into(), "v99".into()));
        assert_eq!(first_last(&out, 'a'), ("a0".into(), "a173".into()));
    }

    #[test]
    fn audio_only_items_cut_exactly() {
        let f = file(10, 25, false);
        let (out, begin, done) = run(&f, 1_000_000, 1_000_000, 2_000_000, false);
        assert!(done);
        assert_eq!(first_last(&out, 'a'), ("a44".into(), "a86".into()));
        assert_eq!(begin, Some((1_012_000, 1_012_000)));
    }

    #[test]
    fn no_keyframe_means_nothing_on_air_and_a_bounded_hold() {
        let mut g: Gate<u32> = Gate::new(0, 10_000_000, true, true);
        let mut out = Vec::new();
        for i in 0..5_000i64 {
            let track = if i % 2 == 0 {
                Track::Video
            } else {
                Track::Audio
            };
            let p = Packet {
                track,
                key: false,
                pts: i * 1000,
                dts: i * 1000,
                dur: 1000,
                data: 0,
            };
            assert_eq!(g.push(p, &mut out), Step::default());
        }
        assert!(out.is_empty());
        assert!(g.pending.len() <= HOLD_LIMIT);
    }
}
