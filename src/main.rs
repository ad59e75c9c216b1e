//! The `dialback` binary: a thin CLI over the library.

use clap::{Parser, Subcommand};
use dialback::auth::Role;
use dialback::config::Config;

/// An allocator made for many threads allocating and freeing small buffers: glibc's malloc and
/// free took a fifth of dialback's CPU with a webhook endpoint on, and with mimalloc a callback
/// costs dialback about a tenth less CPU, for a little more memory (BENCHMARKS.md, "The write
/// path").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Mint a JWT signed with the deployment's HS256 secret: the operator's, and the demo's and
    /// tests' (a company with an issuer of its own accepts only that issuer's tokens).
    Token {
        /// The company the token acts for (none for the operator).
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long, value_enum)]
        role: Role,
        #[arg(long)]
        sub: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// The operator's work on companies (as `/v1/operator/companies`, straight on the database).
    #[command(subcommand)]
    Company(CompanyCommand),
    /// Recordings kept by this host.
    #[command(subcommand)]
    Recordings(RecordingsCommand),
    /// Place a call to a company's number on any Asterisk (or the simulator): a return call to try.
    CallIn(dialback::call_in::CallInArgs),
}

#[derive(Subcommand)]
enum CompanyCommand {
    /// Every company, as JSON.
    List,
    /// Create a company or replace its name, state and issuer; prints it as JSON (with its HS256
    /// secret, once, when `--hs256` makes one).
    Put {
        id: String,
        #[arg(long)]
        name: String,
        /// The `iss` its tokens carry; without it the company has no issuer of its own.
        #[arg(long)]
        iss: Option<String>,
        /// Its identity provider's JWKS URL.
        #[arg(long)]
        jwks_url: Option<String>,
        /// The PEM CA that signed the JWKS server's certificate, when not publicly trusted.
        #[arg(long, requires = "jwks_url")]
        ca_file: Option<std::path::PathBuf>,
        /// A PEM public key (RS256, ES256, EdDSA) its tokens are signed with; repeatable.
        #[arg(long)]
        public_key: Vec<std::path::PathBuf>,
        /// HS256 tokens signed with a secret of the company's own, made now.
        #[arg(long)]
        hs256: bool,
        #[arg(long)]
        suspended: bool,
    },
    /// Refuse the company's requests (its calls in flight end normally).
    Suspend { id: String },
    /// Let a suspended company act again.
    Resume { id: String },
    /// Remove a suspended company with no call in progress, and everything of it.
    Remove { id: String },
}

#[derive(Subcommand)]
enum RecordingsCommand {
    /// Copy the recordings under recordings_dir (DIALBACK_RECORDINGS_DIR) to the object store
    /// recordings.url (DIALBACK_RECORDINGS__URL) names, verifying each by its SHA-256; run it again
    /// to resume. Progress on stderr.
    Migrate,
}

fn main() -> std::process::ExitCode {
    let command = match Cli::parse().command {
        // A call placed on a PBX needs none of dialback's settings.
        Command::CallIn(args) => {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(dialback::call_in::call_in(args)));
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
            if tenant.is_empty() != (role == Role::Operator) {
                eprintln!(
                    "dialback: --tenant names the company a courier or admin token acts for; an operator's names none"
                );
                return std::process::ExitCode::from(2);
            }
            dialback::auth::mint(&config, &tenant, role, &sub, ttl).map(|t| println!("{t}"))
        }
        // Its answer is what it prints on stdout (JSON), so no log lines go there.
        Command::Recordings(RecordingsCommand::Migrate) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(migrate_recordings(config))),
        Command::Company(command) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(company(config, command))),
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
        Command::CallIn(_) => Ok(()), // ran above, before any config was needed
    };
    exit(result)
}

async fn migrate_recordings(config: Config) -> anyhow::Result<()> {
    use dialback::recordings::{migrate, s3::S3Storage, storage::FsStorage};
    let dir = config
        .recordings_dir
        .clone()
        .ok_or_else(|| anyhow::anyhow!("recordings_dir (DIALBACK_RECORDINGS_DIR) names the directory to copy from"))?;
    anyhow::ensure!(
        !config.recordings.url.is_empty(),
        "recordings.url (DIALBACK_RECORDINGS__URL, s3://BUCKET/PREFIX) names the object store to copy to"
    );
    let to = S3Storage::open(&config.recordings)?;
    to.check(std::time::Duration::from_secs(10)).await.map_err(anyhow::Error::msg)?;
    dialback::store::migrations::run_url(&config.database_url, &config.db).await?;
    let db = dialback::store::pool(&config.database_url, &config.db)?;
    eprintln!("copying the recordings under {} to {}", dir.display(), config.recordings.url);
    let done = migrate::migrate(&db, &FsStorage::new(dir), &to, |n, so_far, key, what| {
        eprintln!("[{n}/{}] {key}: {what} ({} MB copied)", so_far.total, so_far.bytes / 1_000_000);
    })
    .await?;
    eprintln!(
        "done: {} recordings, {} copied ({} bytes), {} already there, {} not on this host",
        done.total, done.copied, done.bytes, done.present, done.missing
    );
    Ok(())
}

fn print(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON serialises"));
}

async fn company(config: Config, command: CompanyCommand) -> anyhow::Result<()> {
    use dialback::domain::company::{CompanyInput, CompanyState, Issuer, TenantId};
    dialback::store::migrations::run_url(&config.database_url, &config.db).await?;
    let db = dialback::store::pool(&config.database_url, &config.db)?;
    let verifier = std::sync::Arc::new(dialback::auth::Verifier::new(&config, Some(db.clone()))?);
    let storage = dialback::recordings::s3::open_storage(&config).await?;
    let companies =
        dialback::companies::Companies::new(db, config.secrets_key(), verifier, config.issuers.global_keys, storage);
    let set_state = |id: String, state: CompanyState| {
        let companies = &companies;
        async move {
            let id = TenantId::parse("company id", &id)?;
            let now = companies.get(&id).await?;
            let input = CompanyInput { name: now.name.unwrap_or_else(|| id.to_string()), state, issuer: now.issuer };
            anyhow::Ok(companies.put(&id, &input).await?.0)
        }
    };
    match command {
        CompanyCommand::List => print(&companies.list().await?),
        CompanyCommand::Put { id, name, iss, jwks_url, ca_file, public_key, hs256, suspended } => {
            let read = |path: &std::path::Path| {
                std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))
            };
            let issuer = match iss {
                None if jwks_url.is_some() || !public_key.is_empty() || hs256 => {
                    anyhow::bail!("--jwks-url, --public-key and --hs256 are an issuer's keys: give its --iss too")
                }
                None => None,
                Some(iss) => Some(Issuer {
                    iss,
                    jwks_url,
                    public_keys: public_key.iter().map(|p| read(p)).collect::<Result<_, _>>()?,
                    ca_pem: ca_file.as_deref().map(read).transpose()?,
                    hs256,
                }),
            };
            let state = if suspended { CompanyState::Suspended } else { CompanyState::Active };
            let input = CompanyInput { name, state, issuer };
            print(&companies.put(&TenantId::parse("company id", &id)?, &input).await?.0)
        }
        CompanyCommand::Suspend { id } => print(&set_state(id, CompanyState::Suspended).await?),
        CompanyCommand::Resume { id } => print(&set_state(id, CompanyState::Active).await?),
        CompanyCommand::Remove { id } => {
            companies.remove(&TenantId::parse("company id", &id)?).await?;
            println!("company {id} removed");
        }
    }
    Ok(())
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
