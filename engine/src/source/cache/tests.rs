//! The cache against a real (local, throttled) HTTP server: readers play
//! while it downloads, a far seek is fetched first with a `Range`, two
//! readers share one download, and eviction spares pinned entries.

use super::*;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves `body` on 127.0.0.1, honouring `Range: bytes=N-`, in 16 KiB
/// chunks `delay` apart. Records each request's range start.
struct Server {
    port: u16,
    ranges: Arc<Mutex<Vec<Option<u64>>>>,
    served: Arc<AtomicU64>,
}

fn serve(rt: &tokio::runtime::Runtime, body: Arc<Vec<u8>>, delay: Duration) -> Server {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let served = Arc::new(AtomicU64::new(0));
    let (r, sv) = (ranges.clone(), served.clone());
    rt.spawn(async move {
        loop {
            let Ok((mut c, _)) = listener.accept().await else {
                return;
            };
            let (body, r, sv) = (body.clone(), r.clone(), sv.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                let from = head
                    .lines()
                    .find_map(|l| l.strip_prefix("range: bytes="))
                    .and_then(|v| v.trim().trim_end_matches('-').parse::<u64>().ok());
                r.lock().unwrap().push(from);
                let len = body.len() as u64;
                let start = from.unwrap_or(0);
                let h = match from {
                    None => format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"),
                    Some(f) => format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {f}-{}/{len}\r\nConnection: close\r\n\r\n",
                        len - f,
                        len - 1
                    ),
                };
                if c.write_all(h.as_bytes()).await.is_err() {
                    return;
                }
                for chunk in body[start as usize..].chunks(16 * 1024) {
                    if c.write_all(chunk).await.is_err() {
                        return;
                    }
                    sv.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    tokio::time::sleep(delay).await;
                }
            });
        }
    });
    Server {
        port,
        ranges,
        served,
    }
}

fn setup(max_bytes: u64) -> (tokio::runtime::Runtime, Arc<Cache>, tempfile_dir::Dir) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile_dir::Dir::new();
    let path = dir.0.clone();
    let cfg = Config::from_lookup(|k| match k {
        "VODFLEET_CACHE_DIR" => Some(path.display().to_string()),
        "VODFLEET_ALLOW_PRIVATE_NETWORKS" => Some("true".into()),
        "VODFLEET_CACHE_MAX_BYTES" => Some(max_bytes.to_string()),
        "VODFLEET_RETRY_BACKOFF_MS" => Some("50".into()),
        _ => None,
    })
    .unwrap();
    let cache = Cache::new(&cfg, rt.handle().clone()).unwrap();
    (rt, cache, dir)
}

/// A scratch directory removed at the end of the test.
mod tempfile_dir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir()
                .join(format!("vodfleet-cache-test-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn body(len: usize) -> Arc<Vec<u8>> {
    Arc::new((0..len).map(|i| (i * 7 + i / 251) as u8).collect())
}

fn open(rt: &tokio::runtime::Runtime, cache: &Arc<Cache>, url: &str) -> Reader {
    let pin = cache.pin(url, url, "t").unwrap();
    let cancel = CancellationToken::new();
    rt.block_on(pin.started("t", &cancel)).unwrap();
    pin.reader("t", cancel)
}

fn read_exact(r: &mut Reader, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let k = r.read(&mut out[got..]).unwrap();
        assert!(k > 0, "early end at {}", r.position());
        got += k;
    }
    out
}

#[test]
fn plays_while_downloading_and_fetches_a_far_region_first() {
    let (rt, cache, _dir) = setup(1 << 30);
    // 8 MiB at 16 KiB per 10 ms: about 5 s for the whole file.
    let data = body(8 << 20);
    let srv = serve(&rt, data.clone(), Duration::from_millis(10));
    let url = format!("http://127.0.0.1:{}/a.mp4", srv.port);
    let t0 = Instant::now();
    let mut r = open(&rt, &cache, &url);
    assert_eq!(r.size(), Some(data.len() as u64));
    assert_eq!(read_exact(&mut r, 1000), data[..1000]);
    assert!(t0.elapsed() < Duration::from_secs(2), "first bytes at once");
    // The last 100 KB (an mp4's moov after its mdat): fetched by a Range request, not after the rest.
    let tail = data.len() - 100_000;
    r.seek(tail as u64);
    assert_eq!(read_exact(&mut r, 100_000), data[tail..]);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "the tail came first: {:?}",
        t0.elapsed()
    );
    assert_eq!(r.read(&mut [0u8; 10]).unwrap(), 0, "end of file");
    // Back to the start: playback reads everything, in order.
    r.seek(1000);
    assert_eq!(read_exact(&mut r, data.len() - 1000), data[1000..]);
    let ranges = srv.ranges.lock().unwrap().clone();
    assert_eq!(ranges[0], None, "the first request asks for the whole file");
    assert_eq!(ranges[1], Some(tail as u64), "then the tail: {ranges:?}");
    assert!(ranges.len() <= 4, "{ranges:?}");
    let served = srv.served.load(Ordering::Relaxed);
    assert!(
        served <= data.len() as u64 + (1 << 20),
        "{served} bytes served for {}",
        data.len()
    );
}

