//! `Publisher` against scripted in-process servers on 127.0.0.1: the parts of
//! the protocol a real server rarely exercises (pings, acknowledgement windows,
//! refusals at each step, hang-ups, garbage, silence).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use vodfleet_rtmp::amf0::Value;
use vodfleet_rtmp::chunk::{ChunkReader, ChunkWriter, Message, MessageHeader, OutQueue};
use vodfleet_rtmp::message::{self, type_id, user_control, Command};
use vodfleet_rtmp::{
    handshake, ErrorKind, PublishOptions, Publisher, RtmpError, Tag, TagKind, Target,
};

const KEY: &str = "SECRETKEY";

/// The server side of one connection, built from the crate's own layers.
struct Conn {
    io: TcpStream,
    buf: BytesMut,
    reader: ChunkReader,
    writer: ChunkWriter,
    out: OutQueue,
}

impl Conn {
    async fn accept(l: &TcpListener) -> Conn {
        let (mut io, _) = l.accept().await.unwrap();
        handshake::server(&mut io).await.unwrap();
        Conn {
            io,
            buf: BytesMut::new(),
            reader: ChunkReader::with_max_message(1 << 24),
            writer: ChunkWriter::new(),
            out: OutQueue::new(),
        }
    }

    /// The next message, `None` at EOF.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = self.reader.read(&mut self.buf).unwrap() {
                return Some(m);
            }
            if self.io.read_buf(&mut self.buf).await.ok()? == 0 {
                return None;
            }
        }
    }

    async fn next_command(&mut self) -> Command {
        loop {
            let m = self.next().await.expect("a command, not EOF");
            if m.header.type_id == type_id::COMMAND_AMF0 {
                return Command::decode(&m.payload, false).unwrap();
            }
        }
    }

    async fn send(&mut self, csid: u32, ty: u8, stream_id: u32, body: Bytes) {
        let h = MessageHeader {
            csid,
            timestamp: 0,
            type_id: ty,
            stream_id,
        };
        self.writer.write(&h, &body, &mut self.out).unwrap();
        let bytes = self.out.to_vec();
        self.out.clear();
        tokio::io::AsyncWriteExt::write_all(&mut self.io, &bytes)
            .await
            .unwrap();
    }

    async fn reply(&mut self, stream_id: u32, name: &str, txn: f64, args: Vec<Value>) {
        let body = Command::new(name, txn, Value::Null, args).encode();
        self.send(3, type_id::COMMAND_AMF0, stream_id, body).await;
    }

    fn status(level: &str, code: &str, description: &str) -> Value {
        Value::object([
            ("level", Value::string(level)),
            ("code", Value::string(code)),
            ("description", Value::string(description)),
        ])
    }

    /// connect → _result (after nginx-like control messages and a chunk size
    /// of 4096); returns the connect command.
    async fn answer_connect(&mut self) -> Command {
        let c = self.next_command().await;
        assert_eq!(c.name, "connect");
        self.send(
            2,
            type_id::WINDOW_ACK_SIZE,
            0,
            message::window_ack_size(5_000_000),
        )
        .await;
        self.send(
            2,
            type_id::SET_PEER_BANDWIDTH,
            0,
            message::set_peer_bandwidth(5_000_000, 2),
        )
        .await;
        self.send(2, type_id::SET_CHUNK_SIZE, 0, message::set_chunk_size(4096))
            .await;
        self.writer.set_chunk_size(4096);
        let ok = Conn::status(
            "status",
            "NetConnection.Connect.Success",
            "Connection succeeded.",
        );
        self.reply(0, "_result", c.transaction, vec![ok]).await;
        c
    }

    /// createStream → 1; returns the publish command (not yet answered).
    async fn answer_create_stream(&mut self) -> Command {
        loop {
            let c = self.next_command().await;
            match c.name.as_str() {
                "createStream" => {
                    self.reply(0, "_result", c.transaction, vec![Value::Number(1.0)])
                        .await
                }
                "publish" => return c,
                _ => {}
            }
        }
    }

    /// The whole successful setup; returns the publish command.
    async fn accept_publish(&mut self) -> Command {
        self.answer_connect().await;
        let p = self.answer_create_stream().await;
        self.send(
            2,
            type_id::USER_CONTROL,
            0,
            message::user_control(user_control::STREAM_BEGIN, 1),
        )
        .await;
        let start = Conn::status("status", "NetStream.Publish.Start", "Start publishing");
        self.reply(1, "onStatus", 0.0, vec![start]).await;
        p
    }
}

