//! Destination URLs: `Target::parse` on any text. Must never panic; an accepted
//! URL prints (Display, Debug) only its redacted form, which holds nothing of
//! the path or query (the stream key).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vodfleet_rtmp::Target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Target::parse(text) {
        Ok(t) => {
            let redacted = t.redacted();
            // Display and Debug print the redacted form and nothing else of the path.
            assert_eq!(t.to_string(), redacted);
            assert_eq!(format!("{t:?}"), format!("Target({redacted:?})"));
            // Nothing of the path or query: `scheme://authority/…` with an
            // authority that has neither (an IPv6 host's brackets are fine).
            let rest = redacted
                .split_once("://")
                .map(|(_, r)| r)
                .unwrap_or_default();
            let authority = rest.strip_suffix("/…").expect("ends with /…");
            assert!(
                !authority.contains(['/', '?']),
                "the redacted target shows part of the path: {redacted}"
            );
            assert!(!t.stream_name().is_empty());
            assert!(!t.tc_url().contains('?'), "tcUrl carries no query");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
