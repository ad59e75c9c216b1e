//! `dialback-bench`: the load generator and helpers that `scripts/bench` drives (BENCHMARKS.md says
//! what each figure means). An example target, so `cargo test` does not build it and it adds no
//! dependency: it uses the library's own codec, Originate, JWT minting and settings.
//!
//! - `seed`: a tenant (PBX settings, couriers, their orders) through the admin API;
//! - `load`: HTTP callbacks at fixed concurrency levels, then the wait for terminal statuses;
//! - `rate`: HTTP callbacks at a fixed rate (open loop) to one process or several, then the wait for
//!   terminal statuses;
//! - `webhooks`: the same with a webhook endpoint on the tenant, and what its receiver got;
//! - `streams`: many live streams of callbacks: their memory, and one event's fan-out;
//! - `agi`: return-call route decisions over FastAGI at a fixed rate;
//! - `tap`: tap-to-originate at a fixed rate, joined with the simulator's `--originate-log`;
//! - `baseline`, `baseline-tap`: the same, the per-call-login way, straight to AMI;
//! - `ceiling`: one persistent AMI connection, pipelined Originates;
//! - `proxy`: a TCP delay proxy (a WAN between an AMI client and the simulator);
//! - `scale`: N idle tenant connections: memory, open files, latency;
//! - `recordings`: a recordings sync over FTP into the server's storage: files and bytes per second;
//! - `report`: `bench/results.json` and the figures section of BENCHMARKS.md.
//!
//! Each measuring subcommand writes a flat JSON object of figures to `--out`.

mod agi;
mod ami;
mod dashboard;
mod events;
mod failover;
mod http;
mod load;
mod proxy;
mod recordings;
mod report;
mod scale;
mod stats;
mod switch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::ami::{AmiTarget, LoginPerCall};
use crate::load::{Api, ApiTapper};
use crate::stats::{Figures, Watched};

#[derive(Parser)]
#[command(name = "dialback-bench", about = "Load generator and tools for scripts/bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the figures go and how they are named.
#[derive(Args)]
struct Output {
    /// Write the figures to this JSON file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Put this in front of every figure's name (e.g. `wan_`).
    #[arg(long, default_value = "")]
    prefix: String,
}

/// The API under test; its settings come from the same `DIALBACK_*` variables as the server's.
#[derive(Args)]
struct ApiArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    api: SocketAddr,
    #[arg(long, default_value = "bench")]
    tenant: String,
    /// Couriers of the tenant (each with one order).
    #[arg(long, default_value_t = 1000)]
    couriers: usize,
}

#[derive(Args)]
struct AmiArgs {
    /// The simulator, or a delay proxy in front of it.
    #[arg(long)]
    ami: SocketAddr,
    #[arg(long, default_value = "bench:bench", value_name = "USER:SECRET")]
    ami_user: String,
}