async fn listener() -> (TcpListener, Target) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let t = Target::parse(&format!("rtmp://127.0.0.1:{port}/live/{KEY}?tok=abc")).unwrap();
    (l, t)
}

fn opts() -> PublishOptions {
    PublishOptions {
        timeout: Duration::from_secs(5),
        ..PublishOptions::default()
    }
}

fn tag(kind: TagKind, ts: u32, len: usize) -> Tag {
    Tag {
        kind,
        timestamp_ms: ts,
        payload: Bytes::from(
            (0..len)
                .map(|i| (i % 251) as u8 ^ ts as u8)
                .collect::<Vec<u8>>(),
        ),
    }
}

/// Flushes every 10 ms until `f` (a server task) finishes or 5 s pass; returns
/// the server task's result and the first flush error.
async fn flush_until<T>(p: &mut Publisher, mut f: JoinHandle<T>) -> (T, Option<RtmpError>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut err = None;
    loop {
        tokio::select! {
            r = &mut f => return (r.unwrap(), err),
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        if err.is_none() {
            err = p.flush().await.err();
        }
        assert!(Instant::now() < deadline, "server script did not finish");
    }
}

fn assert_no_secret(e: &RtmpError) {
    let shown = format!("{e} {e:?}");
    assert!(
        !shown.contains(KEY) && !shown.contains("tok=abc"),
        "secret in error: {shown}"
    );
}

#[tokio::test]
async fn publishes_tags_and_answers_pings_acks_and_bandwidth() {
    let (l, target) = listener().await;
    // Timestamps cross 0xFFFFFF (extended timestamps); video frames span chunks.
    let tags: Vec<Tag> = (0..30u32)
        .map(|i| {
            let ts = 0xFF_FF00 + i * 20;
            if i % 2 == 0 {
                tag(TagKind::Video, ts, 100_000 + i as usize)
            } else {
                tag(TagKind::Audio, ts, 300)
            }
        })
        .collect();
    let want = tags.clone();
    let server = tokio::spawn(async move {
        let mut c = Conn::accept(&l).await;
        let connect = c.answer_connect().await;
        assert_eq!(
            connect.object.get("app").and_then(Value::as_str),
            Some("live")
        );
        assert_eq!(
            connect.object.get("type").and_then(Value::as_str),
            Some("nonprivate")
        );
        let tc = connect
            .object
            .get("tcUrl")
            .and_then(Value::as_str)
            .unwrap()
            .to_owned();
        assert!(tc.ends_with("/live"), "{tc}");
        let publish = c.answer_create_stream().await;
        assert_eq!(publish.args[0].as_str(), Some("SECRETKEY?tok=abc"));
        assert_eq!(publish.args[1].as_str(), Some("live"));
        c.send(
            2,
            type_id::WINDOW_ACK_SIZE,
            0,
            message::window_ack_size(1000),
        )
        .await;
        let start = Conn::status("status", "NetStream.Publish.Start", "Start publishing");
        c.reply(1, "onStatus", 0.0, vec![start]).await;
        let mut got = Vec::new();
        while got.len() < 30 {
            let m = c.next().await.expect("tags");
            if matches!(m.header.type_id, 8 | 9) {
                assert_eq!(m.header.stream_id, 1);
                got.push((m.header.type_id, m.header.timestamp, m.payload));
            }
        }
        // Now what needs answers: a ping, a bandwidth change, and 2000 bytes
        // (past the 1000-byte window) of data the client ignores.
        c.send(
            2,
            type_id::USER_CONTROL,
            0,
            message::user_control(user_control::PING_REQUEST, 1234),
        )
        .await;
        c.send(
            2,
            type_id::SET_PEER_BANDWIDTH,
            0,
            message::set_peer_bandwidth(7777, 2),
        )
        .await;
        c.send(5, type_id::DATA_AMF0, 1, Bytes::from(vec![5u8; 2000]))
            .await;
        let (mut pong, mut ack, mut window) = (None, None, None);
        while pong.is_none() || ack.is_none() || window.is_none() {
            let m = c.next().await.expect("answers");
            match m.header.type_id {
                type_id::USER_CONTROL => {
                    pong = Some(message::read_user_control(&m.payload).unwrap())
                }
                type_id::ACK => ack = Some(message::read_u32(&m.payload, "ack").unwrap()),
                type_id::WINDOW_ACK_SIZE => {
                    window = Some(message::read_u32(&m.payload, "w").unwrap())
                }
                _ => {}
            }
        }
        (got, pong.unwrap(), ack.unwrap(), window.unwrap())
    });
    let mut p = Publisher::connect(&target, &opts()).await.unwrap();
    assert_eq!(p.stream_id(), 1);
    for t in &tags {
        p.queue(t);
    }
    assert!(p.queued_bytes() > 1_500_000);
    p.flush().await.unwrap();
    assert_eq!(p.queued_bytes(), 0);
    let ((got, pong, ack, window), err) = flush_until(&mut p, server).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got.len(), want.len());
    for ((ty, ts, body), t) in got.iter().zip(&want) {
        assert_eq!((*ty, *ts), (t.kind.type_id(), t.timestamp_ms));
        assert_eq!(body, &t.payload);
    }
    assert_eq!(pong, (user_control::PING_RESPONSE, 1234));
    assert!(ack >= 2000, "ack sequence {ack} counts the bytes received");
    assert_eq!(window, 7777);
}