#[test]
fn two_readers_share_one_download() {
    let (rt, cache, _dir) = setup(1 << 30);
    let data = body(2 << 20);
    let srv = serve(&rt, data.clone(), Duration::from_millis(2));
    let url = format!("http://127.0.0.1:{}/a.mp4", srv.port);
    let mut a = open(&rt, &cache, &url);
    let mut b = open(&rt, &cache, &url);
    let tb = std::thread::spawn(move || read_exact(&mut b, 2 << 20));
    assert_eq!(read_exact(&mut a, 2 << 20), *data);
    assert_eq!(tb.join().unwrap(), *data);
    assert_eq!(srv.ranges.lock().unwrap().len(), 1, "one download");
    // A third, after the file is whole, is served from the cache.
    drop(a);
    let mut c = open(&rt, &cache, &url);
    assert_eq!(read_exact(&mut c, 2 << 20), *data);
    assert_eq!(srv.ranges.lock().unwrap().len(), 1);
}

#[test]
fn evicts_the_least_recently_used_unpinned_entry() {
    let (rt, cache, _dir) = setup(3 << 20);
    let data = body(1 << 20);
    let srv = serve(&rt, data.clone(), Duration::ZERO);
    let url = |n: u32| format!("http://127.0.0.1:{}/{n}.mp4", srv.port);
    let whole = |n: u32| {
        let mut r = open(&rt, &cache, &url(n));
        assert_eq!(read_exact(&mut r, 1 << 20), *data);
        r
    };
    // The driver counts a chunk just after readers may see it.
    let held_bytes = |want: u64| {
        let until = Instant::now() + Duration::from_secs(5);
        while cache.held_bytes() != want && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        cache.held_bytes()
    };
    let pinned = whole(0);
    drop(whole(1));
    drop(whole(2));
    assert_eq!(held_bytes(3 << 20), 3 << 20);
    // A fourth file: the least recently used unpinned one (1) goes, not the pinned 0.
    let r3 = whole(3);
    assert_eq!(held_bytes(3 << 20), 3 << 20);
    let held = |n: u32| cache.map().contains_key(&url(n));
    assert!(held(0) && !held(1) && held(2) && held(3));
    drop(pinned);
    drop(r3);
    // Everything pinned: the bound is exceeded rather than a reader losing its file.
    let readers: Vec<Reader> = (4..8).map(whole).collect();
    assert_eq!(held_bytes(4 << 20), 4 << 20);
    assert!((4..8).all(held));
    drop(readers);
    assert!(cache.held_bytes() <= 3 << 20);
}

#[test]
fn a_failed_download_fails_the_reader_with_the_source_error() {
    let (rt, cache, _dir) = setup(1 << 30);
    let url = "http://127.0.0.1:9/nothing.mp4"; // discard port: refused
    let pin = cache.pin(url, url, "t").unwrap();
    let e = rt
        .block_on(pin.started("t", &CancellationToken::new()))
        .unwrap_err();
    assert_eq!(e.fault(), Fault::Unreachable, "{e}");
    assert!(e.to_string().contains("attempt 3 of 3"), "{e}");
}

#[test]
fn libavformat_reads_a_stream_as_it_reads_the_file_and_frees_it() {
    crate::media::init();
    // The ffmpeg CLI's mp4 puts `moov` after `mdat`; lossless, so that the
    // `moov` lies far beyond what the download brings soon.
    let dir = tempfile_dir::Dir::new();
    let path = dir.0.join("late-moov.mp4");
    let ok = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=25",
            "-t",
            "6",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-qp",
            "0",
            "-g",
            "25",
        ])
        .arg(&path)
        .status()
        .expect("ffmpeg CLI")
        .success();
    assert!(ok, "ffmpeg could not make the test file");
    let data = Arc::new(std::fs::read(&path).unwrap());
    let (rt, cache, _dir) = setup(1 << 30);
    let srv = serve(&rt, data.clone(), Duration::from_millis(1));
    let url = format!("http://127.0.0.1:{}/a.mp4", srv.port);
    let packets = |input: ff::format::context::Input| -> Vec<(usize, Option<i64>, usize)> {
        let mut input = input;
        input
            .packets()
            .map(|(s, p)| (s.index(), p.dts(), p.size()))
            .collect()
    };
    let direct = packets(crate::media::open_input(&path).unwrap());
    let reader = open(&rt, &cache, &url);
    let streamed = packets(crate::media::open_input(super::super::Media::Stream(reader)).unwrap());
    assert_eq!(streamed, direct, "the same packets as from the file");
    let ranges = srv.ranges.lock().unwrap().clone();
    assert!(
        data.len() > 4 * SOON_BYTES as usize && ranges.len() >= 2 && ranges[1].is_some(),
        "the moov came by a Range request: {ranges:?} ({} bytes)",
        data.len()
    );
    // Dropping the demuxer freed its reader: the entry is pinned by nobody.
    assert_eq!(cache.map().get(&url).unwrap().lock().pins, 0);
}