impl AmiArgs {
    fn target(&self) -> anyhow::Result<AmiTarget> {
        let (username, secret) =
            self.ami_user.split_once(':').ok_or_else(|| anyhow::anyhow!("--ami-user USER:SECRET"))?;
        Ok(AmiTarget { addr: self.ami, username: username.into(), secret: secret.into() })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create a tenant: PBX settings (the simulator at --pbx-port), couriers, one order each.
    Seed {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        pbx_port: u16,
        #[arg(long, default_value = "from-courier")]
        context: String,
        /// How dialback reaches the PBX: `tcp` (AMI) or `http` (AMI over HTTP at --pbx-port).
        #[arg(long, default_value = "tcp")]
        transport: String,
    },
    /// Closed-loop callbacks at each concurrency level, then wait until all are terminal.
    Load {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
        levels: Vec<usize>,
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
        /// Unmeasured load first (the tenant's AMI connection, caches).
        #[arg(long, default_value_t = 2.0)]
        warmup_seconds: f64,
        /// Account CPU time of this process and its children as NAME (repeatable).
        #[arg(long, value_name = "NAME=PID")]
        watch: Vec<Watched>,
        #[command(flatten)]
        output: Output,
    },
    /// Callbacks at a fixed rate (open loop), then wait until all are terminal (`rate_*`).
    Rate {
        #[command(flatten)]
        api: ApiArgs,
        /// More processes the connections are spread over (behind one balancer that alternates).
        #[arg(long)]
        other_api: Vec<SocketAddr>,
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
        /// Enough that the rate holds while answers take a while.
        #[arg(long, default_value_t = 256)]
        connections: usize,
        #[arg(long, value_name = "NAME=PID")]
        watch: Vec<Watched>,
        #[command(flatten)]
        output: Output,
    },
    /// `rate` with a webhook endpoint on the tenant: its figures as `webhooks_rate_*`, and the
    /// receiver's (`webhooks_*`: events delivered, lag, deliveries per second).
    Webhooks {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
        #[arg(long, default_value_t = 256)]
        connections: usize,
        #[arg(long, value_name = "NAME=PID")]
        watch: Vec<Watched>,
        #[command(flatten)]
        output: Output,
    },
    /// Many live streams (`streams_*`): dialback's memory and open files per stream, and how fast
    /// one event reaches them all.
    Streams {
        #[command(flatten)]
        api: ApiArgs,
        /// The simulator the streams' calls ring on.
        #[arg(long)]
        pbx_port: u16,
        /// dialback's process id.
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 100)]
        calls: usize,
        #[arg(long, default_value_t = 10_000)]
        streams: usize,
        #[command(flatten)]
        output: Output,
    },
    /// The webhook receiver `webhooks` starts (a process of its own).
    Receive {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Callbacks at a fixed rate over --api and every --other-api while --switch runs (at
    /// --switch-at of the time): a database failover (scripts/pg-failover), a rolling upgrade
    /// (scripts/rolling-upgrade). None may be lost.
    Switch {
        #[command(flatten)]
        api: ApiArgs,
        /// More APIs the requests go to in turn (processes behind one balancer).
        #[arg(long)]
        other_api: Vec<SocketAddr>,
        /// The figures' prefix.
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// The command (`sh -c`) that changes what serves the requests.
        #[arg(long)]
        switch: String,
        #[arg(long, default_value_t = 0.5)]
        switch_at: f64,
        #[command(flatten)]
        output: Output,
    },
    /// Callbacks at a fixed rate split over this API and the victim's, the victim killed halfway
    /// (`failover_*`: accepted, takeover time, lost and unknown callbacks).
    Failover {
        #[command(flatten)]
        api: ApiArgs,
        /// The other dialback process, killed (SIGKILL) halfway.
        #[arg(long)]
        victim_api: SocketAddr,
        #[arg(long)]
        victim_pid: u32,
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 128)]
        connections: usize,
        #[command(flatten)]
        output: Output,
    },
    /// A recordings sync of --files files already on the FTP server at --ftp-port, timed.
    Recordings {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        ftp_port: u16,
        /// The FTP server's directory (the step grows every file by a byte during the first sync).
        #[arg(long)]
        ftp_root: PathBuf,
        #[arg(long)]
        files: u64,
        #[command(flatten)]
        output: Output,
    },
    /// GET /v1/admin/dashboard of a company with `--rows` calls in its journal (`dashboard_*`).
    Dashboard {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 30)]
        days: u64,
        #[arg(long, default_value_t = 50)]
        reads: usize,
        #[command(flatten)]
        output: Output,
    },
    /// Return-call route decisions over FastAGI at a fixed rate (`agi_*`).
    Agi {
        #[command(flatten)]
        api: ApiArgs,
        /// dialback's FastAGI address.
        #[arg(long, default_value = "127.0.0.1:4573")]
        agi: SocketAddr,
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
        #[command(flatten)]
        output: Output,
    },
    /// Taps at a fixed rate; tap-to-originate from the simulator's originate log.
    Tap {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long)]
        originate_log: PathBuf,
        #[command(flatten)]
        output: Output,
    },
    /// The per-call-login way at each concurrency level.
    Baseline {
        #[command(flatten)]
        ami: AmiArgs,
        #[arg(long, value_delimiter = ',', default_value = "64")]
        levels: Vec<usize>,
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
        #[arg(long, value_name = "NAME=PID")]
        watch: Vec<Watched>,
        #[command(flatten)]
        output: Output,
    },
    /// The per-call-login way at a fixed rate; tap-to-originate from the originate log.
    BaselineTap {
        #[command(flatten)]
        ami: AmiArgs,
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long)]
        originate_log: PathBuf,
        #[command(flatten)]
        output: Output,
    },
    /// One persistent AMI connection sending pipelined Originates.
    Ceiling {
        #[command(flatten)]
        ami: AmiArgs,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Originates sent and not yet answered, at most.
        #[arg(long, default_value_t = 256)]
        window: usize,
        #[command(flatten)]
        output: Output,
    },
    /// A TCP delay proxy on loopback (stops by itself after --lifetime-s).
    Proxy {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        upstream: SocketAddr,
        #[arg(long, default_value_t = 10)]
        one_way_ms: u64,
        #[arg(long, default_value_t = 900)]
        lifetime_s: u64,
    },
    /// N tenants with idle AMI connections: dialback's memory, open files, and latency.
    Scale {
        #[command(flatten)]
        api: ApiArgs,
        /// dialback's process id.
        #[arg(long)]
        pid: u32,
        /// The idle tenants' simulator (a different one from the hot tenant's).
        #[arg(long)]
        idle_port: u16,
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        tenants: Vec<usize>,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[command(flatten)]
        output: Output,
    },
    /// Merge the figures into results.json and rewrite the figures in BENCHMARKS.md.
    Report {
        /// Directory of the steps' JSON files.
        #[arg(long)]
        parts: PathBuf,
        #[arg(long, default_value = "bench/results.json")]
        results: PathBuf,
        #[arg(long, default_value = "BENCHMARKS.md")]
        doc: PathBuf,
        /// An extra figure (a number, or else text), e.g. `commit=abc123` (repeatable).
        #[arg(long, value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

fn api(args: &ApiArgs) -> anyhow::Result<Api> {
    Ok(Api { addr: args.api, config: dialback::config::Config::load()? })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Recordings { api: args, ftp_port, ftp_root, files, output } => {
            let api = api(&args)?;
            let mut figures = Figures::new(&output.prefix);
            recordings::run(&api, &args.tenant, ftp_port, &ftp_root, files, &mut figures).await?;
            figures.write(output.out.as_deref())?;
        }
        Command::Dashboard { api: args, rows, days, reads, output } => {
            let api = api(&args)?;
            let mut figures = Figures::new(&output.prefix);
            dashboard::run(&api, &args.tenant, rows, days, reads, &mut figures).await?;
            figures.write(output.out.as_deref())?;
        }
        Command::Seed { api: args, pbx_port, context, transport } => {
            let api = api(&args)?;
            load::seed(&api, &args.tenant, pbx_port, &context, &transport, args.couriers).await?;
            eprintln!(
                "seeded tenant {} ({} couriers, PBX port {pbx_port} over {transport})",
                args.tenant, args.couriers
            );
        }
        Command::Load { api: args, levels, seconds, warmup_seconds, watch, output } => {
            let api = api(&args)?;
            let tokens = api.courier_tokens(&args.tenant, args.couriers)?;
            let mut figures = Figures::new(&output.prefix);
            if warmup_seconds > 0.0 {
                let tappers = ApiTapper::many(api.addr, &tokens, 16).await;
                let run = load::closed_loop(tappers, Duration::from_secs_f64(warmup_seconds)).await;
                load::terminal_figures(&api.config, &run, &mut Figures::default(), "warmup_").await?;
            }
            figures.num("load_seconds", seconds);
            load::levels(&api, &tokens, &levels, Duration::from_secs_f64(seconds), &watch, &mut figures).await?;
            figures.write(output.out.as_deref())?;
        }
        Command::Rate { api: args, other_api, rate, seconds, connections, watch, output } => {
            let api = api(&args)?;
            let tokens = api.courier_tokens(&args.tenant, args.couriers)?;
            let mut figures = Figures::new(&output.prefix);
            let duration = Duration::from_secs_f64(seconds);
            load::fixed_rate(&api, &other_api, &tokens, rate, connections, duration, &watch, &mut figures).await?;
            figures.write(output.out.as_deref())?;
        }
        Command::Webhooks { api: args, rate, seconds, connections, watch, output } => {
            let api = api(&args)?;
            let mut figures = Figures::new(&output.prefix);
            let load = events::FixedRate { rate, connections, duration: Duration::from_secs_f64(seconds) };
            events::webhooks(&api, &args.tenant, args.couriers, &load, &watch, &mut figures).await?;
            figures.write(output.out.as_deref())?;
        }
        Command::Streams { api: args, pbx_port, pid, calls, streams, output } => {
            let api = api(&args)?;
            let mut figures = Figures::new(&output.prefix);
            events::streams(&api, &args.tenant, pbx_port, pid, calls, streams, &mut figures).await?;
            figures.write(output.out.as_deref())?;
        }
        Command::Receive { listen } => events::serve_receiver(listen).await?,
        Command::Failover { api: args, victim_api, victim_pid, rate, seconds, connections, output } => {
            let api = api(&args)?;
            let tokens = api.courier_tokens(&args.tenant, args.couriers)?;
            let mut figures = Figures::new(&output.prefix);
            let duration = Duration::from_secs_f64(seconds);
            let run = failover::Failover { victim: (victim_api, victim_pid), rate, connections, duration };
            failover::run(&api, &tokens, &run, &mut figures).await?;
            figures.write(output.out.as_deref())?;
        }
        Command::Switch { api: args, other_api, name, rate, seconds, connections, switch, switch_at, output } => {
            let api = api(&args)?;
            let tokens = api.courier_tokens(&args.tenant, args.couriers)?;
            let mut figures = Figures::new(&output.prefix);
            let mut apis = vec![api.addr];
            apis.extend(other_api);
            let duration = Duration::from_secs_f64(seconds);
            let name = format!("{}_", name.trim_end_matches('_'));
            let run = switch::Switch { name, apis, rate, connections, duration, at: switch_at, command: switch };
            switch::run(&api, &tokens, &run, &mut figures).await?;
            figures.write(output.out.as_deref())?;
        }
        Command::Agi { api: args, agi: address, rate, seconds, output } => {
            let api = api(&args)?;
            let mut figures = Figures::new(&output.prefix);
            let duration = Duration::from_secs_f64(seconds);
            agi::routes(&api, &args.tenant, address, args.couriers, rate, duration, &mut figures).await?;
            figures.write(output.out.as_deref())?;
        }
        Command::Tap { api: args, rate, seconds, connections, originate_log, output } => {
            let api = api(&args)?;
            let tokens = api.courier_tokens(&args.tenant, args.couriers)?;
            let tappers = ApiTapper::many(api.addr, &tokens, connections).await;
            let run = load::open_loop(tappers, rate, Duration::from_secs_f64(seconds)).await;
            let mut figures = Figures::new(&output.prefix);
            load::tap_figures(&run, &originate_log, &mut figures, "").await?;
            load::terminal_figures(&api.config, &run, &mut figures, "tap_").await?;
            figures.write(output.out.as_deref())?;
        }
        Command::Baseline { ami, levels, seconds, watch, output } => {
            let target = ami.target()?;
            let mut figures = Figures::new(&output.prefix);
            for concurrency in levels {
                eprintln!("baseline: concurrency {concurrency} for {seconds} s against {}", target.addr);
                let tappers = (0..concurrency).map(|_| LoginPerCall(target.clone())).collect();
                let before = stats::cpu_sample(&watch);
                let mut run = load::closed_loop(tappers, Duration::from_secs_f64(seconds)).await;
                let key = format!("c{concurrency}_");
                stats::cpu_sample(&watch).since(&before, &mut figures, &key);
                run.figures(&mut figures, &key);
            }
            figures.write(output.out.as_deref())?;
        }
        Command::BaselineTap { ami, rate, seconds, originate_log, output } => {
            let target = ami.target()?;
            // Enough sessions in parallel that the rate holds even when each takes several RTTs.
            let tappers = (0..64).map(|_| LoginPerCall(target.clone())).collect();
            let run = load::open_loop(tappers, rate, Duration::from_secs_f64(seconds)).await;
            let mut figures = Figures::new(&output.prefix);
            load::tap_figures(&run, &originate_log, &mut figures, "").await?;
            figures.write(output.out.as_deref())?;
        }
        Command::Ceiling { ami, seconds, window, output } => {
            let result = ami::ceiling(&ami.target()?, Duration::from_secs_f64(seconds), window).await?;
            let mut figures = Figures::new(&output.prefix);
            figures.num("ceiling_originates_per_s", result.replies as f64 / result.elapsed.as_secs_f64().max(1e-3));
            figures.count("ceiling_errors", result.errors);
            figures.count("ceiling_window", window as u64);
            figures.write(output.out.as_deref())?;
        }
        Command::Proxy { listen, upstream, one_way_ms, lifetime_s } => {
            proxy::run(listen, upstream, Duration::from_millis(one_way_ms), Duration::from_secs(lifetime_s)).await?;
        }
        Command::Scale { api: args, pid, idle_port, tenants, seconds, concurrency, output } => {
            let api = api(&args)?;
            let scale = scale::Scale {
                levels: tenants,
                pid,
                idle_port,
                hot_tokens: api.courier_tokens(&args.tenant, args.couriers)?,
                latency_concurrency: concurrency,
                latency_duration: Duration::from_secs_f64(seconds),
            };
            let mut figures = Figures::new(&output.prefix);
            figures.num("scale_seconds", seconds);
            figures.count("scale_concurrency", concurrency as u64);
            scale.run(&api, &mut figures).await?;
            figures.write(output.out.as_deref())?;
        }
        Command::Report { parts, results, doc, set } => {
            let mut extra = serde_json::Map::new();
            for pair in set {
                let (key, value) = pair.split_once('=').ok_or_else(|| anyhow::anyhow!("--set KEY=VALUE"))?;
                // A commit id such as 6266e12 reads as a number; it is a name.
                let value = match value.parse::<f64>() {
                    Ok(number) if !matches!(key, "commit" | "ab_base") => stats::figure(number),
                    _ => serde_json::Value::from(value),
                };
                extra.insert(key.to_owned(), value);
            }
            report::run(&parts, extra, &results, &doc)?;
            eprintln!("wrote {} and the figures in {}", results.display(), doc.display());
        }
    }
    Ok(())
}
