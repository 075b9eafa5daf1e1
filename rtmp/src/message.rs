//! RTMP message bodies: protocol control, user control and AMF0 commands.

use bytes::Bytes;

use crate::amf0::{self, Value};
use crate::error::RtmpError;

/// Message type ids.
pub mod type_id {
    /// Set Chunk Size (protocol control).
    pub const SET_CHUNK_SIZE: u8 = 1;
    /// Abort Message (protocol control).
    pub const ABORT: u8 = 2;
    /// Acknowledgement (protocol control).
    pub const ACK: u8 = 3;
    /// User Control Message (Stream Begin, Ping Request, …).
    pub const USER_CONTROL: u8 = 4;
    /// Window Acknowledgement Size (protocol control).
    pub const WINDOW_ACK_SIZE: u8 = 5;
    /// Set Peer Bandwidth (protocol control).
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    /// Audio data (an FLV audio tag body).
    pub const AUDIO: u8 = 8;
    /// Video data (an FLV video tag body).
    pub const VIDEO: u8 = 9;
    /// Data message, AMF3.
    pub const DATA_AMF3: u8 = 15;
    /// Command message, AMF3 (a format byte, then AMF0 in practice).
    pub const COMMAND_AMF3: u8 = 17;
    /// Data message, AMF0 (`@setDataFrame`/`onMetaData`).
    pub const DATA_AMF0: u8 = 18;
    /// Command message, AMF0.
    pub const COMMAND_AMF0: u8 = 20;
}

/// User control event types.
pub mod user_control {
    /// Stream Begin.
    pub const STREAM_BEGIN: u16 = 0;
    /// Ping Request (the server's timestamp follows).
    pub const PING_REQUEST: u16 = 6;
    /// Ping Response (echoes the request's timestamp).
    pub const PING_RESPONSE: u16 = 7;
}

/// The chunk stream for protocol control messages.
pub const CONTROL_CSID: u32 = 2;

/// Set Chunk Size body.
pub fn set_chunk_size(size: u32) -> Bytes {
    Bytes::copy_from_slice(&(size & 0x7FFF_FFFF).to_be_bytes())
}

/// Acknowledgement body: the number of bytes received so far (wraps).
pub fn acknowledgement(sequence: u32) -> Bytes {
    Bytes::copy_from_slice(&sequence.to_be_bytes())
}

/// Window Acknowledgement Size body.
pub fn window_ack_size(size: u32) -> Bytes {
    Bytes::copy_from_slice(&size.to_be_bytes())
}

/// Set Peer Bandwidth body (`limit`: 0 hard, 1 soft, 2 dynamic).
pub fn set_peer_bandwidth(size: u32, limit: u8) -> Bytes {
    let mut b = size.to_be_bytes().to_vec();
    b.push(limit);
    Bytes::from(b)
}

/// User control body: event type and one 32-bit value.
pub fn user_control(event: u16, value: u32) -> Bytes {
    let mut b = event.to_be_bytes().to_vec();
    b.extend_from_slice(&value.to_be_bytes());
    Bytes::from(b)
}

/// A 32-bit big-endian value at the start of a control message body.
pub fn read_u32(payload: &[u8], what: &str) -> Result<u32, RtmpError> {
    payload
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| RtmpError::protocol(format!("{what} shorter than 4 bytes")))
}

/// A user control message: event type and its first 32-bit value (0 if absent).
pub fn read_user_control(payload: &[u8]) -> Result<(u16, u32), RtmpError> {
    let event = payload
        .get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| RtmpError::protocol("user control message shorter than 2 bytes"))?;
    let value = payload
        .get(2..)
        .map(|v| read_u32(v, "user control value"))
        .transpose();
    Ok((event, value.ok().flatten().unwrap_or(0)))
}

/// A command: name, transaction id, command object, further arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    /// `connect`, `_result`, `onStatus`, …
    pub name: String,
    /// Transaction id (0 for notifications such as onStatus).
    pub transaction: f64,
    /// The command object (often `Null`).
    pub object: Value,
    /// The remaining arguments.
    pub args: Vec<Value>,
}

impl Command {
    /// A command with the given parts.
    pub fn new(name: &str, transaction: f64, object: Value, args: Vec<Value>) -> Command {
        Command {
            name: name.to_owned(),
            transaction,
            object,
            args,
        }
    }

    /// The AMF0 body of a type 20 message.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(64);
        Value::String(self.name.clone()).encode(&mut out);
        Value::Number(self.transaction).encode(&mut out);
        self.object.encode(&mut out);
        for a in &self.args {
            a.encode(&mut out);
        }
        Bytes::from(out)
    }

    /// Parses a type 20 body (or a type 17 one: `amf3` skips its format byte).
    pub fn decode(payload: &[u8], amf3: bool) -> Result<Command, RtmpError> {
        let body = if amf3 {
            payload.get(1..).unwrap_or_default()
        } else {
            payload
        };
        let mut values = amf0::decode_all(body)?.into_iter();
        let name = match values.next() {
            Some(Value::String(s)) => s,
            _ => return Err(RtmpError::protocol("command without a name")),
        };
        let transaction = match values.next() {
            Some(Value::Number(n)) => n,
            None => 0.0,
            Some(_) => {
                return Err(RtmpError::protocol(format!(
                    "command {name}: transaction id is not a number"
                )))
            }
        };
        let object = values.next().unwrap_or(Value::Null);
        Ok(Command {
            name,
            transaction,
            object,
            args: values.collect(),
        })
    }

    /// The status/info object of `_result`, `_error` or `onStatus`: the first
    /// object among the arguments, else the command object.
    pub fn info(&self) -> Option<&Value> {
        self.args
            .iter()
            .chain(std::iter::once(&self.object))
            .find(|v| {
                matches!(v, Value::Object(_) | Value::EcmaArray(_)) && v.get("code").is_some()
            })
            .or_else(|| self.args.iter().find(|v| matches!(v, Value::Object(_))))
    }

    /// A string field of [`Command::info`] (`level`, `code`, `description`).
    pub fn info_str(&self, key: &str) -> Option<&str> {
        self.info().and_then(|i| i.get(key)).and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        let c = Command::new(
            "onStatus",
            0.0,
            Value::Null,
            vec![Value::object([
                ("level", Value::string("error")),
                ("code", Value::string("NetStream.Publish.BadName")),
                ("description", Value::string("Already publishing")),
            ])],
        );
        let d = Command::decode(&c.encode(), false).unwrap();
        assert_eq!(d, c);
        assert_eq!(d.info_str("code"), Some("NetStream.Publish.BadName"));
        assert_eq!(d.info_str("level"), Some("error"));
        let mut amf3 = vec![0u8];
        amf3.extend_from_slice(&c.encode());
        assert_eq!(Command::decode(&amf3, true).unwrap(), c);
    }

    #[test]
    fn malformed_commands_are_protocol_errors() {
        for body in [
            &[][..],
            &[0, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0][..],
            &[2, 0, 1, b'a', 2, 0, 0][..],
        ] {
            assert!(Command::decode(body, false).is_err(), "{body:?}");
        }
        assert!(read_u32(&[1, 2], "x").is_err());
        assert!(read_user_control(&[0]).is_err());
        assert_eq!(read_user_control(&[0, 6, 0, 0, 1, 0]).unwrap(), (6, 256));
    }
}
