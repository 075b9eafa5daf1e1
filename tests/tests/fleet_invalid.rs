//! Issue 3 (f): malformed, oversized and invalid commands get the right
//! refusals (400 naming the field), land in `vodfleet.commands.dead` with an
//! `x-vodfleet-reason`, and change nothing in Redis. The poison-message path is
//! RabbitMQ's own (delivery limit + dead-letter arguments on the queue), so the
//! queue's declared arguments are checked as the broker reports them.

use serde_json::json;
use std::time::Duration;
use vodfleet_proto::fleet::{keys, COMMANDS_DEAD_QUEUE, COMMANDS_QUEUE, COMMAND_DELIVERY_LIMIT};
use vodfleet_tests::fleet::{body_of, long_counter, now_ms, seed, FleetOptions};
use vodfleet_tests::{poll, Fleet};

#[test]
fn refused_commands_are_answered_dead_lettered_and_change_nothing() {
    let fleet = Fleet::start(FleetOptions::default());
    let mut producer = fleet.producer();
    let media = long_counter();
    let task = fleet.new_task(&[&media], 1);

    // A task scheduled an hour ahead gives Redis state that must stay as it is.
    let start = now_ms() + 3_600_000;
    let scheduled = seed::with_window(task.start(0), start, start + 600_000);
    let r = producer.request(&scheduled);
    assert_eq!(r["http_code"], "200", "the scheduled start: {r}");
    assert!(
        poll(Duration::from_secs(5), || fleet
            .redis
            .exists(&keys::task(&task.id))
            .then_some(()))
        .is_some(),
        "the scheduled task was not recorded"
    );
    std::thread::sleep(Duration::from_millis(500));
    let before = fleet.redis.dump_all();

    let mut oversized = task.start(0);
    oversized["list"][0]["src"][0]["url"] = json!(format!("vod://{}", "a".repeat(70_000)));
    let mut unknown = task.start(0);
    unknown["list"][0]["bogusField"] = json!(1);
    let mut http_forward = task.start(0);
    http_forward["list"][0]["forward"][0]["url"] = json!("http://127.0.0.1/live/x");
    let mut resume_fops = task.resume();
    resume_fops["list"][0]["fops"] = json!({"vcodec": "libx264", "res": "640x360"});
    let too_short = seed::with_window(task.start(0), now_ms() + 60_000, now_ms() + 120_000);
    let mut bad_update = task.update(&[&media], false);
    bad_update["list"][0]["src"][0]["url"] = json!("ftp://127.0.0.1/a.mp4");

    // (what, body, text the reply's msg and the dead letter's reason must contain)
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "malformed JSON",
            b"{\"cmd\": \"1\", \"type\": ".to_vec(),
            "JSON",
        ),
        ("not UTF-8", vec![0xff, 0xfe, b'{', 0x80], "JSON"),
        ("oversized (> 64 KiB)", body_of(&oversized), "65536"),
        ("unknown field", body_of(&unknown), "list[0].bogusField"),
        (
            "http:// forward",
            body_of(&http_forward),
            "list[0].forward[0].url",
        ),
        ("resume with fops", body_of(&resume_fops), "list[0].fops"),
        (
            "end within the minimum window",
            body_of(&too_short),
            "list[0].end",
        ),
        (
            "cmd 3 with an ftp:// source",
            body_of(&bad_update),
            "list[0].src[0].url",
        ),
    ];
    assert!(cases[2].1.len() > 64 * 1024);
    for (what, body, needle) in &cases {
        let r = producer.request_raw(body);
        assert_eq!(r["http_code"], "400", "{what}: {r}");
        let msg = r["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "{what}: the refusal must name {needle:?}; got {msg:?}"
        );
        assert!(
            r["call_time"].is_u64(),
            "{what}: the seed's response shape: {r}"
        );
    }

    let dead = producer.wait_dead_letters(cases.len(), Duration::from_secs(15));
    assert_eq!(
        dead.len(),
        cases.len(),
        "one dead letter per refused command; got reasons {:?}",
        dead.iter().map(|d| &d.reason).collect::<Vec<_>>()
    );
    for (what, body, needle) in &cases {
        let d = dead.iter().find(|d| &d.body == body).unwrap_or_else(|| {
            panic!("{what}: not in {COMMANDS_DEAD_QUEUE} with its original body")
        });
        let reason = d.reason.as_deref().unwrap_or_default();
        assert!(
            reason.contains(needle),
            "{what}: x-vodfleet-reason must say why ({needle:?}); got {reason:?}"
        );
    }

    std::thread::sleep(Duration::from_secs(1));
    let after = fleet.redis.dump_all();
    if before != after {
        let mut diff = String::new();
        for k in before.keys().chain(after.keys()) {
            if before.get(k) != after.get(k) {
                diff.push_str(&format!(
                    "{k}:\n  before {:?}\n  after  {:?}\n",
                    before.get(k),
                    after.get(k)
                ));
            }
        }
        panic!("refused commands changed Redis:\n{diff}");
    }

    // The poison-message path: RabbitMQ dead-letters after the delivery limit.
    let args = fleet.queue_arguments();
    let q = &args[COMMANDS_QUEUE];
    assert_eq!(q["x-queue-type"], "quorum", "{args:?}");
    assert_eq!(q["x-delivery-limit"], COMMAND_DELIVERY_LIMIT, "{args:?}");
    assert_eq!(q["x-dead-letter-exchange"], "", "{args:?}");
    assert_eq!(
        q["x-dead-letter-routing-key"], COMMANDS_DEAD_QUEUE,
        "{args:?}"
    );
    assert_eq!(
        args[COMMANDS_DEAD_QUEUE]["x-queue-type"], "quorum",
        "{args:?}"
    );
}
