use bytes::{Bytes, BytesMut};

use super::*;
use crate::error::ErrorKind;
use crate::message::{self, type_id};

fn hdr(csid: u32, timestamp: u32, type_id: u8, stream_id: u32) -> MessageHeader {
    MessageHeader {
        csid,
        timestamp,
        type_id,
        stream_id,
    }
}

fn payload(n: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>(),
    )
}

/// Concatenates pieces: header bytes and payload slices.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn writer_header_table() {
    let p5 = payload(5, 1);
    let p300 = payload(300, 2);
    let p128 = payload(128, 3);
    let p129 = payload(129, 4);
    let p200 = payload(200, 5);
    // Each row: messages written in order by one writer (chunk size 128), then the
    // exact bytes expected for the *last* message.
    type Row = (&'static str, Vec<(MessageHeader, Bytes)>, Vec<u8>);
    let rows: Vec<Row> = vec![
        (
            "first message: type 0",
            vec![(hdr(3, 0, 20, 0), p5.clone())],
            cat(&[&[0x03, 0, 0, 0, 0, 0, 5, 20, 0, 0, 0, 0], &p5]),
        ),
        (
            "same chunk and message stream: type 1 with the delta",
            vec![
                (hdr(4, 1000, 8, 1), p5.clone()),
                (hdr(4, 1023, 8, 1), p5.clone()),
            ],
            cat(&[&[0x44, 0, 0, 23, 0, 0, 5, 8], &p5]),
        ),
        (
            "time going backwards: type 0",
            vec![
                (hdr(4, 1000, 8, 1), p5.clone()),
                (hdr(4, 990, 8, 1), p5.clone()),
            ],
            cat(&[&[0x04, 0, 0x03, 0xDE, 0, 0, 5, 8, 1, 0, 0, 0], &p5]),
        ),
        (
            "other message stream: type 0 (little-endian stream id)",
            vec![
                (hdr(3, 0, 20, 0), p5.clone()),
                (hdr(3, 0, 20, 0x0102), p5.clone()),
            ],
            cat(&[&[0x03, 0, 0, 0, 0, 0, 5, 20, 2, 1, 0, 0], &p5]),
        ),
        (
            "longer than the chunk size: type 3 continuations",
            vec![(hdr(6, 40, 9, 1), p300.clone())],
            cat(&[
                &[0x06, 0, 0, 40, 0, 0x01, 0x2C, 9, 1, 0, 0, 0],
                &p300[..128],
                &[0xC6],
                &p300[128..256],
                &[0xC6],
                &p300[256..],
            ]),
        ),
        (
            "exactly one chunk",
            vec![(hdr(6, 0, 9, 1), p128.clone())],
            cat(&[&[0x06, 0, 0, 0, 0, 0, 128, 9, 1, 0, 0, 0], &p128]),
        ),
        (
            "one byte over",
            vec![(hdr(6, 0, 9, 1), p129.clone())],
            cat(&[
                &[0x06, 0, 0, 0, 0, 0, 129, 9, 1, 0, 0, 0],
                &p129[..128],
                &[0xC6],
                &p129[128..],
            ]),
        ),
        (
            "extended timestamp, repeated on the continuation",
            vec![(hdr(6, 0x0100_0000, 9, 1), p200.clone())],
            cat(&[
                &[
                    0x06, 0xFF, 0xFF, 0xFF, 0, 0, 200, 9, 1, 0, 0, 0, 0x01, 0, 0, 0,
                ],
                &p200[..128],
                &[0xC6, 0x01, 0, 0, 0],
                &p200[128..],
            ]),
        ),
        (
            "exactly 0xFFFFFF is extended too",
            vec![(hdr(4, 0xFF_FFFF, 8, 1), p5.clone())],
            cat(&[
                &[
                    0x04, 0xFF, 0xFF, 0xFF, 0, 0, 5, 8, 1, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF,
                ],
                &p5,
            ]),
        ),
        (
            "after an extended type 0, a small delta is a plain type 1",
            vec![
                (hdr(6, 0x0100_0000, 9, 1), p5.clone()),
                (hdr(6, 0x0100_0021, 9, 1), p200.clone()),
            ],
            cat(&[
                &[0x46, 0, 0, 0x21, 0, 0, 200, 9],
                &p200[..128],
                &[0xC6],
                &p200[128..],
            ]),
        ),
        (
            "a delta that needs 32 bits: type 0 with the absolute time",
            vec![
                (hdr(4, 0, 8, 1), p5.clone()),
                (hdr(4, 0x0200_0000, 8, 1), p5.clone()),
            ],
            cat(&[
                &[0x04, 0xFF, 0xFF, 0xFF, 0, 0, 5, 8, 1, 0, 0, 0, 2, 0, 0, 0],
                &p5,
            ]),
        ),
        (
            "timestamps wrap at 2^32: small forward delta",
            vec![
                (hdr(4, 0xFFFF_FFF0, 8, 1), p5.clone()),
                (hdr(4, 0x10, 8, 1), p5.clone()),
            ],
            cat(&[&[0x44, 0, 0, 0x20, 0, 0, 5, 8], &p5]),
        ),
        (
            "empty payload",
            vec![(hdr(3, 0, 20, 0), Bytes::new())],
            vec![0x03, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0, 0],
        ),
        (
            "two-byte basic header (csid 64..319)",
            vec![(hdr(300, 0, 8, 1), p5.clone())],
            cat(&[&[0x00, 236, 0, 0, 0, 0, 0, 5, 8, 1, 0, 0, 0], &p5]),
        ),
        (
            "three-byte basic header (csid >= 320)",
            vec![(hdr(1000, 0, 8, 1), p200.clone())],
            cat(&[
                &[0x01, 0xA8, 0x03, 0, 0, 0, 0, 0, 200, 8, 1, 0, 0, 0],
                &p200[..128],
                &[0xC1, 0xA8, 0x03],
                &p200[128..],
            ]),
        ),
    ];
    for (name, msgs, want) in rows {
        let mut w = ChunkWriter::new();
        let mut q = OutQueue::new();
        let (last, rest) = msgs.split_last().unwrap();
        for (h, p) in rest {
            w.write(h, p, &mut q).unwrap();
        }
        q.clear();
        w.write(&last.0, &last.1, &mut q).unwrap();
        assert_eq!(q.to_vec(), want, "{name}");
        assert_eq!(q.len(), want.len(), "{name}");
    }
}

