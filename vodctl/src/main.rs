//! vodctl: the vodfleet CLI. `vodctl --help` and docs/vodctl.md
//! say how to use it.
//!
//! Every command body is checked locally with `vodfleet_proto::parse_command`
//! before it is sent, so a bad command never leaves the machine and the error
//! names the field. Exit status: 0 accepted, 1 refused / unreachable / failed
//! the local check, 2 usage.

mod amqp;
mod api;
mod body;
mod cli;
mod reply;
mod view;
mod watch;

use clap::Parser;
use cli::{Cli, Sub, Via};
use reply::Reply;
use std::process::ExitCode;
use std::time::Duration;

/// Why vodctl stops short of success; `main` prints the message and maps the exit status.
#[derive(Debug)]
pub enum Exit {
    /// Exit 2: the command line or the configuration is wrong.
    Usage(String),
    /// Exit 1: the fleet refused, could not be reached, or the local check failed.
    Failed(String),
}

fn failed(e: anyhow::Error) -> Exit {
    Exit::Failed(format!("{e:#}"))
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An id for one invocation's message: `vodctl-<pid>-<ns since epoch>`.
pub fn unique_id() -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("vodctl-{}-{ns}", std::process::id())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            // lapin reports the runtime closing under its IO thread as errors when
            // a short-lived CLI exits; they say nothing about the command's outcome.
            tracing_subscriber::EnvFilter::try_from_env("VODFLEET_LOG")
                .unwrap_or_else(|_| "warn,lapin=off,pinky_swear=off".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Usage errors exit 2 here (clap's convention), --help and --version 0.
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vodctl: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit::Failed(msg)) => {
            eprintln!("vodctl: {msg}");
            ExitCode::from(1)
        }
        Err(Exit::Usage(msg)) => {
            eprintln!("vodctl: {msg}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Exit> {
    let body = match &cli.cmd {
        Sub::Start(a) => match &a.file {
            Some(path) => std::fs::read(path)
                .map_err(|e| Exit::Usage(format!("--file {}: {e}", path.display())))?,
            None => to_bytes(body::start(a).map_err(Exit::Usage)?),
        },
        Sub::Stop(a) => to_bytes(body::stop(a)),
        Sub::Update(a) => to_bytes(body::update(a).map_err(Exit::Usage)?),
        Sub::Resume(a) => to_bytes(body::resume(a)),
        Sub::Status(a) => {
            reads_via_http(&cli)?;
            return status(&http_api(&cli)?, a.id.as_deref(), a.json).await;
        }
        Sub::Watch(a) => {
            reads_via_http(&cli)?;
            let api = http_api(&cli)?;
            let every = Duration::from_secs(a.interval);
            return watch::run(&api, &cli.api_url, a.id.as_deref(), every).await;
        }
    };
    send(&cli, &body).await
}

fn to_bytes(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&v).expect("a JSON value serializes")
}

fn reads_via_http(cli: &Cli) -> Result<(), Exit> {
    match cli.via {
        Via::Http => Ok(()),
        Via::Amqp => Err(Exit::Usage(
            "status and watch read the HTTP API; --via amqp is for start, stop, update and resume"
                .into(),
        )),
    }
}

/// The first key of `VODFLEET_API_KEYS`; none (unsigned requests) when unset.
fn api_key() -> Result<Option<api::Key>, Exit> {
    let Some(raw) = std::env::var("VODFLEET_API_KEYS")
        .ok()
        .filter(|v| !v.trim().is_empty())
    else {
        tracing::debug!("VODFLEET_API_KEYS is not set: requests go unsigned");
        return Ok(None);
    };
    let keys = vodfleet_proto::sign::parse_keys(&raw)
        .map_err(|e| Exit::Usage(format!("VODFLEET_API_KEYS: {e}")))?;
    Ok(keys
        .into_iter()
        .next()
        .map(|(id, secret)| api::Key { id, secret }))
}

fn http_api(cli: &Cli) -> Result<api::Api, Exit> {
    if !(cli.api_url.starts_with("http://") || cli.api_url.starts_with("https://")) {
        return Err(Exit::Usage(format!(
            "--api-url / VODFLEET_API_URL {:?} is not an http(s) URL",
            cli.api_url
        )));
    }
    api::Api::new(&cli.api_url, api_key()?).map_err(failed)
}

/// `VODFLEET_MIN_WINDOW_MS`, as the coordinator reads it.
fn min_window_ms() -> Result<u64, Exit> {
    match std::env::var("VODFLEET_MIN_WINDOW_MS") {
        Err(_) => Ok(vodfleet_proto::command::DEFAULT_MIN_WINDOW_MS),
        Ok(v) => v.trim().parse().map_err(|_| {
            Exit::Usage(format!(
                "VODFLEET_MIN_WINDOW_MS={v:?} is not a whole number of milliseconds"
            ))
        }),
    }
}

/// Checks a body locally, then sends it the chosen way and reports the answer.
async fn send(cli: &Cli, body: &[u8]) -> Result<(), Exit> {
    let checked = body::check(body, now_ms(), min_window_ms()?)
        .map_err(|e| Exit::Failed(format!("{e} (checked locally; nothing was sent)")))?;
    for w in &checked.warnings {
        eprintln!("vodctl: warning: {}: {}", w.field, w.message);
    }
    let reply = match cli.via {
        Via::Http => http_api(cli)?.command(body).await.map_err(failed)?.reply(),
        Via::Amqp => {
            let url = std::env::var("VODFLEET_AMQP_URL")
                .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
            amqp::send(&url, body).await.map_err(failed)?
        }
    };
    accepted(reply)
}

/// 200 → the reply on stdout; anything else → an error naming what the server named.
fn accepted(r: Reply) -> Result<(), Exit> {
    if r.ok() {
        println!("{} {}", r.http_code, r.msg);
        return Ok(());
    }
    Err(refused(r))
}

fn refused(r: Reply) -> Exit {
    let hint = if r.http_code == 403 && r.msg.contains("not signed") {
        " (set VODFLEET_API_KEYS=id:secret)"
    } else {
        ""
    };
    Exit::Failed(format!("refused ({}): {}{hint}", r.http_code, r.msg))
}

async fn status(api: &api::Api, id: Option<&str>, json: bool) -> Result<(), Exit> {
    let bad =
        |e: serde_json::Error| Exit::Failed(format!("the API's answer is not a task list: {e}"));
    let Some(id) = id else {
        let tasks = match api.all_tasks().await.map_err(failed)? {
            Ok(t) => t,
            Err(a) => return Err(refused(a.reply())),
        };
        if json {
            let v = serde_json::json!({ "tasks": tasks });
            println!(
                "{}",
                serde_json::to_string_pretty(&v).expect("a JSON value serializes")
            );
        } else {
            let l: Vec<view::Task> = tasks
                .into_iter()
                .map(serde_json::from_value)
                .collect::<Result<_, _>>()
                .map_err(bad)?;
            print!("{}", view::table(&l));
        }
        return Ok(());
    };
    let a = api.tasks(Some(id)).await.map_err(failed)?;
    if a.status != 200 {
        return Err(refused(a.reply()));
    }
    if json {
        let v: serde_json::Value = serde_json::from_slice(&a.body).map_err(bad)?;
        println!(
            "{}",
            serde_json::to_string_pretty(&v).expect("a JSON value serializes")
        );
        return Ok(());
    }
    let t: view::Task = serde_json::from_slice(&a.body).map_err(bad)?;
    print!("{}", view::detail(&t, now_ms()));
    Ok(())
}