#[tokio::test]
async fn connect_error_is_refused_without_the_key() {
    let (l, target) = listener().await;
    tokio::spawn(async move {
        let mut c = Conn::accept(&l).await;
        let connect = c.next_command().await;
        let no = Conn::status(
            "error",
            "NetConnection.Connect.Rejected",
            "no stream SECRETKEY here",
        );
        c.reply(0, "_error", connect.transaction, vec![no]).await;
        let _ = c.next().await;
    });
    let e = Publisher::connect(&target, &opts()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert!(
        e.to_string().contains("NetConnection.Connect.Rejected"),
        "{e}"
    );
    assert_no_secret(&e);
}

#[tokio::test]
async fn publish_status_error_is_refused() {
    let (l, target) = listener().await;
    tokio::spawn(async move {
        let mut c = Conn::accept(&l).await;
        c.answer_connect().await;
        c.answer_create_stream().await;
        let no = Conn::status("error", "NetStream.Publish.BadName", "Already publishing");
        c.reply(1, "onStatus", 0.0, vec![no]).await;
        let _ = c.next().await;
    });
    let e = Publisher::connect(&target, &opts()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused);
    assert_eq!(
        e,
        RtmpError::Refused {
            code: "NetStream.Publish.BadName".into(),
            description: "Already publishing".into()
        }
    );
}

#[tokio::test]
async fn hang_up_in_answer_to_publish_is_refused_but_earlier_is_closed() {
    let (l, target) = listener().await;
    tokio::spawn(async move {
        let mut c = Conn::accept(&l).await;
        c.answer_connect().await;
        c.answer_create_stream().await;
        // drop: like nginx-rtmp when on_publish answers 403
    });
    let e = Publisher::connect(&target, &opts()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");

    let (l, target) = listener().await;
    tokio::spawn(async move {
        let mut c = Conn::accept(&l).await;
        c.next_command().await; // connect, then hang up
    });
    let e = Publisher::connect(&target, &opts()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    assert!(e.kind().is_retryable());
}

#[tokio::test]
async fn status_error_while_publishing_surfaces_at_flush() {
    let (l, target) = listener().await;
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut c = Conn::accept(&l).await;
        c.accept_publish().await;
        go_rx.await.unwrap();
        let no = Conn::status(
            "error",
            "NetStream.Publish.Denied",
            "SECRETKEY is not allowed",
        );
        c.reply(1, "onStatus", 0.0, vec![no]).await;
        while c.next().await.is_some() {}
    });
    let mut p = Publisher::connect(&target, &opts()).await.unwrap();
    p.queue(&tag(TagKind::Audio, 0, 10));
    p.flush().await.unwrap();
    go_tx.send(()).unwrap();
    let e = poll_flush_error(&mut p).await;
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("NetStream.Publish.Denied"), "{e}");
    assert_no_secret(&e);
    // The publisher stays failed.
    assert_eq!(p.flush().await.unwrap_err(), e);
}

