//! The operations tools (`scripts/k8s-tools.sh`) and running them with a deadline.

use crate::poll;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The repository's root (the parent of `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// What a tool printed and how it exited.
#[derive(Debug)]
pub struct ToolOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    /// stdout and stderr together, for messages.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `program args` (stdin from `stdin`, if given) and waits at most
/// `timeout` (then kills it and panics).
pub fn run_tool(
    program: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> ToolOutput {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(repo_root())
        .stdout(fs::File::create(&out_path).expect("create out"))
        .stderr(fs::File::create(&err_path).expect("create err"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input).expect("write stdin");
    }
    let status = poll(timeout, || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{} {args:?} still running after {timeout:?}; killed it\n{}",
            program.display(),
            fs::read_to_string(&err_path).unwrap_or_default()
        );
    };
    ToolOutput {
        success: status.success(),
        code: status.code(),
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// The directory holding helm, kubectl, kubernetes-validate, k8s-python3,
/// prometheus and promtool (fetched by `scripts/k8s-tools.sh` on first use).
pub fn tools() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = repo_root().join("scripts/k8s-tools.sh");
        let out = run_tool(
            Path::new("bash"),
            &[script.to_str().expect("utf-8 path")],
            None,
            Duration::from_secs(600),
        );
        assert!(out.success, "scripts/k8s-tools.sh failed:\n{}", out.text());
        let dir = PathBuf::from(out.stdout.trim().lines().last().unwrap_or_default());
        for t in [
            "helm",
            "kubectl",
            "kubernetes-validate",
            "k8s-python3",
            "prometheus",
            "promtool",
        ] {
            assert!(
                dir.join(t).exists(),
                "{t} missing from {} after scripts/k8s-tools.sh",
                dir.display()
            );
        }
        dir
    })
}

/// Runs one of the [`tools`] with a deadline.
pub fn tool(name: &str, args: &[&str], timeout: Duration) -> ToolOutput {
    run_tool(&tools().join(name), args, None, timeout)
}
