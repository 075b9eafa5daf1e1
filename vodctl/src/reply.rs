//! The seed's response shape, `{"http_code":"200","msg":"...","call_time":<ms>}`,
//! as both the HTTP API and AMQP replies carry it.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub http_code: u16,
    pub msg: String,
}

impl Reply {
    /// `http_code` may be a string (the seed) or a number.
    pub fn parse(body: &[u8]) -> Option<Reply> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let http_code = match v.get("http_code")? {
            Value::String(s) => s.trim().parse().ok()?,
            Value::Number(n) => u16::try_from(n.as_u64()?).ok()?,
            _ => return None,
        };
        let msg = v
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        Some(Reply { http_code, msg })
    }

    pub fn ok(&self) -> bool {
        self.http_code == 200
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_arrive_as_strings_or_numbers() {
        let r = Reply::parse(br#"{"http_code":"200","msg":"receive task success!","call_time":1}"#)
            .unwrap();
        assert_eq!(
            r,
            Reply {
                http_code: 200,
                msg: "receive task success!".into()
            }
        );
        assert!(r.ok());
        let r = Reply::parse(br#"{"http_code":400,"msg":"list[0].id: bad"}"#).unwrap();
        assert_eq!(r.http_code, 400);
        assert!(!r.ok());
        assert!(Reply::parse(b"<html>").is_none());
        assert!(Reply::parse(br#"{"tasks":[]}"#).is_none());
    }
}
