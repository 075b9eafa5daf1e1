//! The whole body: size, JSON shape (objects where objects belong), `cmd`,
//! `type`, `transcallbackurl` and `list[]`.

use super::task::task;
use super::value::check_url;
use super::{Cmd, Command, TaskSpec, Warning, MAX_BODY_BYTES, MAX_TASKS};
use crate::error::{FieldError, FieldPath};
use crate::wire;
use serde::Deserialize;

/// Parses and validates a whole command body (the seed-001 JSON).
pub fn parse_command(body: &[u8]) -> Result<Command, FieldError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(FieldError::new(
            "",
            format!(
                "body is {} bytes; the limit is {MAX_BODY_BYTES}",
                body.len()
            ),
        ));
    }
    require_objects(body, true)?;
    let raw: wire::Body = deserialize(body)?;
    let root = FieldPath::root();
    let cmd = match raw.cmd.0.as_str() {
        "1" => Cmd::Start,
        "2" => Cmd::Terminate,
        "3" => Cmd::Update,
        "5" => Cmd::Resume,
        other => {
            return Err(root.key("cmd").err(format!(
                "unknown command {other:?}; expected \"1\" (start), \"2\" (terminate), \"3\" (update list) or \"5\" (resume)"
            )))
        }
    };
    if raw.kind != "video" {
        return Err(root
            .key("type")
            .err(format!("must be \"video\", got {:?}", raw.kind)));
    }
    let callback_url = match raw.transcallbackurl.as_deref() {
        None | Some("") => None,
        Some(u) => Some(check_url(
            &root.key("transcallbackurl"),
            u,
            &["http", "https"],
        )?),
    };
    let list = root.key("list");
    if raw.list.is_empty() {
        return Err(list.err("must name at least one task"));
    }
    if raw.list.len() > MAX_TASKS {
        return Err(list.err(format!(
            "has {} tasks; the limit is {MAX_TASKS}",
            raw.list.len()
        )));
    }
    let mut warnings = Vec::new();
    let mut tasks = Vec::with_capacity(raw.list.len());
    for (i, t) in raw.list.into_iter().enumerate() {
        let spec = task(cmd, &list.index(i), t, &mut warnings)?;
        if tasks.iter().any(|o: &TaskSpec| o.id == spec.id) {
            return Err(list
                .index(i)
                .key("id")
                .err(format!("task id {:?} appears twice", spec.id)));
        }
        tasks.push(spec);
    }
    Ok(Command {
        cmd,
        callback_url,
        tasks,
        warnings,
    })
}

/// Parses one `list[]` entry as a start command (what `vodfleet-worker play` reads).
pub fn parse_task_entry(body: &[u8]) -> Result<(TaskSpec, Vec<Warning>), FieldError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(FieldError::new(
            "",
            format!("body is over {MAX_BODY_BYTES} bytes"),
        ));
    }
    require_objects(body, false)?;
    let raw: wire::Task = deserialize(body)?;
    let mut warnings = Vec::new();
    let spec = task(Cmd::Start, &FieldPath::root(), raw, &mut warnings)?;
    Ok((spec, warnings))
}

/// serde's derived structs also accept JSON arrays by position; the contract is
/// objects with named fields, so refuse an array wherever an object belongs.
fn require_objects(body: &[u8], whole_body: bool) -> Result<(), FieldError> {
    use serde_json::Value;
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Ok(()); // syntax errors are reported, with their position, by `deserialize`
    };
    fn object(v: &Value, at: &FieldPath) -> Result<(), FieldError> {
        match v {
            Value::Object(_) | Value::Null => Ok(()),
            _ => Err(at.err("must be a JSON object")),
        }
    }
    fn each(v: &Value, key: &str, at: &FieldPath) -> Result<(), FieldError> {
        if let Some(Value::Array(items)) = v.get(key) {
            for (i, item) in items.iter().enumerate() {
                object(item, &at.key(key).index(i))?;
            }
        }
        Ok(())
    }
    let task = |t: &Value, at: &FieldPath| -> Result<(), FieldError> {
        object(t, at)?;
        each(t, "src", at)?;
        each(t, "forward", at)?;
        for k in ["extendParam", "fops"] {
            if let Some(x) = t.get(k) {
                object(x, &at.key(k))?;
            }
        }
        Ok(())
    };
    let root = FieldPath::root();
    if !whole_body {
        return task(&v, &root);
    }
    object(&v, &root)?;
    if let Some(Value::Array(list)) = v.get("list") {
        for (i, t) in list.iter().enumerate() {
            task(t, &root.key("list").index(i))?;
        }
    }
    Ok(())
}

fn deserialize<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, FieldError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let mut path = FieldPath::root();
        for seg in e.path().iter() {
            path = match seg {
                serde_path_to_error::Segment::Seq { index } => path.index(*index),
                serde_path_to_error::Segment::Map { key } => path.key(key),
                serde_path_to_error::Segment::Enum { variant } => path.key(variant),
                serde_path_to_error::Segment::Unknown => path,
            };
        }
        let inner = e.inner();
        let mut msg = inner.to_string();
        if let Some(cut) = msg.find(" at line ") {
            msg.truncate(cut);
        }
        if inner.is_syntax() || inner.is_eof() {
            return FieldError::new("", format!("body is not valid JSON: {msg}"));
        }
        // An unknown key is already the last segment of the path (it failed as a key).
        if msg.starts_with("unknown field `") {
            return path.err("unknown field");
        }
        // serde names a missing key only in the message: lift it into the path.
        if let Some(name) = msg
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            return path.key(name).err("is required");
        }
        path.err(msg)
    })?;
    // Like serde_json::from_slice: anything after the value (a second body, junk) is refused.
    de.end().map_err(|e| {
        let mut msg = e.to_string();
        if let Some(cut) = msg.find(" at line ") {
            msg.truncate(cut);
        }
        FieldError::new("", format!("body is not valid JSON: {msg}"))
    })?;
    Ok(value)
}