use ffmpeg_next as ff;

#[test]
fn a_download_nobody_reads_stops_and_a_new_reader_resumes_it() {
    let (rt, cache, _dir) = setup(1 << 30);
    let data = body(8 << 20);
    let srv = serve(&rt, data.clone(), Duration::from_millis(10));
    let url = format!("http://127.0.0.1:{}/a.mp4", srv.port);
    let mut r = open(&rt, &cache, &url);
    assert_eq!(read_exact(&mut r, 1000), data[..1000]);
    drop(r);
    let entry = cache.map().get(&url).unwrap().clone();
    let until = Instant::now() + Duration::from_secs(5);
    while entry.lock().driver && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !entry.lock().driver,
        "the driver stops with its last reader"
    );
    assert!(entry.lock().failed.is_none(), "stopping is not a failure");
    let held = entry.lock().held.total();
    assert!(held < data.len() as u64);
    // A new reader: the download resumes where it stopped, with a Range.
    let mut r = open(&rt, &cache, &url);
    assert_eq!(read_exact(&mut r, data.len()), *data);
    let ranges = srv.ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(ranges[1], Some(held), "resumed at the first byte not held");
}

#[test]
fn segments_download_in_order_into_one_file_while_read() {
    let (rt, cache, _dir) = setup(1 << 30);
    let data = body(300_000);
    let srv = serve(&rt, data.clone(), Duration::from_millis(5));
    let segs: Vec<String> = (0..3)
        .map(|i| format!("http://127.0.0.1:{}/seg{i}.ts", srv.port))
        .collect();
    let key = format!("http://127.0.0.1:{}/index.m3u8", srv.port);
    let pin = cache.pin_segments(&key, segs, "t").unwrap();
    let cancel = CancellationToken::new();
    rt.block_on(pin.started("t", &cancel)).unwrap();
    let mut r = pin.reader("t", cancel);
    assert_eq!(r.size(), None, "unknown until the last segment is in");
    let all = read_exact(&mut r, 3 * data.len());
    for i in 0..3 {
        assert_eq!(
            all[i * data.len()..(i + 1) * data.len()],
            data[..],
            "segment {i}"
        );
    }
    assert_eq!(r.read(&mut [0u8; 8]).unwrap(), 0, "then the end");
    assert_eq!(r.size(), Some(3 * data.len() as u64));
    assert_eq!(
        srv.ranges.lock().unwrap().len(),
        3,
        "one request per segment"
    );
}

#[test]
fn a_produced_entry_is_read_while_appended_ends_where_its_producer_ends_and_is_removed() {
    let (_rt, cache, _dir) = setup(1 << 30);
    let data = body(200_000);
    let (pin, mut producer) = cache.produce("task-key", "rtsp://h/cam", "t").unwrap();
    let mut r = pin.another().reader("t", CancellationToken::new());
    drop(pin);
    let chunks = data.clone();
    let writer = std::thread::spawn(move || {
        for c in chunks.chunks(10_000) {
            producer.append(c).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        producer.finish();
    });
    // The reader waits for each chunk as it comes, its length unknown till the end.
    let got = read_exact(&mut r, data.len());
    assert_eq!(got, data[..]);
    assert_eq!(
        r.read(&mut [0u8; 8]).unwrap(),
        0,
        "the producer's end is EOF"
    );
    assert_eq!(r.size(), Some(data.len() as u64));
    writer.join().unwrap();
    // A task's entry is its own: another pin under the URL is another entry.
    let other = cache.pin("rtsp://h/cam", "rtsp://h/cam", "u");
    assert!(other.is_ok());
    assert_eq!(cache.held_bytes(), data.len() as u64);
    cache.remove("task-key");
    assert_eq!(cache.held_bytes(), 0, "removed with its task");
    assert!(
        std::fs::read_dir(&cache.dir).unwrap().count() <= 1,
        "its file is gone"
    );

    // A producer dropped without an end: readers past what it holds get an error.
    let (pin, mut producer) = cache.produce("k2", "rtsp://h/cam", "t").unwrap();
    producer.append(b"abc").unwrap();
    let mut r = pin.reader("t", CancellationToken::new());
    assert_eq!(read_exact(&mut r, 3), b"abc");
    producer.fail(WorkerError::Unsupported {
        task: "t".into(),
        cause: "the pull failed".into(),
    });
    let e = r.read(&mut [0u8; 8]).unwrap_err();
    assert!(e.to_string().contains("the pull failed"), "{e}");
}
