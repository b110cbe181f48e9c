//! `murakumo`: one binary, one subcommand per role (DESIGN.md §2).

mod dev;

/// Every request allocates a few small buffers (keys, replies) and frees them on the same
/// thread; mimalloc's thread-local free lists make that cheaper than glibc's allocator
/// (callgrind, a pipeline-1 get load: 4,731 instructions per request with glibc, 4,427
/// with mimalloc).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// murakumo: a distributed, replicated, persistent memcached-compatible store.
#[derive(Debug, Parser)]
#[command(name = "murakumo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run murakumo locally: a node serving memcached (text, meta, binary) with data on disk.
    Dev(dev::DevArgs),
    /// Load-test any memcached endpoint, checking every reply.
    Bench(murakumo_bench::BenchArgs),
}

/// What is logged unless `RUST_LOG` says otherwise: our own progress, and only warnings
/// and errors from the storage engine, whose info lines (every memtable rotation, several a
/// second under a heavy write load) are for its developers rather than for an operator.
const DEFAULT_LOG_FILTER: &str = "info,fjall=warn,lsm_tree=warn";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        // Connections run on the node's own worker threads; this runtime only accepts,
        // waits for signals and shuts down.
        Command::Dev(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(dev::run(args)),
        Command::Bench(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let report = runtime.block_on(murakumo_bench::run(args))?;
            if report.errors() > 0 {
                anyhow::bail!("{} replies were wrong or missing", report.errors());
            }
            Ok(())
        }
    }
}
