//! `orrery-jepsen`: runs fault-injection tests against real `orrery`
//! processes in a private network namespace, or checks a history file.
//!
//! ```text
//! orrery-jepsen test --workload register --nemesis partition --time-limit 60 --nodes 5
//! orrery-jepsen check --workload register jepsen/store/latest/history.jsonl
//! ```

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "orrery-jepsen",
    version,
    about = "Fault-injection tests for Orrery"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one test; exits 0 only when the result is valid.
    Test(Box<orrery_jepsen::runner::TestOpts>),
    /// Check an existing history file and print the checker's result.
    Check {
        /// register, set or queue.
        #[arg(long, default_value = "register")]
        workload: String,
        history: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Check { workload, history } => {
            match orrery_jepsen::check::check_file(&history, &workload) {
                Ok(v) => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&v).unwrap_or_else(|e| e.to_string())
                    );
                    i32::from(v.get("valid") != Some(&serde_json::Value::Bool(true)))
                }
                Err(e) => {
                    eprintln!("orrery-jepsen: {e}");
                    2
                }
            }
        }
        Cmd::Test(opts) => match orrery_jepsen::net::ensure_private_netns() {
            Err(e) => {
                eprintln!("orrery-jepsen: {e:#}");
                2
            }
            Ok(orrery_jepsen::net::Netns::ChildExited(code)) => code,
            Ok(orrery_jepsen::net::Netns::Ready) => run_test(*opts),
        },
    };
    std::process::exit(code);
}

fn run_test(opts: orrery_jepsen::runner::TestOpts) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("orrery-jepsen: starting the runtime: {e}");
            return 2;
        }
    };
    let code = match rt.block_on(orrery_jepsen::runner::run_test(opts)) {
        Ok(out) => {
            println!(
                "valid: {}  ({})",
                out.valid,
                out.dir.join("results.json").display()
            );
            if !out.leftover_processes.is_empty() || !out.processes_cleaned {
                eprintln!(
                    "orrery-jepsen: FAILED: node processes outlived the harness's stops: {}",
                    out.leftover_processes.join("; ")
                );
            }
            out.exit_code()
        }
        Err(e) => {
            eprintln!("orrery-jepsen: {e:#}");
            2
        }
    };
    // Tasks still blocked on an orreryctl call must not hold up the exit;
    // every node is already gone.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}