#[test]
fn writer_refuses_what_rtmp_cannot_carry() {
    let mut w = ChunkWriter::new();
    let mut q = OutQueue::new();
    let big = Bytes::from(vec![0u8; MAX_MESSAGE_LEN + 1]);
    assert_eq!(
        w.write(&hdr(6, 0, 9, 1), &big, &mut q).unwrap_err().kind(),
        ErrorKind::Protocol
    );
    assert!(w.write(&hdr(1, 0, 9, 1), &Bytes::new(), &mut q).is_err());
    assert!(w
        .write(&hdr(MAX_CSID + 1, 0, 9, 1), &Bytes::new(), &mut q)
        .is_err());
    assert!(q.is_empty());
}

#[test]
fn payload_is_sliced_not_copied() {
    let mut w = ChunkWriter::new();
    w.set_chunk_size(100);
    let mut q = OutQueue::new();
    let p = payload(250, 9);
    w.write(&hdr(6, 0, 9, 1), &p, &mut q).unwrap();
    // header, 100, cont, 100, cont, 50
    assert_eq!(q.segments(), 6);
    let mut slices = [std::io::IoSlice::new(&[]); 16];
    let n = q.io_slices(&mut slices);
    assert_eq!(n, 6);
    assert_eq!(
        slices[1].as_ptr(),
        p.as_ptr(),
        "first piece points into the payload"
    );
    assert_eq!(slices[3].as_ptr(), p[100..].as_ptr());
    // Partial writes advance across pieces.
    let all = q.to_vec();
    q.advance(5);
    assert_eq!(q.to_vec(), all[5..]);
    q.advance(110);
    assert_eq!(q.to_vec(), all[115..]);
    q.advance(10_000);
    assert!(q.is_empty());
    assert_eq!(q.segments(), 0);
}

