//! The command body exactly as producers send it (seed 001), before validation.
//!
//! Every struct denies unknown fields so a typo is refused by name instead of
//! being silently ignored. Numeric fields go through [`Lenient`], because the
//! seed itself sends `"loop": "1"` in one place and `13-digit` integers in another.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;

/// A scalar that producers may send as a JSON string or a JSON number.
/// It is kept as text here; [`crate::command`] parses it with the field's own rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lenient(pub String);

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Lenient;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Lenient, E> {
                Ok(Lenient(v.trim().to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Lenient, E> {
                Ok(Lenient(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Lenient, E> {
                Ok(Lenient(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Lenient, E> {
                Ok(Lenient(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    pub transcallbackurl: Option<String>,
    pub cmd: Lenient,
    #[serde(rename = "type")]
    pub kind: String,
    pub list: Vec<Task>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    pub id: Lenient,
    #[serde(default)]
    pub src: Vec<Src>,
    #[serde(default)]
    pub forward: Vec<Forward>,
    #[serde(rename = "extendParam")]
    pub extend_param: Option<ExtendParam>,
    pub start: Option<Lenient>,
    pub end: Option<Lenient>,
    pub fops: Option<Fops>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Src {
    pub url: String,
    pub absofftime: Option<String>,
    pub relofftime: Option<String>,
    pub wmimage: Option<String>,
    pub wmposition: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    pub url: String,
    #[serde(rename = "resetUrl")]
    pub reset_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendParam {
    #[serde(rename = "loop")]
    pub loop_count: Option<Lenient>,
    pub index: Option<Lenient>,
    #[serde(rename = "callBackFileInfo")]
    pub call_back_file_info: Option<Lenient>,
    #[serde(rename = "waitCrtUrlFinish")]
    pub wait_crt_url_finish: Option<Lenient>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fops {
    pub bps: Option<Lenient>,
    pub res: Option<Lenient>,
    pub fps: Option<Lenient>,
    pub vcodec: Option<String>,
    pub acodec: Option<String>,
    pub preset: Option<String>,
}
