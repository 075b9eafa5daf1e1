//! vodfleet-coordinator: the fleet's control plane (DESIGN §4).
//!
//! Not built yet: intake, leases and resume records are the subject of the
//! fleet issue. Until then the binary only validates a command body, so the
//! contract in `vodfleet-proto` can be exercised from the shell.

use std::io::Read;

fn main() -> anyhow::Result<()> {
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body)?;
    match vodfleet_proto::parse_command(&body) {
        Ok(cmd) => {
            println!(
                "{}",
                serde_json::json!({"http_code": "200", "msg": "receive task success!", "warnings": cmd.warnings})
            );
            Ok(())
        }
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({"http_code": e.kind.http_code().to_string(), "msg": e.to_string()})
            );
            std::process::exit(2)
        }
    }
}
