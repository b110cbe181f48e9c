//! `murakumo bench` without the `murakumo` binary: parses the same flags and runs the bench.
//!
//! `cargo run --release -p murakumo-bench --example bench -- --server 127.0.0.1:11211 --prefill`

use clap::Parser;
use murakumo_bench::{BenchArgs, run};

/// The bench's flags, as a standalone command.
#[derive(Parser, Debug)]
#[command(about = "Load generator for any memcached endpoint")]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = run(cli.args).await?;
    if report.errors() > 0 {
        anyhow::bail!("{} errors", report.errors());
    }
    Ok(())
}
