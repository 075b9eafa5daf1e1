//! Our own RTMP publisher (`vodfleet-rtmp`) against real servers: nginx-rtmp,
//! FFmpeg's RTMP server mode, and nginx-rtmp behind stunnel (rtmps://). The
//! source is an ffmpeg-made H.264+AAC FLV whose tags are read here, rebuilt with
//! `vodfleet_rtmp::flv` and published; ffprobe judges what arrived.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use vodfleet_rtmp::flv::{self, AudioCodec, Metadata, VideoCodec};
use vodfleet_rtmp::{
    ErrorKind, PublishOptions, Publisher, RtmpError, Tag, TagKind, Target, TlsRoots,
};
use vodfleet_tests::flv::{
    adts_header, avcc_to_annexb, length_prefixed_to_annexb, read_tags, FlvTag,
};
use vodfleet_tests::peers::{FfmpegListener, Stunnel, TestCa};
use vodfleet_tests::{probe, unique, Media, Pattern, Recording, RtmpServer};

const SECS: f64 = 3.0;
const FPS: u32 = 25;

fn source() -> (Media, Vec<FlvTag>) {
    let m = Media::flv(SECS, "320x240", FPS, FPS, Pattern::TestSrc2);
    let tags = read_tags(&m.path);
    (m, tags)
}

/// How the rebuilt tags hand the codec data to `vodfleet_rtmp::flv`.
#[derive(Clone, Copy, Debug)]
struct Form {
    /// H.264 as Annex-B (start codes) instead of length-prefixed/avcC.
    annexb: bool,
    /// AAC frames with an ADTS header in front.
    adts: bool,
}

