//! The `dialback` binary: a thin CLI over the library.

use clap::{Parser, Subcommand};
use dialback::auth::Role;
use dialback::config::Config;

#[derive(Parser)]
#[command(name = "dialback", version, about = "Two-leg callback gateway for Asterisk (AMI)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (migrates the database first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Mint a JWT signed with the configured HS256 secret (demo and tests).
    Token {
        #[arg(long)]
        tenant: String,
        #[arg(long, value_enum)]
        role: Role,
        #[arg(long)]
        sub: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Run the PBX simulator: an AMI server that behaves like a real Asterisk 22 (no config needed).
    PbxSim(Box<dialback::pbx_sim::SimArgs>),
    /// Place a call to a company's number on any Asterisk (or the simulator): a return call to try.
    CallIn(dialback::pbx_sim::CallInArgs),
}

fn main() -> std::process::ExitCode {
    let command = match Cli::parse().command {
        // The simulator stands in for a PBX: it needs none of dialback's settings.
        Command::PbxSim(args) => {
            dialback::telemetry::init_logging(&std::env::var("DIALBACK_LOG_FORMAT").unwrap_or_else(|_| "auto".into()));
            let result = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(dialback::pbx_sim::run_cli(*args)));
            return exit(result);
        }
        Command::CallIn(args) => {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(dialback::pbx_sim::call_in(args)));
            return exit(result);
        }
        other => other,
    };
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("dialback: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Token { tenant, role, sub, ttl } => {
            dialback::auth::mint(&config, &tenant, role, &sub, ttl).map(|t| println!("{t}"))
        }
        Command::Migrate => run(config, |config| async move {
            let applied = dialback::store::migrations::run_url(&config.database_url, &config.db).await?;
            tracing::info!(?applied, "migrations done");
            Ok(())
        }),
        Command::Serve => run(config, |config| async move {
            let app = dialback::startup::Application::build(config).await?;
            app.run_until_stopped().await?;
            tracing::info!("stopped");
            Ok(())
        }),
        Command::PbxSim(_) | Command::CallIn(_) => Ok(()), // ran above, before any config was needed
    };
    exit(result)
}

fn exit(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("dialback: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run<F, Fut>(config: Config, job: F) -> anyhow::Result<()>
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    dialback::telemetry::init_logging(&config.log_format);
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(job(config))
}
