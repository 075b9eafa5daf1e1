//! What an RTMP server sends a publisher: the chunk stream reassembled by
//! `ChunkReader` (fed in pieces whose sizes come from the input, as a socket
//! would), each message decoded as the publisher's reader does (control
//! messages, AMF0/AMF3 commands), and AMF0 values on their own. Must never
//! panic, loop or allocate past the reader's message limit; AMF0 that decodes
//! must encode and decode again to the same values.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use vodfleet_rtmp::amf0;
use vodfleet_rtmp::chunk::ChunkReader;
use vodfleet_rtmp::message::{self, type_id, Command};

/// A small message limit so the fuzzer can reach it.
const MAX_MESSAGE: usize = 64 * 1024;

fn decode(type_id: u8, body: &[u8]) {
    match type_id {
        type_id::WINDOW_ACK_SIZE | type_id::SET_PEER_BANDWIDTH | type_id::ACK => {
            let _ = message::read_u32(body, "u32");
        }
        type_id::USER_CONTROL => {
            let _ = message::read_user_control(body);
        }
        type_id::COMMAND_AMF0 | type_id::COMMAND_AMF3 => {
            if let Ok(cmd) = Command::decode(body, type_id == type_id::COMMAND_AMF3) {
                let _ = cmd.info_str("code");
                let _ = cmd.info_str("description");
                let again = Command::decode(&cmd.encode(), false).expect("our encoding decodes");
                assert_eq!(again.name, cmd.name);
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            // Chunk stream: the next byte sets the piece size the "socket" delivers.
            let Some((&step, stream)) = rest.split_first() else {
                return;
            };
            let step = usize::from(step).max(1);
            let mut reader = ChunkReader::with_max_message(MAX_MESSAGE);
            let mut buf = BytesMut::new();
            for piece in stream.chunks(step) {
                buf.extend_from_slice(piece);
                loop {
                    match reader.read(&mut buf) {
                        Ok(Some(m)) => {
                            assert!(m.payload.len() <= MAX_MESSAGE, "message over the limit");
                            decode(m.header.type_id, &m.payload);
                        }
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
                // Whatever is left is less than one chunk (or waits for more input).
                assert!(buf.len() <= stream.len());
            }
        }
        1 => decode(
            rest.first().copied().unwrap_or(0),
            rest.get(1..).unwrap_or_default(),
        ),
        _ => {
            if let Ok(values) = amf0::decode_all(rest) {
                let bytes = amf0::encode_all(&values);
                let again = amf0::decode_all(&bytes).expect("our encoding decodes");
                // Debug, not ==: NaN numbers are equal there.
                assert_eq!(format!("{again:?}"), format!("{values:?}"));
            }
        }
    }
});
