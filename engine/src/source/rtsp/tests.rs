use super::flv::creation_metadata;
use super::*;
use vodfleet_proto::command::{Range, SourceSpec};

fn spec(items: &[(&str, Cut)]) -> TaskSpec {
    TaskSpec {
        id: "t".into(),
        sources: items
            .iter()
            .map(|(u, c)| SourceSpec {
                url: (*u).into(),
                cut: c.clone(),
                watermark: None,
            })
            .collect(),
        forwards: vec![],
        loop_count: 1,
        first_item: 0,
        callback_file_info: false,
        wait_current: false,
        start_ms: None,
        end_ms: None,
        transcode: None,
    }
}

fn r(a: u64, b: u64) -> Range {
    Range {
        start_ms: a,
        end_ms: b,
    }
}

#[test]
fn a_url_is_pulled_as_far_as_its_items_need() {
    let (a, b, c, d) = ("rtsp://h/a", "rtsp://h/b", "rtsp://h/c", "rtsp://h/d");
    let l = Limits::new(&spec(&[
        (a, Cut::Relative(vec![r(2_000, 6_000), r(1_000, 3_000)])),
        (a, Cut::Relative(vec![r(0, 8_000)])),
        (b, Cut::Relative(vec![r(0, 1_000)])),
        (b, Cut::Whole),
        (c, Cut::Absolute(vec![r(100_000, 105_000)])),
        (d, Cut::Relative(vec![r(3_000, 4_000), r(2_000, 6_000)])),
    ]));
    assert_eq!(l.until(a, 0), Some(8_000));
    assert_eq!(l.until(b, 0), None, "a whole item pulls to the end");
    assert_eq!(l.until(c, 99_000), Some(6_000));
    assert_eq!(l.until(c, 200_000), Some(0), "a window already past");
    assert_eq!(l.until("rtsp://h/other", 0), None);
    // Where an item's open waits for media: the earliest first range start.
    assert_eq!(l.from(a, 0), 0, "the second item starts at 0");
    assert_eq!(l.from(d, 0), 2_000);
    assert_eq!(l.from(b, 0), 0, "a whole item starts at 0");
    assert_eq!(l.from(c, 99_000), 1_000);
    assert_eq!(l.from("rtsp://h/other", 0), 0);
}

#[test]
fn credentials_are_percent_decoded() {
    assert_eq!(percent_decode("p%40ss%3Aw%2"), "p@ss:w%2");
    assert_eq!(percent_decode("plain"), "plain");
}

#[test]
fn creation_date_parses_back_to_the_pull_start() {
    let body = creation_metadata(1_540_222_200_123, Some(30.0));
    let v = vodfleet_rtmp::amf0::decode_all(&body).unwrap();
    let vodfleet_rtmp::amf0::Value::EcmaArray(f) = &v[1] else {
        panic!("{v:?}")
    };
    let vodfleet_rtmp::amf0::Value::String(d) = &f[0].1 else {
        panic!("{f:?}")
    };
    assert_eq!(
        vodfleet_proto::civil::recording_start_ms(d),
        Some(1_540_222_200_123)
    );
}
