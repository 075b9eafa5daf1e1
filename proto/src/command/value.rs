//! Single values: bounded whole numbers, 13-digit timestamps, URLs, `vod://` names.

use super::MAX_URL_LEN;
use crate::error::{FieldError, FieldPath};
use crate::wire::Lenient;

pub(super) fn uint(at: &FieldPath, v: &Lenient, min: u32, max: u32) -> Result<u32, FieldError> {
    let n: u64 =
        v.0.parse()
            .map_err(|_| at.err(format!("{:?} is not a whole number", v.0)))?;
    if n < min as u64 || n > max as u64 {
        return Err(at.err(format!("{n} is out of range {min}..={max}")));
    }
    Ok(n as u32)
}

pub(super) fn timestamp(at: &FieldPath, v: &Lenient) -> Result<u64, FieldError> {
    if v.0.len() != 13 || !v.0.bytes().all(|b| b.is_ascii_digit()) {
        return Err(at.err(format!(
            "{:?} is not a 13-digit Unix timestamp in milliseconds",
            v.0
        )));
    }
    Ok(v.0.parse().expect("13 digits fit in u64"))
}

pub(super) fn check_url(at: &FieldPath, raw: &str, schemes: &[&str]) -> Result<String, FieldError> {
    if raw.is_empty() {
        return Err(at.err("must not be empty"));
    }
    if raw.len() > MAX_URL_LEN {
        return Err(at.err(format!(
            "is {} characters; the limit is {MAX_URL_LEN}",
            raw.len()
        )));
    }
    let u = url::Url::parse(raw).map_err(|e| at.err(format!("is not a URL: {e}")))?;
    if !schemes.contains(&u.scheme()) {
        return Err(at.err(format!(
            "scheme {:?} is not supported here; expected one of {}",
            u.scheme(),
            schemes.join(", ")
        )));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(at.err("has no host"));
    }
    Ok(raw.to_owned())
}

/// `vod://NAME` names a file under the media root; nothing may climb out of it.
pub(super) fn check_vod_name(at: &FieldPath, name: &str) -> Result<(), FieldError> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.contains('\\')
        || name.contains('\0')
        || name.contains('?')
        || name.contains('%')
        || name
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..");
    if bad {
        return Err(at.err("vod:// names must be a relative path inside the media root (no '..', '%', empty segments or leading '/')"));
    }
    Ok(())
}
