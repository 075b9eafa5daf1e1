//! HLS playlists (`engine/src/source/hls.rs`, compiled here by path so the
//! fuzz build does not link libav): any bytes parse into a plan or a reason,
//! never a panic; every URL a plan names is an absolute `http(s)` URL, and a
//! master reached through a master is always refused.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../engine/src/source/hls.rs"]
#[allow(dead_code)]
mod hls;

const BASE: &str = "https://cdn.example/show/index.m3u8?token=x";

fn absolute(u: &str) -> bool {
    u.starts_with("http://") || u.starts_with("https://")
}

fuzz_target!(|data: &[u8]| {
    for (nested, cap) in [(false, None), (true, Some(1_000_000))] {
        match hls::parse(BASE, data, nested, cap) {
            Ok(hls::Parsed::Variant(u)) => {
                assert!(!nested, "a nested master was followed");
                assert!(absolute(&u), "variant {u:?}");
            }
            Ok(hls::Parsed::Media(plan)) => {
                assert!(!plan.urls.is_empty());
                for u in &plan.urls {
                    assert!(absolute(u), "segment {u:?}");
                }
            }
            Err(why) => assert!(!why.is_empty()),
        }
    }
});
