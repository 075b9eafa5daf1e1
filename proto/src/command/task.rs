//! One `list[]` entry: id, sources, destinations, `extendParam`, `start`/`end`.

use super::cut::{parse_civil, parse_seconds, ranges};
use super::transcode::fops;
use super::value::{check_url, check_vod_name, timestamp, uint};
use super::{
    Cmd, Cut, ForwardSpec, SourceSpec, TaskSpec, Warning, Watermark, WatermarkPosition,
    MAX_FORWARDS, MAX_ID_LEN, MAX_LOOP, MAX_SOURCES,
};
use crate::error::{FieldError, FieldPath};
use crate::wire;

pub(super) fn task(
    cmd: Cmd,
    at: &FieldPath,
    t: wire::Task,
    warnings: &mut Vec<Warning>,
) -> Result<TaskSpec, FieldError> {
    let id = t.id.0;
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(at
            .key("id")
            .err(format!("must be 1 to {MAX_ID_LEN} characters")));
    }
    // Task ids become Redis keys and log fields: keep them to a safe alphabet.
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return Err(at
            .key("id")
            .err("may contain only letters, digits and - _ . :"));
    }

    let sources = match cmd {
        // cmd 2 carries `src: [{"url": ""}]` in the seed; it names no media.
        Cmd::Terminate => Vec::new(),
        // cmd 5 continues the recorded list; a `src` sent with it (the seed's example
        // has one) is checked but not used, and may be left out.
        Cmd::Resume if t.src.is_empty() => Vec::new(),
        _ => {
            let p = at.key("src");
            if t.src.is_empty() {
                return Err(p.err("must list at least one source"));
            }
            if t.src.len() > MAX_SOURCES {
                return Err(p.err(format!(
                    "has {} sources; the limit is {MAX_SOURCES}",
                    t.src.len()
                )));
            }
            t.src
                .into_iter()
                .enumerate()
                .map(|(i, s)| source(&p.index(i), s))
                .collect::<Result<_, _>>()?
        }
    };

    let fp = at.key("forward");
    if t.forward.is_empty() && cmd != Cmd::Update {
        return Err(fp.err("must list at least one destination"));
    }
    if t.forward.len() > MAX_FORWARDS {
        return Err(fp.err(format!(
            "has {} destinations; the limit is {MAX_FORWARDS}",
            t.forward.len()
        )));
    }
    let mut forwards: Vec<ForwardSpec> = Vec::with_capacity(t.forward.len());
    for (i, f) in t.forward.into_iter().enumerate() {
        let p = fp.index(i);
        let url = check_url(&p.key("url"), &f.url, &["rtmp", "rtmps"])?;
        if forwards.iter().any(|o| o.url == url) {
            return Err(p.key("url").err("the same destination is listed twice"));
        }
        let reset_url = match f.reset_url {
            None => None,
            Some(_) if cmd != Cmd::Resume => {
                return Err(p
                    .key("resetUrl")
                    .err("is only allowed with cmd \"5\" (resume)"))
            }
            Some(r) if r.is_empty() => None,
            Some(r) => Some(check_url(&p.key("resetUrl"), &r, &["rtmp", "rtmps"])?),
        };
        forwards.push(ForwardSpec { url, reset_url });
    }

    let ep = at.key("extendParam");
    let (mut loop_count, mut first_item, mut callback_file_info, mut wait_current) =
        (0, 0, false, false);
    if let Some(e) = t.extend_param {
        if cmd == Cmd::Resume {
            return Err(ep.err(
                "is not allowed with cmd \"5\": a resume continues with the recorded settings",
            ));
        }
        if cmd == Cmd::Terminate {
            return Err(ep.err("is not allowed with cmd \"2\" (terminate)"));
        }
        if let Some(v) = &e.loop_count {
            loop_count = uint(&ep.key("loop"), v, 0, MAX_LOOP)?;
        }
        if let Some(v) = &e.index {
            let n = sources.len().max(1) as u32;
            first_item = uint(&ep.key("index"), v, 1, n)? as usize - 1;
        }
        if let Some(v) = &e.call_back_file_info {
            callback_file_info = uint(&ep.key("callBackFileInfo"), v, 0, 1)? == 1;
        }
        if let Some(v) = &e.wait_crt_url_finish {
            if cmd != Cmd::Update {
                return Err(ep
                    .key("waitCrtUrlFinish")
                    .err("is only meaningful with cmd \"3\" (update list)"));
            }
            wait_current = uint(&ep.key("waitCrtUrlFinish"), v, 0, 1)? == 1;
        }
    }

    let (start_ms, end_ms) = (
        t.start
            .as_ref()
            .map(|v| timestamp(&at.key("start"), v))
            .transpose()?,
        t.end
            .as_ref()
            .map(|v| timestamp(&at.key("end"), v))
            .transpose()?,
    );
    if cmd == Cmd::Terminate && (start_ms.is_some() || end_ms.is_some()) {
        let f = if start_ms.is_some() { "start" } else { "end" };
        return Err(at.key(f).err("is not allowed with cmd \"2\" (terminate)"));
    }
    if let (Some(s), Some(e)) = (start_ms, end_ms) {
        if e <= s {
            return Err(at.key("end").err("must be after start"));
        }
    }

    let transcode = match t.fops {
        None => None,
        Some(_) if cmd == Cmd::Resume => {
            return Err(at
                .key("fops")
                .err("is not allowed with cmd \"5\": a resume cannot change transcoding"))
        }
        Some(_) if cmd == Cmd::Terminate => {
            return Err(at
                .key("fops")
                .err("is not allowed with cmd \"2\" (terminate)"))
        }
        Some(f) => fops(&at.key("fops"), f, warnings)?,
    };
    Ok(TaskSpec {
        id,
        sources,
        forwards,
        loop_count,
        first_item,
        callback_file_info,
        wait_current,
        start_ms,
        end_ms,
        transcode,
    })
}

