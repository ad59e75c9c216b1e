//! `pbx-sim`: the PBX simulator as a program, for the demo and the benchmarks (the tests start it
//! in-process through the library). Needs none of dialback's settings.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "pbx-sim",
    version,
    about = "An AMI server that behaves like a real Asterisk 22 (dialback's demo and tests)"
)]
struct Cli {
    #[command(flatten)]
    args: dialback_pbx_sim::SimArgs,
}

fn main() -> std::process::ExitCode {
    let args = Cli::parse().args;
    dialback_logging::init_logging(&std::env::var("DIALBACK_LOG_FORMAT").unwrap_or_else(|_| "auto".into()));
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(dialback_pbx_sim::run_cli(args)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("pbx-sim: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
