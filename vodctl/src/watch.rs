//! `vodctl watch`: the fleet (or one task) redrawn every interval with plain
//! ANSI escapes until Ctrl-C. A failed read is shown in the frame and the
//! watch goes on.

use crate::api::Api;
use crate::view::{self, Task};
use crate::Exit;
use std::io::Write as _;
use std::time::Duration;

const HIDE_CURSOR: &str = "\x1b[?25l";
const SHOW_CURSOR: &str = "\x1b[?25h";
/// Cursor home, then clear the screen.
const CLEAR: &str = "\x1b[H\x1b[2J";

pub async fn run(api: &Api, api_url: &str, id: Option<&str>, every: Duration) -> Result<(), Exit> {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = std::io::stdout();
    let _ = write!(out, "{HIDE_CURSOR}");
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = tick.tick() => {}
        }
        let body = tokio::select! {
            _ = &mut ctrl_c => break,
            b = frame(api, id) => b,
        };
        let what = id.map_or("the fleet".to_owned(), |i| format!("task {i}"));
        let head = format!(
            "vodctl watch: {what} at {api_url} | {} | every {} s | Ctrl-C quits",
            view::utc(crate::now_ms()),
            every.as_secs()
        );
        let _ = write!(out, "{CLEAR}{head}\n\n{body}");
        let _ = out.flush();
    }
    let _ = writeln!(out, "{SHOW_CURSOR}");
    let _ = out.flush();
    Ok(())
}

/// The frame's body: the table or the task, or why it could not be read.
async fn frame(api: &Api, id: Option<&str>) -> String {
    if id.is_none() {
        let all = match api.all_tasks().await {
            Ok(Ok(all)) => all,
            Ok(Err(a)) => {
                let r = a.reply();
                return format!("error: the API answered {}: {}\n", r.http_code, r.msg);
            }
            Err(e) => return format!("error: {e:#}\n"),
        };
        return match all
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<Vec<Task>, _>>()
        {
            Ok(l) => format!("{}\n\n{}", view::summary(&l), view::table(&l)),
            Err(e) => format!("error: the API's answer is not a task list: {e}\n"),
        };
    }
    let a = match api.tasks(id).await {
        Ok(a) => a,
        Err(e) => return format!("error: {e:#}\n"),
    };
    if a.status == 404 && id.is_some() {
        return format!("no task {:?} (yet)\n", id.unwrap_or_default());
    }
    if a.status != 200 {
        let r = a.reply();
        return format!("error: the API answered {}: {}\n", r.http_code, r.msg);
    }
    match serde_json::from_slice::<Task>(&a.body) {
        Ok(t) => view::detail(&t, crate::now_ms()),
        Err(e) => format!("error: the API's answer is not a task: {e}\n"),
    }
}