/// Queues a tag and flushes every 10 ms until a flush fails (at most 5 s).
async fn poll_flush_error(p: &mut Publisher) -> RtmpError {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut ts = 100;
    loop {
        p.queue(&tag(TagKind::Audio, ts, 1000));
        if let Err(e) = p.flush().await {
            return e;
        }
        assert!(Instant::now() < deadline, "flush never failed");
        ts += 10;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn server_hang_up_while_publishing_is_closed() {
    let (l, target) = listener().await;
    tokio::spawn(async move {
        let mut c = Conn::accept(&l).await;
        c.accept_publish().await;
    });
    let mut p = Publisher::connect(&target, &opts()).await.unwrap();
    let e = poll_flush_error(&mut p).await;
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
}

#[tokio::test]
async fn garbage_while_publishing_is_a_protocol_error() {
    let (l, target) = listener().await;
    tokio::spawn(async move {
        let mut c = Conn::accept(&l).await;
        c.accept_publish().await;
        // A type 2 header on a chunk stream never seen before.
        tokio::io::AsyncWriteExt::write_all(&mut c.io, &[0x89, 0, 0, 1])
            .await
            .unwrap();
        while c.next().await.is_some() {}
    });
    let mut p = Publisher::connect(&target, &opts()).await.unwrap();
    let e = poll_flush_error(&mut p).await;
    assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
}

#[tokio::test]
async fn silence_times_out_and_closed_ports_are_unreachable() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(s);
    });
    let target = Target::parse(&format!("rtmp://127.0.0.1:{port}/live/{KEY}")).unwrap();
    let started = Instant::now();
    let o = PublishOptions {
        timeout: Duration::from_millis(300),
        ..opts()
    };
    let e = Publisher::connect(&target, &o).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(
        matches!(
            e,
            RtmpError::TimedOut {
                stage: "RTMP handshake",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    hold.abort();

    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let target = Target::parse(&format!("rtmp://127.0.0.1:{port}/live/{KEY}")).unwrap();
    let e = Publisher::connect(&target, &opts()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
    assert_no_secret(&e);
}

#[tokio::test]
async fn dropping_the_publisher_closes_the_connection() {
    let (l, target) = listener().await;
    let server = tokio::spawn(async move {
        let mut c = Conn::accept(&l).await;
        c.accept_publish().await;
        tokio::time::timeout(Duration::from_secs(5), async {
            while c.next().await.is_some() {}
        })
        .await
        .is_ok()
    });
    let p = Publisher::connect(&target, &opts()).await.unwrap();
    drop(p);
    assert!(
        server.await.unwrap(),
        "server saw EOF after the drop (reader task ended)"
    );
}

#[tokio::test]
async fn close_unpublishes_and_deletes_the_stream() {
    let (l, target) = listener().await;
    let server = tokio::spawn(async move {
        let mut c = Conn::accept(&l).await;
        c.accept_publish().await;
        let mut seen = Vec::new();
        while let Some(m) = c.next().await {
            if m.header.type_id == type_id::COMMAND_AMF0 {
                let cmd = Command::decode(&m.payload, false).unwrap();
                seen.push((cmd.name.clone(), cmd.args.first().cloned()));
            } else if m.header.type_id == 8 {
                seen.push(("audio".into(), None));
            }
        }
        seen
    });
    let mut p = Publisher::connect(&target, &opts()).await.unwrap();
    p.queue(&tag(TagKind::Audio, 0, 10));
    let started = Instant::now();
    p.close(Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "server closed after our shutdown"
    );
    let seen = server.await.unwrap();
    assert_eq!(
        seen,
        vec![
            ("audio".to_owned(), None),
            (
                "FCUnpublish".to_owned(),
                Some(Value::string("SECRETKEY?tok=abc"))
            ),
            ("deleteStream".to_owned(), Some(Value::Number(1.0))),
        ]
    );
}