fn source(at: &FieldPath, s: wire::Src) -> Result<SourceSpec, FieldError> {
    let url = check_url(
        &at.key("url"),
        &s.url,
        &["http", "https", "rtsp", "vod", "s3"],
    )?;
    if let Some(name) = url.strip_prefix("vod://") {
        check_vod_name(&at.key("url"), name)?;
    }
    if url.starts_with("s3://") && url::Url::parse(&url).is_ok_and(|u| u.path().len() <= 1) {
        return Err(at
            .key("url")
            .err("s3:// URLs name a bucket and an object: s3://BUCKET/KEY"));
    }
    let cut = match (s.relofftime.as_deref(), s.absofftime.as_deref()) {
        (Some(r), _) if !r.is_empty() => {
            Cut::Relative(ranges(&at.key("relofftime"), r, parse_seconds)?)
        }
        (_, Some(a)) if !a.is_empty() => {
            Cut::Absolute(ranges(&at.key("absofftime"), a, parse_civil)?)
        }
        _ => Cut::Whole,
    };
    let watermark = match (s.wmimage, s.wmposition) {
        (None, None) => None,
        (Some(img), pos) => {
            let image_url = check_url(&at.key("wmimage"), &img, &["http", "https", "vod"])?;
            let position = match pos.as_deref() {
                None => WatermarkPosition::TopLeft,
                Some(p) => watermark_position(p).ok_or_else(|| {
                    at.key("wmposition").err(format!(
                        "unknown position {p:?}; expected one of TOP_LEFT, TOP_CENTER, TOP_RIGHT, CENTER_LEFT, CENTER, CENTER_RIGHT, BOTTOM_LEFT, BOTTOM_CENTER, BOTTOM_RIGHT"
                    ))
                })?,
            };
            Some(Watermark {
                image_url,
                position,
            })
        }
        (None, Some(_)) => {
            return Err(at
                .key("wmimage")
                .err("is required when wmposition is given"))
        }
    };
    Ok(SourceSpec {
        url,
        cut,
        watermark,
    })
}

fn watermark_position(p: &str) -> Option<WatermarkPosition> {
    use WatermarkPosition::*;
    Some(match p {
        "TOP_LEFT" => TopLeft,
        "TOP_CENTER" => TopCenter,
        "TOP_RIGHT" => TopRight,
        "CENTER_LEFT" => CenterLeft,
        "CENTER" => Center,
        "CENTER_RIGHT" => CenterRight,
        "BOTTOM_LEFT" => BottomLeft,
        "BOTTOM_CENTER" => BottomCenter,
        "BOTTOM_RIGHT" => BottomRight,
        _ => return None,
    })
}
