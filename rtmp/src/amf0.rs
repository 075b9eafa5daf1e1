//! AMF0, the encoding of RTMP commands and FLV script data.
//!
//! Enough of it for a publisher and for reading what servers answer: numbers,
//! booleans, strings (short and long), objects, null/undefined, ECMA and strict
//! arrays, dates; typed objects and XML documents are read too. Decoding never
//! panics: anything malformed is [`RtmpError::Protocol`] with a reason.

use crate::error::RtmpError;

/// Type markers.
mod marker {
    pub const NUMBER: u8 = 0x00;
    pub const BOOLEAN: u8 = 0x01;
    pub const STRING: u8 = 0x02;
    pub const OBJECT: u8 = 0x03;
    pub const NULL: u8 = 0x05;
    pub const UNDEFINED: u8 = 0x06;
    pub const REFERENCE: u8 = 0x07;
    pub const ECMA_ARRAY: u8 = 0x08;
    pub const OBJECT_END: u8 = 0x09;
    pub const STRICT_ARRAY: u8 = 0x0A;
    pub const DATE: u8 = 0x0B;
    pub const LONG_STRING: u8 = 0x0C;
    pub const UNSUPPORTED: u8 = 0x0D;
    pub const XML_DOCUMENT: u8 = 0x0F;
    pub const TYPED_OBJECT: u8 = 0x10;
    pub const AVMPLUS: u8 = 0x11;
}

/// How deep objects and arrays may nest before the input is called hostile.
const MAX_DEPTH: usize = 32;

/// One AMF0 value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// IEEE-754 double.
    Number(f64),
    /// `true`/`false`.
    Boolean(bool),
    /// UTF-8 text (long strings decode to this too; invalid UTF-8 is replaced).
    String(String),
    /// Anonymous object: ordered key/value pairs (typed objects decode to this).
    Object(Vec<(String, Value)>),
    /// `null`.
    Null,
    /// `undefined` (and the `unsupported` marker).
    Undefined,
    /// Associative array, as in `onMetaData`.
    EcmaArray(Vec<(String, Value)>),
    /// Dense array.
    StrictArray(Vec<Value>),
    /// Milliseconds since the epoch (the time zone field is dropped).
    Date(f64),
}

impl Value {
    /// A string value.
    pub fn string(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }

    /// An object from `(key, value)` pairs.
    pub fn object<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Object(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// The text of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number of a number value.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The value of `key` in an object or ECMA array (first match).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(p) | Value::EcmaArray(p) => {
                p.iter().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    /// Appends the encoding of this value to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Number(n) => {
                out.push(marker::NUMBER);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Value::Boolean(b) => out.extend_from_slice(&[marker::BOOLEAN, u8::from(*b)]),
            Value::String(s) => {
                if s.len() <= usize::from(u16::MAX) {
                    out.push(marker::STRING);
                    put_short_str(out, s);
                } else {
                    out.push(marker::LONG_STRING);
                    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(&s.as_bytes()[..len as usize]);
                }
            }
            Value::Object(pairs) => {
                out.push(marker::OBJECT);
                put_pairs(out, pairs);
            }
            Value::Null => out.push(marker::NULL),
            Value::Undefined => out.push(marker::UNDEFINED),
            Value::EcmaArray(pairs) => {
                out.push(marker::ECMA_ARRAY);
                let n = u32::try_from(pairs.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&n.to_be_bytes());
                put_pairs(out, pairs);
            }
            Value::StrictArray(items) => {
                out.push(marker::STRICT_ARRAY);
                let n = u32::try_from(items.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&n.to_be_bytes());
                for v in items.iter().take(n as usize) {
                    v.encode(out);
                }
            }
            Value::Date(ms) => {
                out.push(marker::DATE);
                out.extend_from_slice(&ms.to_be_bytes());
                out.extend_from_slice(&0i16.to_be_bytes());
            }
        }
    }
}

/// A short string without marker; keys longer than 65535 bytes are cut at a
/// character boundary (no key we write comes near that).
fn put_short_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn put_pairs(out: &mut Vec<u8>, pairs: &[(String, Value)]) {
    for (k, v) in pairs {
        put_short_str(out, k);
        v.encode(out);
    }
    out.extend_from_slice(&[0, 0, marker::OBJECT_END]);
}

