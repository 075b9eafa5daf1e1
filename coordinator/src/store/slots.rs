//! Which Redis Cluster master holds a key: the hash slot of a key (CRC16 of
//! its hash tag, as Redis computes it) and the cluster's slot ranges, read
//! with `CLUSTER SLOTS`. Used only to group a heartbeat's renewals into one
//! pipeline per master ([`super::renew`]); every other command is routed by
//! the cluster client itself. A stale map costs a fallback, never a wrong
//! write: a master answers MOVED for a slot it does not hold.

use redis::Value;
use std::time::{Duration, Instant};

/// Redis Cluster's number of hash slots.
const SLOTS: u16 = 16_384;

/// The hash slot of `key`: CRC16 (XMODEM) of the part between the first `{`
/// and the next `}` when that part is not empty, else of the whole key.
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    // The cluster client's own CRC (already in the tree through `redis`).
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % SLOTS
}

/// The masters' slot ranges, as `CLUSTER SLOTS` gave them.
#[derive(Debug, Default)]
pub struct SlotMap {
    /// `(first, last, master address)`, sorted by `first`.
    ranges: Vec<(u16, u16, String)>,
    /// When it was read; `None` before the first read.
    read_at: Option<Instant>,
}

impl SlotMap {
    /// Parses a `CLUSTER SLOTS` reply: `[[first, last, [ip, port, ...], replicas...], ...]`.
    pub fn parse(reply: &Value) -> Option<SlotMap> {
        let Value::Array(entries) = reply else {
            return None;
        };
        let mut ranges = Vec::with_capacity(entries.len());
        for e in entries {
            let Value::Array(f) = e else { return None };
            let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(master))) =
                (f.first(), f.get(1), f.get(2))
            else {
                return None;
            };
            let host = match master.first()? {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            let Some(Value::Int(port)) = master.get(1) else {
                return None;
            };
            ranges.push((
                u16::try_from(*first).ok()?,
                u16::try_from(*last).ok()?,
                format!("{host}:{port}"),
            ));
        }
        ranges.sort_by_key(|r| r.0);
        Some(SlotMap {
            ranges,
            read_at: Some(Instant::now()),
        })
    }

    /// The master that holds `slot`, if the map covers it.
    pub fn master(&self, slot: u16) -> Option<&str> {
        let i = self
            .ranges
            .partition_point(|r| r.0 <= slot)
            .checked_sub(1)?;
        let (_, last, addr) = &self.ranges[i];
        (slot <= *last).then_some(addr.as_str())
    }

    /// Whether it should be read again: never read, or older than `age`.
    pub fn older_than(&self, age: Duration) -> bool {
        self.read_at.is_none_or(|t| t.elapsed() > age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"123456789"), 0x31c3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_ne!(
            slot(b"foo{}{bar}"),
            slot(b"bar"),
            "an empty tag hashes the whole key"
        );
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
    }

    #[test]
    fn a_map_finds_each_slots_master() {
        let node =
            |ip: &str, port| Value::Array(vec![Value::BulkString(ip.into()), Value::Int(port)]);
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                node("127.0.0.1", 7001),
                node("127.0.0.1", 7004),
            ]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 7000),
            ]),
            Value::Array(vec![
                Value::Int(10923),
                Value::Int(16383),
                node("127.0.0.1", 7002),
            ]),
        ]);
        let map = SlotMap::parse(&reply).expect("parses");
        assert_eq!(map.master(0), Some("127.0.0.1:7000"));
        assert_eq!(map.master(5461), Some("127.0.0.1:7001"));
        assert_eq!(map.master(16383), Some("127.0.0.1:7002"));
        assert!(!map.older_than(Duration::from_secs(5)));
        assert!(SlotMap::default().older_than(Duration::from_secs(5)));
        assert_eq!(SlotMap::default().master(1), None);
        assert!(SlotMap::parse(&Value::Int(1)).is_none());
    }
}