/// Metadata first, then every audio/video tag of the source rebuilt through
/// `vodfleet_rtmp::flv`. Frame bodies must come out as they were in the file.
fn rebuild(src: &[FlvTag], form: Form) -> Vec<Tag> {
    let meta = flv::metadata(&Metadata {
        width: Some(320),
        height: Some(240),
        framerate: Some(f64::from(FPS)),
        video_codec: Some(VideoCodec::H264),
        audio_codec: Some(AudioCodec::Aac),
        audio_sample_rate: Some(44_100),
        stereo: Some(true),
        ..Metadata::default()
    });
    let mut out = vec![Tag {
        kind: TagKind::Data,
        timestamp_ms: 0,
        payload: meta,
    }];
    let mut asc = Vec::new();
    for t in src {
        let (kind, payload) = match (t.kind, t.body.get(1)) {
            (9, Some(0)) => {
                let avcc = &t.body[5..];
                let input = if form.annexb {
                    avcc_to_annexb(avcc)
                } else {
                    avcc.to_vec()
                };
                (
                    TagKind::Video,
                    flv::avc_sequence_header(&input).expect("sequence header"),
                )
            }
            (9, Some(1)) => {
                let nals = &t.body[5..];
                let input = if form.annexb {
                    length_prefixed_to_annexb(nals)
                } else {
                    nals.to_vec()
                };
                let body = flv::avc_frame(&input, t.is_key(), t.cts_ms());
                assert_eq!(
                    &body[..],
                    &t.body[..],
                    "rebuilt video frame at {} ms",
                    t.timestamp_ms
                );
                (TagKind::Video, body)
            }
            (9, Some(2)) => (TagKind::Video, flv::avc_end_of_sequence()),
            (8, Some(0)) => {
                asc = t.body[2..].to_vec();
                (TagKind::Audio, flv::aac_sequence_header(&asc))
            }
            (8, Some(1)) => {
                let raw = &t.body[2..];
                let mut input = Vec::new();
                if form.adts {
                    input.extend_from_slice(&adts_header(&asc, raw.len()));
                }
                input.extend_from_slice(raw);
                let body = flv::aac_frame(&input);
                assert_eq!(
                    &body[..],
                    &t.body[..],
                    "rebuilt audio frame at {} ms",
                    t.timestamp_ms
                );
                (TagKind::Audio, body)
            }
            _ => continue, // the file's own onMetaData: ours went first
        };
        out.push(Tag {
            kind,
            timestamp_ms: t.timestamp_ms,
            payload,
        });
    }
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn opts() -> PublishOptions {
    PublishOptions {
        timeout: Duration::from_secs(10),
        ..PublishOptions::default()
    }
}

/// Queues the tags four at a time (one flush per "wake-up"), then closes.
async fn send_all(mut p: Publisher, tags: &[Tag]) -> Result<(), RtmpError> {
    for batch in tags.chunks(4) {
        for t in batch {
            p.queue(t);
        }
        p.flush().await?;
        assert_eq!(p.queued_bytes(), 0);
    }
    p.close(Duration::from_secs(5)).await;
    Ok(())
}

async fn connect(url: &str, opts: &PublishOptions) -> Result<Publisher, RtmpError> {
    Publisher::connect(&Target::parse(url)?, opts).await
}

/// What ffprobe must find in `path`: the codecs, the size, every video frame
/// sent, about the audio frames sent, and the source's duration.
fn judge(path: &Path, src: &Media, src_tags: &[FlvTag]) {
    let v = probe::video_info(path);
    assert_eq!(
        (v.codec.as_str(), v.width, v.height),
        ("h264", 320, 240),
        "{}",
        path.display()
    );
    let a = probe::audio_info(path);
    assert_eq!(
        (a.codec.as_str(), a.sample_rate, a.channels),
        ("aac", 44_100, 2)
    );
    let rec = Recording::read(path);
    let frames = src_tags.iter().filter(|t| t.is_avc_frame()).count();
    let audio = src_tags
        .iter()
        .filter(|t| t.kind == 8 && t.body.get(1) == Some(&1))
        .count();
    assert_eq!(
        rec.video.len(),
        frames,
        "video frames arrived ({})",
        rec.summary()
    );
    assert!(
        rec.audio.len().abs_diff(audio) <= 1,
        "audio frames: {} of {audio} ({})",
        rec.audio.len(),
        rec.summary()
    );
    let want = src.video_secs();
    assert!(
        (rec.video_secs() - want).abs() < 0.1,
        "video lasts {:.3} s, source {want:.3} s",
        rec.video_secs()
    );
    rec.assert_monotonic();
    rec.assert_decodes_cleanly();
}

#[test]
fn nginx_rtmp_records_what_we_publish() {
    let (media, src) = source();
    let tags = rebuild(
        &src,
        Form {
            annexb: false,
            adts: false,
        },
    );
    let server = RtmpServer::start();
    let key = unique("ours");
    runtime()
        .block_on(async {
            let p = connect(&server.url(&key), &opts()).await?;
            send_all(p, &tags).await
        })
        .unwrap_or_else(|e| panic!("publish: {e}\n{}", server.logs()));
    server.assert_one_session(&key);
    judge(&server.record_path(&key), &media, &src);
}

#[test]
fn ffmpeg_rtmp_server_receives_annexb_and_adts_input() {
    let (media, src) = source();
    let tags = rebuild(
        &src,
        Form {
            annexb: true,
            adts: true,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let key = unique("ours");
    let mut ffmpeg = FfmpegListener::start("app", &key, &dir.path().join("out.flv"));
    let url = format!("rtmp://127.0.0.1:{}/app/{key}", ffmpeg.port());
    runtime()
        .block_on(async {
            // ffmpeg serves the first connection only, so its port is not probed:
            // connects are retried while nothing listens yet.
            let deadline = Instant::now() + Duration::from_secs(10);
            let p = loop {
                match connect(&url, &opts()).await {
                    Err(e) if e.kind() == ErrorKind::Unreachable && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    other => break other?,
                }
            };
            send_all(p, &tags).await
        })
        .unwrap_or_else(|e| panic!("publish to ffmpeg: {e}\n{}", ffmpeg.log()));
    let status = ffmpeg.wait(Duration::from_secs(20));
    assert!(status.success(), "ffmpeg: {status}\n{}", ffmpeg.log());
    judge(ffmpeg.out(), &media, &src);
}

#[test]
fn rtmps_through_stunnel_needs_the_extra_ca() {
    let (media, src) = source();
    let tags = rebuild(
        &src,
        Form {
            annexb: false,
            adts: true,
        },
    );
    let ca = TestCa::new();
    let server = RtmpServer::start();
    let tunnel = Stunnel::start(&ca, server.rtmp_port());
    let key = unique("ours");
    let url = format!("rtmps://127.0.0.1:{}/live/{key}", tunnel.port());
    let rt = runtime();

    // Public roots only: the test CA is unknown, the handshake fails.
    let e = rt
        .block_on(connect(&url, &opts()))
        .expect_err("untrusted certificate");
    eprintln!("without the extra CA: {e}");
    assert!(matches!(e, RtmpError::Tls { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Unreachable);
    assert!(e.to_string().contains("certificate"), "{e}");
    assert!(!e.to_string().contains(&key), "{e}");

    // A CA file that does not exist is a configuration error naming it.
    let missing = ca.ca_pem().with_file_name("nope.pem");
    let e = TlsRoots::new(Some(&missing)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("nope.pem"), "{e}");

    let roots = std::sync::Arc::new(TlsRoots::new(Some(&ca.ca_pem())).expect("test CA"));
    let with_ca = PublishOptions {
        tls: Some(roots),
        ..opts()
    };
    rt.block_on(async {
        let p = connect(&url, &with_ca).await?;
        send_all(p, &tags).await
    })
    .unwrap_or_else(|e| panic!("publish over TLS: {e}\n{}", server.logs()));
    server.assert_one_session(&key);
    judge(&server.record_path(&key), &media, &src);
}

#[test]
fn refusals_are_reported_after_one_attempt() {
    let (_, src) = source();
    let tags = rebuild(
        &src,
        Form {
            annexb: false,
            adts: false,
        },
    );
    let server = RtmpServer::start();
    let rt = runtime();

    // (a) on_publish answers 403: nginx-rtmp hangs up.
    let key = unique("refused");
    let started = Instant::now();
    let e = rt
        .block_on(connect(&server.app_url("refuse", &key), &opts()))
        .expect_err("on_publish refuses");
    eprintln!("on_publish 403: {e}");
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert!(!e.kind().is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not timed out"
    );
    assert!(!e.to_string().contains(&key), "{e}");

    // (b) a second publisher of a live stream: NetStream.Publish.BadName.
    let key = unique("taken");
    let url = server.url(&key);
    let second = rt.block_on(async {
        let mut first = connect(&url, &opts()).await.expect("first publisher");
        for t in &tags[..8] {
            first.queue(t);
        }
        first.flush().await.expect("first flush");
        let second = connect(&url, &opts()).await;
        first.flush().await.expect("the first publisher goes on");
        first.close(Duration::from_secs(5)).await;
        second
    });
    let e = second.expect_err("second publisher of the same name");
    eprintln!("second publisher: {e}");
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("NetStream.Publish.BadName"), "{e}");
    assert!(!e.to_string().contains(&key), "{e}");
}

#[test]
fn a_server_that_dies_mid_stream_is_closed_not_refused() {
    let (_, src) = source();
    let tags = rebuild(
        &src,
        Form {
            annexb: false,
            adts: false,
        },
    );
    let server = RtmpServer::start();
    let key = unique("dies");
    let rt = runtime();
    let mut p = rt.block_on(async {
        let mut p = connect(&server.url(&key), &opts()).await.expect("connect");
        for t in &tags[..10] {
            p.queue(t);
        }
        p.flush().await.expect("flush before the kill");
        p
    });
    server.wait_publishing(&key, Duration::from_secs(5));
    drop(server); // SIGKILL
    let e = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut ts = tags.last().unwrap().timestamp_ms;
        loop {
            ts += 40;
            p.queue(&Tag {
                kind: TagKind::Video,
                timestamp_ms: ts,
                payload: Bytes::from(vec![0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41]),
            });
            if let Err(e) = p.flush().await {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "flush kept succeeding after the server died"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    eprintln!("server killed: {e}");
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    assert!(e.kind().is_retryable());
}

#[test]
fn nginx_takes_extended_timestamps_across_chunks() {
    // Timestamps from just under 0xFFFFFF (4.66 h into a stream) on: type 0
    // headers carry extended timestamps, repeated on type 3 continuation chunks
    // (4 KiB chunks split every video frame).
    let (media, src) = source();
    let mut tags = rebuild(
        &src,
        Form {
            annexb: false,
            adts: false,
        },
    );
    for t in &mut tags {
        t.timestamp_ms += 0xFF_FF00;
    }
    let server = RtmpServer::start();
    let key = unique("late");
    let small_chunks = PublishOptions {
        chunk_size: 4096,
        ..opts()
    };
    runtime()
        .block_on(async {
            let p = connect(&server.url(&key), &small_chunks).await?;
            send_all(p, &tags).await
        })
        .unwrap_or_else(|e| panic!("publish: {e}\n{}", server.logs()));
    server.assert_one_session(&key);
    judge(&server.record_path(&key), &media, &src);
}