/// Encodes several values back to back (a command or a data message body).
pub fn encode_all(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        v.encode(&mut out);
    }
    out
}

/// Decodes one value from the front of `input`, advancing it.
pub fn decode(input: &mut &[u8]) -> Result<Value, RtmpError> {
    Reader { buf: input }.value(0)
}

/// Decodes every value of `input` (a whole command or data message).
pub fn decode_all(mut input: &[u8]) -> Result<Vec<Value>, RtmpError> {
    let mut out = Vec::new();
    while !input.is_empty() {
        out.push(decode(&mut input)?);
    }
    Ok(out)
}

struct Reader<'a, 'b> {
    buf: &'b mut &'a [u8],
}

impl Reader<'_, '_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], RtmpError> {
        if self.buf.len() < n {
            return Err(RtmpError::protocol(format!(
                "AMF0 {what}: needs {n} bytes, {} left",
                self.buf.len()
            )));
        }
        let (head, rest) = self.buf.split_at(n);
        *self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &str) -> Result<u8, RtmpError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, RtmpError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, RtmpError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f64(&mut self, what: &str) -> Result<f64, RtmpError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_be_bytes(a))
    }

    fn text(&mut self, len: usize, what: &str) -> Result<String, RtmpError> {
        Ok(String::from_utf8_lossy(self.take(len, what)?).into_owned())
    }

    fn short_string(&mut self, what: &str) -> Result<String, RtmpError> {
        let n = self.u16(what)?;
        self.text(usize::from(n), what)
    }

    /// Key/value pairs up to the empty key + object-end marker.
    fn pairs(&mut self, depth: usize) -> Result<Vec<(String, Value)>, RtmpError> {
        let mut pairs = Vec::new();
        loop {
            let key = self.short_string("property name")?;
            if key.is_empty() && self.buf.first() == Some(&marker::OBJECT_END) {
                self.take(1, "object end")?;
                return Ok(pairs);
            }
            let v = self.value(depth + 1)?;
            pairs.push((key, v));
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, RtmpError> {
        if depth > MAX_DEPTH {
            return Err(RtmpError::protocol(format!(
                "AMF0 values nested deeper than {MAX_DEPTH}"
            )));
        }
        let m = self.u8("type marker")?;
        Ok(match m {
            marker::NUMBER => Value::Number(self.f64("number")?),
            marker::BOOLEAN => Value::Boolean(self.u8("boolean")? != 0),
            marker::STRING => Value::String(self.short_string("string")?),
            marker::OBJECT => Value::Object(self.pairs(depth)?),
            marker::NULL => Value::Null,
            marker::UNDEFINED | marker::UNSUPPORTED => Value::Undefined,
            marker::ECMA_ARRAY => {
                // The count is a hint (some writers put 0): the end marker decides.
                self.u32("ECMA array count")?;
                Value::EcmaArray(self.pairs(depth)?)
            }
            marker::STRICT_ARRAY => {
                let n = self.u32("strict array count")? as usize;
                if n > self.buf.len() {
                    return Err(RtmpError::protocol(format!(
                        "AMF0 strict array of {n} items in {} bytes",
                        self.buf.len()
                    )));
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::StrictArray(items)
            }
            marker::DATE => {
                let ms = self.f64("date")?;
                self.take(2, "date time zone")?;
                Value::Date(ms)
            }
            marker::LONG_STRING | marker::XML_DOCUMENT => {
                let n = self.u32("long string length")? as usize;
                Value::String(self.text(n, "long string")?)
            }
            marker::TYPED_OBJECT => {
                self.short_string("class name")?;
                Value::Object(self.pairs(depth)?)
            }
            marker::OBJECT_END => {
                return Err(RtmpError::protocol(
                    "AMF0 object end marker outside an object",
                ))
            }
            marker::REFERENCE => {
                return Err(RtmpError::protocol("AMF0 references are not supported"))
            }
            marker::AVMPLUS => return Err(RtmpError::protocol("AMF3 values are not supported")),
            other => {
                return Err(RtmpError::protocol(format!(
                    "unknown AMF0 type marker 0x{other:02x}"
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn round_trip(v: Value) {
        let bytes = encode_all(std::slice::from_ref(&v));
        assert_eq!(decode_all(&bytes).unwrap(), vec![v]);
    }

    #[test]
    fn round_trips() {
        round_trip(Value::Number(0.0));
        round_trip(Value::Number(-1.5e300));
        round_trip(Value::Boolean(true));
        round_trip(Value::Boolean(false));
        round_trip(Value::string(""));
        round_trip(Value::string("héllo"));
        round_trip(Value::string("x".repeat(70_000))); // long string
        round_trip(Value::Null);
        round_trip(Value::Undefined);
        round_trip(Value::Date(1_700_000_000_000.0));
        round_trip(Value::object([
            ("app", Value::string("live")),
            ("n", Value::Number(3.0)),
            ("inner", Value::object([("deep", Value::Null)])),
        ]));
        round_trip(Value::EcmaArray(vec![
            ("width".into(), Value::Number(1280.0)),
            ("stereo".into(), Value::Boolean(true)),
        ]));
        round_trip(Value::StrictArray(vec![
            Value::Number(1.0),
            Value::string("a"),
            Value::Null,
        ]));
        round_trip(Value::object(Vec::<(String, Value)>::new()));
    }

    #[test]
    fn known_encodings() {
        // (value, exact bytes)
        let table: Vec<(Value, Vec<u8>)> = vec![
            (Value::Number(1.0), vec![0, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]),
            (Value::Boolean(true), vec![1, 1]),
            (Value::string("ab"), vec![2, 0, 2, b'a', b'b']),
            (Value::Null, vec![5]),
            (
                Value::object([("a", Value::Null)]),
                vec![3, 0, 1, b'a', 5, 0, 0, 9],
            ),
            (Value::EcmaArray(vec![]), vec![8, 0, 0, 0, 0, 0, 0, 9]),
            (
                Value::StrictArray(vec![Value::Null]),
                vec![0x0a, 0, 0, 0, 1, 5],
            ),
        ];
        for (v, bytes) in table {
            assert_eq!(encode_all(std::slice::from_ref(&v)), bytes, "{v:?}");
        }
    }

    #[test]
    fn decodes_what_servers_send() {
        // A typed object, an ECMA array with a wrong count, XML as a long string.
        let mut b = vec![0x10, 0, 1, b'C', 0, 1, b'k', 2, 0, 1, b'v', 0, 0, 9];
        b.extend([8, 0, 0, 0, 9, 0, 1, b'x', 1, 0, 0, 0, 9]);
        b.extend([0x0f, 0, 0, 0, 2, b'<', b'>']);
        let v = decode_all(&b).unwrap();
        assert_eq!(v[0].get("k").and_then(Value::as_str), Some("v"));
        assert_eq!(v[1].get("x"), Some(&Value::Boolean(false)));
        assert_eq!(v[2].as_str(), Some("<>"));
    }

    #[test]
    fn hostile_input_is_a_protocol_error() {
        let mut deep = vec![];
        for _ in 0..100 {
            deep.extend([3, 0, 1, b'a']);
        }
        let table: Vec<Vec<u8>> = vec![
            vec![0, 1, 2],                      // short number
            vec![2, 0, 10, b'a'],               // short string
            vec![3, 0, 1, b'a', 5],             // object without end
            vec![9],                            // stray end marker
            vec![0x0a, 0xff, 0xff, 0xff, 0xff], // huge strict array
            vec![0x0c, 0xff, 0xff, 0xff, 0xff], // huge long string
            vec![0x11, 0],                      // AMF3
            vec![0x07, 0, 1],                   // reference
            vec![0x42],                         // unknown marker
            deep,
        ];
        for b in table {
            let e = decode_all(&b).expect_err(&format!("{b:?}"));
            assert_eq!(e.kind(), ErrorKind::Protocol, "{b:?}");
        }
    }
}