/// Writes `msgs`, then reads them back feeding `step` bytes at a time.
fn round_trip(msgs: &[(MessageHeader, Bytes)], out_chunk: u32, step: usize) {
    let mut w = ChunkWriter::new();
    let mut q = OutQueue::new();
    if out_chunk != DEFAULT_CHUNK_SIZE {
        w.write(
            &hdr(2, 0, type_id::SET_CHUNK_SIZE, 0),
            &message::set_chunk_size(out_chunk),
            &mut q,
        )
        .unwrap();
        w.set_chunk_size(out_chunk);
    }
    for (h, p) in msgs {
        w.write(h, p, &mut q).unwrap();
    }
    let wire = q.to_vec();
    let mut r = ChunkReader::with_max_message(1 << 24);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for piece in wire.chunks(step) {
        buf.extend_from_slice(piece);
        while let Some(m) = r.read(&mut buf).unwrap() {
            if m.header.type_id != type_id::SET_CHUNK_SIZE {
                got.push((m.header, m.payload));
            }
        }
    }
    assert!(buf.is_empty(), "bytes left over");
    assert_eq!(got.len(), msgs.len());
    for (g, m) in got.iter().zip(msgs) {
        assert_eq!(g.0, m.0);
        assert_eq!(g.1, m.1, "payload of {:?}", m.0);
    }
    assert_eq!(r.chunk_size(), out_chunk);
}

#[test]
fn writer_and_reader_round_trip() {
    let mut msgs = Vec::new();
    let mut t: u32 = 0xFF_FF00; // crosses into extended timestamps
    for i in 0..40u32 {
        let (csid, ty) = if i % 3 == 0 { (4, 8) } else { (6, 9) };
        msgs.push((
            hdr(csid, t, ty, 1),
            payload((i as usize * 97) % 700, i as u8),
        ));
        t = t.wrapping_add(23);
    }
    msgs.push((hdr(3, 5, 20, 0), payload(3, 0)));
    msgs.push((hdr(4, 0xFFFF_FFFF, 8, 1), payload(300, 1)));
    msgs.push((hdr(4, 3, 8, 1), payload(300, 2))); // wrapped
    for chunk in [1, 7, 128, 129, 4096, 65_536] {
        for step in [1, 5, 1000, usize::MAX] {
            round_trip(&msgs, chunk, step.min(1 << 20));
        }
    }
}

#[test]
fn reader_resolves_compressed_timestamps() {
    // type 0 at 100, type 1 +40, type 2 +10, type 3 (new message, same delta),
    // then on another csid type 0 at 500 followed by type 3 (delta = 500 per spec).
    let wire: Vec<u8> = cat(&[
        &[0x04, 0, 0, 100, 0, 0, 1, 8, 1, 0, 0, 0, 0xA1],
        &[0x44, 0, 0, 40, 0, 0, 1, 8, 0xA2],
        &[0x84, 0, 0, 10, 0xA3],
        &[0xC4, 0xA4],
        &[0x05, 0, 1, 0xF4, 0, 0, 2, 18, 1, 0, 0, 0, 1, 2],
        &[0xC5, 3, 4],
    ]);
    let mut r = ChunkReader::new();
    let mut buf = BytesMut::from(&wire[..]);
    let mut times = Vec::new();
    while let Some(m) = r.read(&mut buf).unwrap() {
        times.push((m.header.csid, m.header.timestamp, m.payload.len()));
    }
    assert_eq!(
        times,
        [
            (4, 100, 1),
            (4, 140, 1),
            (4, 150, 1),
            (4, 160, 1),
            (5, 500, 2),
            (5, 1000, 2)
        ]
    );
}

#[test]
fn reader_honours_abort_and_chunk_size() {
    let wire = cat(&[
        // 200-byte message on csid 6: first 128-byte chunk only.
        &[0x06, 0, 0, 0, 0, 0, 200, 9, 1, 0, 0, 0],
        &[7u8; 128],
        // Abort csid 6.
        &[
            0x02,
            0,
            0,
            0,
            0,
            0,
            4,
            type_id::ABORT,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            6,
        ],
        // Set Chunk Size 300, then a fresh 200-byte message on csid 6 in one chunk.
        &[
            0x02,
            0,
            0,
            0,
            0,
            0,
            4,
            type_id::SET_CHUNK_SIZE,
            0,
            0,
            0,
            0,
            0,
            0,
            1,
            44,
        ],
        &[0x06, 0, 0, 9, 0, 0, 200, 9, 1, 0, 0, 0],
        &[8u8; 200],
    ]);
    let mut r = ChunkReader::new();
    let mut buf = BytesMut::from(&wire[..]);
    let mut got = Vec::new();
    while let Some(m) = r.read(&mut buf).unwrap() {
        got.push(m);
    }
    let types: Vec<u8> = got.iter().map(|m| m.header.type_id).collect();
    assert_eq!(types, [type_id::ABORT, type_id::SET_CHUNK_SIZE, 9]);
    assert_eq!(r.chunk_size(), 300);
    assert_eq!(got[2].payload, Bytes::from(vec![8u8; 200]));
    assert_eq!(got[2].header.timestamp, 9);
}

#[test]
fn reader_waits_for_whole_chunks() {
    let wire = cat(&[&[0x03, 0, 0, 0, 0, 0, 5, 20, 0, 0, 0, 0], &[1, 2, 3, 4, 5]]);
    let mut r = ChunkReader::new();
    for cut in 0..wire.len() {
        let mut buf = BytesMut::from(&wire[..cut]);
        assert_eq!(r.read(&mut buf).unwrap(), None, "cut at {cut}");
        assert_eq!(buf.len(), cut, "nothing consumed from a partial chunk");
    }
}

#[test]
fn reader_rejects_hostile_input() {
    let rows: Vec<(&str, Vec<u8>)> = vec![
        ("type 2 on a fresh chunk stream", vec![0x84, 0, 0, 1]),
        ("type 3 on a fresh chunk stream", vec![0xC4, 1]),
        (
            "message over the limit",
            vec![0x04, 0, 0, 0, 0x20, 0, 0, 8, 1, 0, 0, 0],
        ),
        (
            "new header inside a message",
            cat(&[
                &[0x06, 0, 0, 0, 0, 0, 200, 9, 1, 0, 0, 0],
                &[0; 128],
                &[0x46, 0, 0, 0, 0, 0, 1, 9, 0],
            ]),
        ),
        (
            "chunk size 0",
            vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0x80, 0, 0, 0],
        ),
        (
            "short chunk size message",
            vec![0x02, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 1],
        ),
        (
            "short abort message",
            vec![0x02, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 6],
        ),
        (
            "too many chunk streams",
            (0..70u8)
                .flat_map(|i| [0x00, i, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0])
                .collect(),
        ),
    ];
    for (name, wire) in rows {
        let mut r = ChunkReader::new();
        let mut buf = BytesMut::from(&wire[..]);
        let res = (|| loop {
            match r.read(&mut buf)? {
                Some(_) => continue,
                None => return Ok(()),
            }
        })();
        let err: crate::error::RtmpError = res.expect_err(name);
        assert_eq!(err.kind(), ErrorKind::Protocol, "{name}");
    }
}
