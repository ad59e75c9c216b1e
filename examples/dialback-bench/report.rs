//! `report`: merges the figures each step wrote into `bench/results.json`, derives the headline
//! figures and ratios, and rewrites the figures section of BENCHMARKS.md (between its marker
//! comments) from them. Figures are only ever written here, never by hand.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Map, Value};

pub const BEGIN: &str = "<!-- figures:begin (written by scripts/bench from bench/results.json; do not edit) -->";
pub const END: &str = "<!-- figures:end -->";

/// A process using more than this share of a core outside the benchmark makes a run noisy.
const NOISY_OTHER_PCT: f64 = 15.0;

type Figures = Map<String, Value>;

fn num(f: &Figures, key: &str) -> Option<f64> {
    f.get(key).and_then(Value::as_f64)
}

fn set(f: &mut Figures, key: &str, value: f64) {
    f.insert(key.to_owned(), crate::stats::figure(value));
}

/// Concurrency levels `N` for which `<prefix>c<N>_callbacks_per_s` exists, ascending.
fn levels(f: &Figures, prefix: &str) -> Vec<u64> {
    let mut out: Vec<u64> = f
        .keys()
        .filter_map(|k| k.strip_prefix(prefix)?.strip_prefix('c')?.strip_suffix("_callbacks_per_s")?.parse().ok())
        .collect();
    out.sort_unstable();
    out
}

/// The fixed-rate steps: the prefix of their figures, and how their row is labelled.
const FIXED_RATES: [(&str, &str); 3] = [
    ("rate_", ""),
    ("webhooks_rate_", ", a webhook endpoint on the tenant"),
    ("durable_rate_", ", PostgreSQL durable"),
];

/// Adds the headline figures and the ratios, from the per-step figures.
pub fn derive(f: &mut Figures) {
    let loopback = levels(f, "");
    let clean = |n: &u64| num(f, &format!("c{n}_errors")) == Some(0.0);
    let rate = |n: &u64| num(f, &format!("c{n}_callbacks_per_s")).unwrap_or(0.0);
    // The headline is the best level with no errors (or the best level, if every one had some).
    let best = loopback.iter().filter(|n| clean(n)).max_by(|a, b| rate(a).total_cmp(&rate(b))).copied();
    if let Some(n) = best.or_else(|| loopback.iter().max_by(|a, b| rate(a).total_cmp(&rate(b))).copied()) {
        for key in ["callbacks_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms"] {
            if let Some(v) = num(f, &format!("c{n}_{key}")) {
                set(f, key, v);
            }
        }
        set(f, "headline_concurrency", n as f64);
    }
    // The rate callbacks were settled at, end to end: from the level's start until the last became
    // terminal, less the talk time every call spends in the simulator anyway.
    let talk = num(f, "sim_talk_seconds").unwrap_or(0.0);
    for prefix in ["", "wan_"] {
        let seconds = num(f, &format!("{prefix}load_seconds"));
        for n in levels(f, prefix) {
            let key = |k: &str| num(f, &format!("{prefix}c{n}_{k}"));
            if let (Some(s), Some(after), Some(done)) = (seconds, key("settled_after_s"), key("terminal_count")) {
                set(f, &format!("{prefix}c{n}_terminal_per_s"), done / (s + after - talk).max(s));
            }
        }
    }
    for key in ["errors", "accepted_count", "terminal_count", "completed_count"] {
        let levels = loopback.iter().filter_map(|n| num(f, &format!("c{n}_{key}")));
        let fixed_rates = FIXED_RATES.iter().filter_map(|(prefix, _)| num(f, &format!("{prefix}{key}")));
        let total: f64 = levels.chain(fixed_rates).sum();
        set(f, key, total);
    }
    if let (Some(ours), Some(ceiling)) = (num(f, "callbacks_per_s"), num(f, "ceiling_originates_per_s")) {
        set(f, "ratio_vs_ceiling", ours / ceiling.max(1e-9));
    }
    for (ours, theirs, name) in
        [("wan_", "wan_baseline_", "ratio_vs_login_per_call"), ("", "baseline_", "ratio_vs_login_per_call_loopback")]
    {
        let common: Vec<u64> = levels(f, ours).into_iter().filter(|n| levels(f, theirs).contains(n)).collect();
        for n in &common {
            let a = num(f, &format!("{ours}c{n}_callbacks_per_s")).unwrap_or(0.0);
            let b = num(f, &format!("{theirs}c{n}_callbacks_per_s")).unwrap_or(0.0);
            set(f, &format!("{name}_c{n}"), a / b.max(1e-9));
        }
        if let Some(n) = common.last() {
            if let Some(v) = num(f, &format!("{name}_c{n}")) {
                set(f, name, v);
                set(f, &format!("{name}_concurrency"), *n as f64);
            }
        }
    }
    let scale_max = f.keys().filter_map(|k| k.strip_prefix("rss_per_idle_conn_kib_")?.parse::<u64>().ok()).max();
    if let Some(n) = scale_max {
        if let Some(v) = num(f, &format!("rss_per_idle_conn_kib_{n}")) {
            set(f, "rss_per_idle_conn_kib", v);
        }
        if let Some(v) = num(f, &format!("fds_{n}")) {
            set(f, "fds", v);
        }
    }
}

/// `cores`, `memory_mib`, `cpu_model`, `kernel`: the machine the figures were taken on.
pub fn machine(f: &mut Figures) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    set(f, "cores", cores as f64);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    if let Some(kib) = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
    {
        set(f, "memory_mib", (kib / 1024.0).round());
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if let Some(model) = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")) {
        f.insert("cpu_model".into(), Value::from(model.trim_start_matches([' ', '\t', ':']).trim()));
    }
    if let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        f.insert("kernel".into(), Value::from(release.trim()));
    }
}

fn show(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v.fract() == 0.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// An issue 7 target: what it asks, what was measured, and whether that meets it.
struct Target {
    what: &'static str,
    measured: String,
    met: Option<bool>,
}

/// How a figure is held against its limit.
#[derive(Clone, Copy)]
enum Bound {
    AtLeast(f64),
    AtMost(f64),
}

fn target(f: &Figures, what: &'static str, key: &str, unit: &str, bound: Bound) -> Target {
    let value = num(f, key);
    let met = value.map(|v| match bound {
        Bound::AtLeast(limit) => v >= limit,
        Bound::AtMost(limit) => v <= limit,
    });
    Target { what, measured: value.map_or_else(|| "–".into(), |v| format!("{}{unit}", show(Some(v)))), met }
}

/// "≥ 2,000 callbacks/s sustained" and "p99 ≤ 25 ms at that rate", read from the fixed-rate step
/// whose figures start with `prefix`: the rate was held with no errors, and every callback it placed
/// was terminal at most 2 s after its talk time.
fn rate_targets(f: &Figures, prefix: &str, sustained: &'static str, fast: &'static str) -> [Target; 2] {
    let key = |k: &str| format!("{prefix}{k}");
    let mut rate = target(f, sustained, &key("callbacks_per_s"), "/s", Bound::AtLeast(2000.0));
    let settled = num(f, &key("settled_after_s"));
    let all_terminal = num(f, &key("terminal_count")).zip(num(f, &key("accepted_count"))).map(|(t, a)| t >= a);
    let kept_pace = settled.map(|s| s <= num(f, "sim_talk_seconds").unwrap_or(1.0) + 2.0);
    let clean = num(f, &key("errors")).map(|e| e == 0.0);
    rate.met = [rate.met, all_terminal, kept_pace, clean].into_iter().try_fold(true, |all, ok| ok.map(|ok| all && ok));
    if let Some(settled) = settled {
        rate.measured = format!("{} (last terminal {settled:.1} s after)", rate.measured);
    }
    let mut p99 = target(f, fast, &key("p99_ms"), " ms", Bound::AtMost(25.0));
    // A p99 under 25 ms counts only at the target rate.
    p99.met = p99.met.zip(rate.met).map(|(fast, enough)| fast && enough);
    [rate, p99]
}

/// Issue 27's targets, read from the A/B (`ab_<mode>_<base|new>_<key>`): this tree against the
/// base in the same run, with PostgreSQL as the bench runs it (`fast`) and durable.
fn write_path_targets(f: &Figures) -> Vec<Target> {
    const MODES: [(&str, &str); 2] = [("fast", "commits not waiting"), ("durable", "durable")];
    let ab = |mode: &str, side: &str, key: &str| num(f, &format!("ab_{mode}_{side}_{key}"));
    // This tree's figure over the base's, for each mode: "off 0.34x (0.76 → 0.26), durable ...".
    let ratios = |key: &str| {
        let each: Vec<(Option<f64>, String)> = MODES
            .iter()
            .map(|(mode, label)| {
                let (base, new) = (ab(mode, "base", key), ab(mode, "new", key));
                let ratio = base.zip(new).filter(|(b, _)| *b != 0.0).map(|(b, n)| n / b);
                (ratio, format!("{label} {}x ({} → {})", show(ratio), show(base), show(new)))
            })
            .collect();
        let measured = each.iter().map(|(_, text)| text.as_str()).collect::<Vec<_>>().join("; ");
        (each.into_iter().map(|(ratio, _)| ratio).collect::<Option<Vec<f64>>>(), measured)
    };
    let (cpu, cpu_measured) = ratios("c64_pg_cpu_ms_per_callback");
    let (c16, c16_measured) = ratios("c16_callbacks_per_s");
    let (c64, c64_measured) = ratios("c64_callbacks_per_s");
    let transactions: Option<Vec<f64>> = MODES
        .iter()
        .flat_map(|(mode, _)| {
            ["c64_", "rate_"].map(|level| ab(mode, "new", &format!("{level}pg_transactions_per_callback")))
        })
        .collect();
    let (p99, errors) = (ab("durable", "new", "rate_p99_ms"), ab("durable", "new", "rate_errors"));
    vec![
        Target {
            what: "write path: PostgreSQL CPU per callback at c64 ≤ 0.5× the A/B base's, both commit modes",
            measured: cpu_measured,
            met: cpu.map(|r| r.iter().all(|r| *r <= 0.5)),
        },
        Target {
            what: "write path: write transactions per callback ≤ 1.5, c64 and open loop, both commit modes",
            measured: transactions
                .as_deref()
                .map_or_else(|| "–".into(), |t| t.iter().map(|t| show(Some(*t))).collect::<Vec<_>>().join(", ")),
            met: transactions.map(|t| t.iter().all(|t| *t <= 1.5)),
        },
        Target {
            what: "write path: closed loop at c16 ≥ 2× the A/B base's, both commit modes",
            measured: c16_measured,
            met: c16.map(|r| r.iter().all(|r| *r >= 2.0)),
        },
        Target {
            what: "write path: closed loop at c64 ≥ 2× the A/B base's, both commit modes",
            measured: c64_measured,
            met: c64.map(|r| r.iter().all(|r| *r >= 2.0)),
        },
        Target {
            what: "write path: open loop, PostgreSQL durable: p99 ≤ 25 ms, 0 errors",
            measured: format!("{} ms, {} errors", show(p99), show(errors)),
            met: p99.zip(errors).map(|(p99, errors)| p99 <= 25.0 && errors == 0.0),
        },
        target(
            f,
            "write path: return-call route decision p99 ≤ 5 ms at 500/s over FastAGI",
            "agi_route_p99_ms",
            " ms",
            Bound::AtMost(5.0),
        ),
    ]
}

fn targets(f: &Figures) -> Vec<Target> {
    let rtt = num(f, "wan_rtt_ms").unwrap_or(20.0);
    let [rate, p99] = rate_targets(f, "rate_", "≥ 2,000 accepted callbacks/s sustained", "p99 ≤ 25 ms at that rate");
    let [durable_rate, durable_p99] = rate_targets(
        f,
        "durable_rate_",
        "the same, PostgreSQL durable: ≥ 2,000/s sustained",
        "the same, PostgreSQL durable: p99 ≤ 25 ms at that rate",
    );
    let [webhooks_rate, _] =
        rate_targets(f, "webhooks_rate_", "with a webhook endpoint on the tenant: ≥ 2,000/s sustained", "(unused)");
    let within_tenth = |key: &str| {
        let (with, without) = (num(f, &format!("webhooks_rate_{key}")), num(f, &format!("rate_{key}")));
        Target {
            what: "",
            measured: format!("{} with, {} without", show(with), show(without)),
            met: with.zip(without).map(|(with, without)| with <= without * 1.1),
        }
    };
    let webhooks_p50 = Target {
        what: "with a webhook endpoint: p50 within 10% of the same step without (ms)",
        ..within_tenth("p50_ms")
    };
    let webhooks_p99 = Target {
        what: "with a webhook endpoint: p99 within 10% of the same step without (ms)",
        ..within_tenth("p99_ms")
    };
    let (expected, delivered) = (num(f, "webhooks_events_expected"), num(f, "webhooks_events_delivered"));
    let bad = num(f, "webhooks_bad_signatures");
    let delivered = Target {
        what: "with a webhook endpoint: every event delivered, every signature valid",
        measured: format!("{} of {}, {} bad signatures", show(delivered), show(expected), show(bad)),
        met: delivered.zip(expected).zip(bad).map(|((d, e), b)| d >= e && e > 0.0 && b == 0.0),
    };
    let keeps_pace = |what: &'static str, prefix: &str| {
        let key = |k: &str| num(f, &format!("{prefix}{k}"));
        let (per_s, written, lag) = (
            key("deliveries_per_s"),
            key("events_expected").zip(key("rate_seconds")).map(|(e, s)| e / s),
            key("lag_p99_ms"),
        );
        Target {
            what,
            measured: format!(
                "{} deliveries/s for {} events/s written, lag p99 {} ms, {} duplicates",
                show(per_s),
                show(written),
                show(lag),
                show(key("duplicates"))
            ),
            met: key("drained_after_s")
                .zip(lag)
                .zip(key("duplicates"))
                .map(|((drained, lag), dups)| drained == 0.0 && lag <= 2000.0 && dups == 0.0),
        }
    };
    let accepted = num(f, "accepted_count");
    let terminal = num(f, "terminal_count");
    vec![
        rate,
        target(f, "zero errors (all concurrency levels and the fixed rates)", "errors", "", Bound::AtMost(0.0)),
        Target {
            what: "every accepted callback terminal in the database",
            measured: format!("{} of {}", show(terminal), show(accepted)),
            met: terminal.zip(accepted).map(|(t, a)| t >= a),
        },
        p99,
        durable_rate,
        durable_p99,
        webhooks_rate,
        delivered,
        webhooks_p50,
        webhooks_p99,
        keeps_pace("webhooks keep pace at the target rate: drained as the load ends, lag p99 ≤ 2 s", "webhooks_"),
        keeps_pace("webhooks keep pace at half the target rate: the same", "webhooks_half_"),
        target(
            f,
            "tap-to-originate p99 ≤ 2 ms at ~100/s, loopback",
            "tap_to_originate_p99_ms",
            " ms",
            Bound::AtMost(2.0),
        ),
        target(
            f,
            "the same, PostgreSQL durable: tap-to-originate p99 ≤ 2 ms",
            "durable_tap_to_originate_p99_ms",
            " ms",
            Bound::AtMost(2.0),
        ),
        target(
            f,
            "tap-to-originate p99 ≤ one round trip + 2 ms over the WAN link",
            "wan_tap_to_originate_p99_ms",
            " ms",
            Bound::AtMost(rtt + 2.0),
        ),
        target(
            f,
            "≥ 10× the per-call-login baseline over the WAN link, same concurrency",
            "ratio_vs_login_per_call",
            "×",
            Bound::AtLeast(10.0),
        ),
        target(
            f,
            "≤ 64 KiB resident per idle tenant connection at 10,000 tenants",
            "rss_per_idle_conn_kib_10000",
            " KiB",
            Bound::AtMost(64.0),
        ),
        target(f, "AMI decode ≥ 300 MB/s", "ami_decode_mb_s", " MB/s", Bound::AtLeast(300.0)),
        {
            let mut p99 = target(
                f,
                "return calls: route decision p99 ≤ 2 ms at 500/s over FastAGI, loopback",
                "agi_route_p99_ms",
                " ms",
                Bound::AtMost(2.0),
            );
            let held = num(f, "agi_decisions_per_s").zip(num(f, "agi_target_per_s")).map(|(d, t)| d >= t * 0.99);
            let clean = num(f, "agi_errors").map(|e| e == 0.0);
            p99.met = [p99.met, held, clean].into_iter().try_fold(true, |all, ok| ok.map(|ok| all && ok));
            p99
        },
    ]
    .into_iter()
    .chain(write_path_targets(f))
    .collect()
}

/// Appends a Markdown table; the first `text_columns` columns are text, the rest numbers.
fn table(out: &mut String, head: &[&str], text_columns: usize, rows: Vec<Vec<String>>) {
    let rule: Vec<&str> = (0..head.len()).map(|i| if i < text_columns { "---" } else { "---:" }).collect();
    let _ = writeln!(out, "| {} |\n|{}|", head.join(" | "), rule.join("|"));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
}

/// `lead` followed by the figures `<prefix><key>`, shown.
fn row(f: &Figures, lead: &[&str], prefix: &str, keys: &[&str]) -> Vec<String> {
    let mut cells: Vec<String> = lead.iter().map(|c| c.to_string()).collect();
    cells.extend(keys.iter().map(|k| show(num(f, &format!("{prefix}{k}")))));
    cells
}

/// A row per concurrency level, then one for each fixed rate measured.
fn level_rows(f: &Figures, levels: &[u64], keys: &[&str]) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> =
        levels.iter().map(|n| row(f, &[&n.to_string()], &format!("c{n}_"), keys)).collect();
    for (prefix, label) in FIXED_RATES {
        if let Some(rate) = num(f, &format!("{prefix}target_per_s")) {
            rows.push(row(f, &[&format!("fixed {rate:.0}/s{label}")], prefix, keys));
        }
    }
    rows
}

/// The figures section of BENCHMARKS.md.
pub fn render(f: &Figures) -> String {
    let g = |key: &str| num(f, key);
    let s = |key: &str| show(g(key));
    let text = |key: &str| f.get(key).and_then(Value::as_str).unwrap_or("–").to_owned();
    let mut out = String::new();
    let loopback = levels(f, "");
    let other_max = loopback.iter().filter_map(|n| g(&format!("c{n}_cpu_other_pct"))).fold(0.0, f64::max);

    let _ = writeln!(out, "### The run\n");
    let _ = writeln!(
        out,
        "Taken {} at commit `{}` on {} cores ({}), {} MiB of memory, Linux {}; the whole `scripts/bench` \
         run took {} s (the build {} s of it).",
        text("taken_at"),
        text("commit"),
        s("cores"),
        text("cpu_model"),
        s("memory_mib"),
        text("kernel"),
        s("run_seconds"),
        s("build_seconds")
    );
    if other_max > NOISY_OTHER_PCT {
        let _ = writeln!(
            out,
            "\n**Noisy run:** during the load levels, processes outside the benchmark used up to {other_max:.0}% \
             of a core (`c<N>_cpu_other_pct`): the machine was busy, so every throughput and latency figure \
             below is lower or slower than on a quiet machine."
        );
    } else {
        let _ = writeln!(
            out,
            "\nThe machine was quiet: outside the benchmark, at most {other_max:.0}% of a core was used during \
             the load levels."
        );
    }

    let _ = writeln!(out, "\n### Targets (issues 7 and 27)\n");
    let verdict = |met: Option<bool>| match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    };
    let rows = targets(f).into_iter().map(|t| vec![t.what.to_owned(), t.measured, verdict(t.met).to_owned()]);
    table(&mut out, &["target", "measured", ""], 1, rows.collect());

    let _ = writeln!(out, "\n### Throughput and latency: HTTP → dialback → PostgreSQL → AMI, loopback\n");
    let _ = writeln!(
        out,
        "Accepted callbacks per second and request latency at fixed concurrency (closed loop: each worker sends \
         its next request when the last is answered, so latency grows with concurrency once the machine is \
         full), {} s per level; then the wait until every accepted callback is terminal in the database. The \
         \"fixed\" rows are the target rate held open loop (requests sent on a fixed schedule over {} \
         connections, whatever the answers take), as a company's couriers tap; the last one with PostgreSQL \
         durable (fsync and synchronous commit on, as in production), the others with both off. CPU is percent \
         of one core (the machine has {} × 100%) during the level.\n",
        s("load_seconds"),
        s("rate_connections"),
        s("cores")
    );
    let head = [
        "concurrency",
        "accepted/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "errors",
        "terminal",
        "accepted",
        "completed",
        "CPU dialback",
        "CPU PostgreSQL",
        "CPU simulator",
        "CPU load generator",
        "CPU interrupts",
        "CPU other",
    ];
    let keys = [
        "callbacks_per_s",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "max_ms",
        "errors",
        "terminal_count",
        "accepted_count",
        "completed_count",
        "cpu_dialback_pct",
        "cpu_postgres_pct",
        "cpu_sim_pct",
        "cpu_loadgen_pct",
        "cpu_interrupts_pct",
        "cpu_other_pct",
    ];
    table(&mut out, &head, 0, level_rows(f, &loopback, &keys));

    let _ = writeln!(
        out,
        "\nHow fast the accepted callbacks were settled (`c<N>_terminal_per_s`: terminal callbacks per second \
         from the level's start until the last became terminal, less the {} s every call talks), how long \
         after the level that was, and per accepted callback: transactions that wrote to PostgreSQL and context \
         switches of dialback's threads.\n",
        s("sim_talk_seconds")
    );
    let head = [
        "concurrency",
        "accepted/s",
        "settled/s",
        "last terminal after s",
        "PostgreSQL write transactions",
        "dialback context switches",
    ];
    let keys = [
        "callbacks_per_s",
        "terminal_per_s",
        "settled_after_s",
        "pg_transactions_per_callback",
        "dialback_context_switches_per_callback",
    ];
    table(&mut out, &head, 0, level_rows(f, &loopback, &keys));

    let _ = writeln!(out, "\n### Side by side: dialback, the per-call-login baseline, the ceiling\n");
    let _ = writeln!(
        out,
        "Same run, same simulator settings, same concurrency. On the WAN link a delay proxy ({} ms round trip) \
         sits between the AMI client and the simulator; HTTP and PostgreSQL stay on loopback.\n",
        s("wan_rtt_ms")
    );
    let mut rows = Vec::new();
    for n in levels(f, "wan_") {
        for (way, prefix) in [("dialback", ""), ("per-call login", "baseline_")] {
            let mut cells = vec![way.to_owned(), n.to_string()];
            for link in ["", "wan_"] {
                cells.extend(row(f, &[], &format!("{link}{prefix}c{n}_"), &["callbacks_per_s", "p99_ms"]));
            }
            rows.push(cells);
        }
        let ratio = |key: &str| format!("{}×", s(&format!("{key}_c{n}")));
        let wan = format!("**{}**", ratio("ratio_vs_login_per_call"));
        let loopback = ratio("ratio_vs_login_per_call_loopback");
        rows.push(vec!["dialback ÷ per-call login".into(), n.to_string(), loopback, "".into(), wan, "".into()]);
    }
    let head = ["way", "concurrency", "loopback calls/s", "loopback p99 ms", "WAN calls/s", "WAN p99 ms"];
    table(&mut out, &head, 1, rows);
    let _ = writeln!(
        out,
        "\nThe ceiling, one persistent AMI connection with pipelined Originates and no HTTP or database: {} \
         originates/s ({} errors). dialback's best rate is **{}** of it (`ratio_vs_ceiling`).",
        s("ceiling_originates_per_s"),
        s("ceiling_errors"),
        s("ratio_vs_ceiling")
    );
    let _ = writeln!(
        out,
        "\nTap-to-originate: from the tap's first byte sent to its Originate read by the simulator, at a fixed \
         rate.\n"
    );
    let keys = [
        "tap_rate_per_s",
        "tap_to_originate_p50_ms",
        "tap_to_originate_p99_ms",
        "tap_to_originate_max_ms",
        "tap_to_originate_samples",
        "tap_errors",
    ];
    let rows = [
        ("dialback", "loopback", ""),
        ("dialback", "loopback, PostgreSQL durable", "durable_"),
        ("dialback", "WAN", "wan_"),
        ("per-call login", "loopback", "baseline_"),
        ("per-call login", "WAN", "wan_baseline_"),
    ]
    .into_iter()
    .filter(|(_, _, prefix)| g(&format!("{prefix}tap_to_originate_p50_ms")).is_some())
    .map(|(way, link, prefix)| row(f, &[way, link], prefix, &keys))
    .collect();
    table(&mut out, &["way", "link", "taps/s", "p50 ms", "p99 ms", "max ms", "taps", "errors"], 2, rows);

    let _ = writeln!(out, "\n### Return calls: route decisions over FastAGI\n");
    let _ = writeln!(
        out,
        "The load generator plays Asterisk's side of `AGI(agi://…/route?key=…)` for the bench tenant's \
         clients (each the client of an active order: every decision routes to a courier), {} per second \
         open loop for {} s, each conversation on a new connection: the environment, `200 result=1` to each \
         of the five `SET VARIABLE`s, until dialback closes. Latency is from connect to that close: the \
         caller's wait. Each decision is one lookup and one journal insert (with its event), the insert \
         after the answer. \"First variable\" is from the environment sent to the first `SET VARIABLE` \
         read: the decision as Asterisk hears it, without the connection and the other four round \
         trips.\n",
        s("agi_target_per_s"),
        s("load_seconds"),
    );
    let rows = [
        ("decisions per second", "agi_decisions_per_s"),
        ("p50, ms", "agi_route_p50_ms"),
        ("p90, ms", "agi_route_p90_ms"),
        ("p99, ms", "agi_route_p99_ms"),
        ("max, ms", "agi_route_max_ms"),
        ("first variable p50, ms", "agi_first_variable_p50_ms"),
        ("first variable p90, ms", "agi_first_variable_p90_ms"),
        ("first variable p99, ms", "agi_first_variable_p99_ms"),
        ("decisions", "agi_route_samples"),
        ("errors (no answer, or no route for a client)", "agi_errors"),
    ]
    .into_iter()
    .map(|(what, key)| vec![what.to_owned(), s(key)])
    .collect();
    table(&mut out, &["figure", "value"], 1, rows);

    if g("ajam_http_tap_to_originate_p50_ms").is_some() {
        let _ = writeln!(out, "\n### AMI over HTTP (AJAM) next to AMI over TCP\n");
        let _ = writeln!(
            out,
            "One simulator serving both its AMI port and `/rawman` over HTTP; a tenant on each (each one's \
             session also hears the other's calls, as every session on a PBX does). Closed-loop callbacks at \
             each concurrency for {} s, then tap-to-originate at {} taps/s. No target yet.\n",
            s("load_seconds"),
            s("tap_target_rate_per_s"),
        );
        let mut rows = Vec::new();
        for transport in ["tcp", "http"] {
            let prefix = format!("ajam_{transport}_");
            for n in levels(f, &prefix) {
                let mut cells = vec![transport.to_owned(), n.to_string()];
                cells.extend(row(
                    f,
                    &[],
                    &format!("{prefix}c{n}_"),
                    &["callbacks_per_s", "p50_ms", "p99_ms", "errors", "cpu_dialback_pct"],
                ));
                cells.extend(row(f, &[], &prefix, &["tap_to_originate_p50_ms", "tap_to_originate_p99_ms"]));
                rows.push(cells);
            }
        }
        let head = [
            "transport",
            "concurrency",
            "accepted/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "CPU dialback",
            "tap→originate p50 ms",
            "tap→originate p99 ms",
        ];
        table(&mut out, &head, 2, rows);
    }

    if g("failover_accepted_count").is_some() {
        let _ = writeln!(out, "\n### Two processes on one database, one killed\n");
        let _ = writeln!(
            out,
            "Two dialback processes on one PostgreSQL; callbacks at {}/s for {} s, open loop, half the \
             connections to each (a balancer that alternates); the second killed with SIGKILL halfway, so the \
             requests sent to it from then on fail. Calls talk {} s here, so those the killed process was \
             following are still up when the survivor takes them over: *takeover* is the time from the kill \
             until every one of them still in flight is owned by the survivor. Lost: accepted and never \
             terminal. The requirement: none lost, none `unknown`.\n",
            s("failover_rate_target_per_s"),
            s("failover_load_seconds"),
            s("failover_talk_seconds"),
        );
        let rows = [
            ("accepted callbacks/s", "failover_callbacks_per_s"),
            ("accepted", "failover_accepted_count"),
            ("p50 ms", "failover_p50_ms"),
            ("p99 ms", "failover_p99_ms"),
            ("requests that failed (sent to the killed process)", "failover_errors"),
            ("calls the killed process was following", "failover_victim_in_flight_count"),
            ("takeover, s", "failover_takeover_s"),
            ("completed", "failover_completed_count"),
            ("lost", "failover_lost_count"),
            ("unknown", "failover_unknown_count"),
        ]
        .into_iter()
        .map(|(what, key)| vec![what.to_owned(), s(key)])
        .collect();
        table(&mut out, &["figure", "value"], 1, rows);
    }

    let clusters: Vec<u64> = (1..=3).filter(|n| g(&format!("cluster{n}_rate_target_per_s")).is_some()).collect();
    if !clusters.is_empty() {
        let _ = writeln!(out, "\n### PostgreSQL work per callback with 1, 2 and 3 processes\n");
        let _ = writeln!(
            out,
            "One company (its own simulator, calls talk {} s) and callbacks at {}/s for {} s, open loop, the \
             connections spread evenly over 1, 2, then 3 dialback processes on one PostgreSQL. Every process that \
             places a call of the company keeps a session to its PBX and hears every call, but only the process \
             following a call writes it: the transactions per callback should not grow with the processes. \
             *Transactions* are the transaction ids PostgreSQL handed out from the start of the load until every \
             accepted callback was terminal, heartbeats included.\n",
            s("sim_talk_seconds"),
            s(&format!("cluster{}_rate_target_per_s", clusters[0])),
            s(&format!("cluster{}_rate_seconds", clusters[0])),
        );
        let rows = clusters
            .iter()
            .map(|n| {
                let k = |figure: &str| s(&format!("cluster{n}_rate_{figure}"));
                vec![
                    n.to_string(),
                    k("callbacks_per_s"),
                    k("p99_ms"),
                    k("errors"),
                    k("completed_count"),
                    k("pg_transactions_per_callback"),
                    k("cpu_postgres_pct"),
                ]
            })
            .collect();
        let head = [
            "processes",
            "accepted/s",
            "p99 ms",
            "errors",
            "completed",
            "PG transactions per callback",
            "CPU postgres",
        ];
        table(&mut out, &head, 1, rows);
    }

    if g("ab_fast_new_c16_callbacks_per_s").is_some() {
        let _ = writeln!(out, "\n### A/B: this tree against {}\n", text("ab_base"));
        let _ = writeln!(
            out,
            "The release of commit `{}` and this tree's, measured one after the other in this run, the same way: \
             each alone on a fresh database of its own (migrated by its own binary), a company of its own on one \
             simulator, closed loop at concurrency 16 and 64 ({} s each), then {}/s open loop; first with \
             PostgreSQL as the rest of the bench runs it (`synchronous_commit` off), then durable (fsync and \
             synchronous commit on). CPU per callback is each process's CPU time from the start of the load \
             until every accepted callback was terminal, divided by the callbacks accepted; transactions are \
             counted the same way (heartbeats included).\n",
            text("ab_base"),
            s("ab_fast_new_load_seconds"),
            s("ab_rate_per_s"),
        );
        let figures = [
            ("callbacks/s, c16", "c16_callbacks_per_s"),
            ("p99 ms, c16", "c16_p99_ms"),
            ("callbacks/s, c64", "c64_callbacks_per_s"),
            ("p99 ms, c64", "c64_p99_ms"),
            ("PostgreSQL CPU ms per callback, c64", "c64_pg_cpu_ms_per_callback"),
            ("dialback CPU ms per callback, c64", "c64_dialback_cpu_ms_per_callback"),
            ("PG transactions per callback, c64", "c64_pg_transactions_per_callback"),
            ("open loop: accepted/s", "rate_callbacks_per_s"),
            ("open loop: p99 ms", "rate_p99_ms"),
            ("open loop: errors", "rate_errors"),
            ("open loop: PostgreSQL CPU ms per callback", "rate_pg_cpu_ms_per_callback"),
            ("open loop: PG transactions per callback", "rate_pg_transactions_per_callback"),
        ];
        let mut rows = Vec::new();
        for (mode, label) in [("fast", "synchronous_commit off"), ("durable", "durable")] {
            for (what, key) in figures {
                let (base, new) = (g(&format!("ab_{mode}_base_{key}")), g(&format!("ab_{mode}_new_{key}")));
                if base.is_none() && new.is_none() {
                    continue;
                }
                let ratio = match (base, new) {
                    (Some(b), Some(n)) if b != 0.0 => format!("{:.2}x", n / b),
                    _ => "–".to_owned(),
                };
                rows.push(vec![label.to_owned(), what.to_owned(), show(base), show(new), ratio]);
            }
        }
        table(&mut out, &["PostgreSQL", "figure", "base", "this tree", "this / base"], 2, rows);
    }

    let _ = writeln!(out, "\n### Events: webhooks and live streams\n");
    let _ = writeln!(
        out,
        "**Webhooks.** The target rate held again ({} s, open loop, PostgreSQL as in the first fixed row) with \
         a webhook endpoint on the tenant subscribed to `callback.status_changed`: every status of every call \
         is written as an event in the statement that moves the call and delivered by dialback's deliverer to a \
         receiver in the load generator (HTTP/1.1 on loopback, 204 at once, signatures checked). Its callback \
         figures are the \"a webhook endpoint\" row above. The wait for deliveries ends when the receiver has \
         every event the database holds for the accepted callbacks. The same again at half the rate: where the \
         deliverer keeps pace on this machine.\n",
        s("load_seconds"),
    );
    let rows = [
        ("events the database holds for the accepted callbacks", "webhooks_events_expected"),
        ("events the receiver got (distinct)", "webhooks_events_delivered"),
        ("duplicates (at-least-once)", "webhooks_duplicates"),
        ("bad signatures", "webhooks_bad_signatures"),
        ("deliveries per second (first to last)", "webhooks_deliveries_per_s"),
        ("last delivery after the last callback was terminal, s (0: kept up)", "webhooks_drained_after_s"),
        ("lag p50, ms (event written → received)", "webhooks_lag_p50_ms"),
        ("lag p90, ms", "webhooks_lag_p90_ms"),
        ("lag p99, ms", "webhooks_lag_p99_ms"),
        ("lag max, ms", "webhooks_lag_max_ms"),
    ]
    .into_iter()
    .map(|(what, key)| vec![what.to_owned(), s(key), s(&key.replacen("webhooks_", "webhooks_half_", 1))])
    .collect();
    let full = format!("{} callbacks/s", s("webhooks_rate_target_per_s"));
    let half = format!("{} callbacks/s", s("webhooks_half_rate_target_per_s"));
    table(&mut out, &["figure", &full, &half], 1, rows);
    let _ = writeln!(
        out,
        "\n**Live streams.** {} streams (`GET /v1/callbacks/{{id}}/events`) open at once on {} calls ringing on \
         the durable dialback, then every call canceled at once: what the streams cost dialback, and how long \
         until the last of them had its final event.\n",
        s("streams_open"),
        s("streams_calls"),
    );
    let rows = [
        ("resident memory per open stream, KiB", "streams_rss_kib_per_stream"),
        ("open files per stream", "streams_fds_per_stream"),
        ("dialback's resident memory with them open, KiB", "streams_rss_kib"),
        ("time to open them all (first event received), s", "streams_open_s"),
        ("streams that got their final event", "streams_ended_with_final_event"),
        ("… of which `canceled` (the rest: their call ended before)", "streams_final_canceled"),
        ("from the cancels to the last stream's final event, ms", "streams_fan_out_ms"),
    ]
    .into_iter()
    .map(|(what, key)| vec![what.to_owned(), s(key)])
    .collect();
    table(&mut out, &["figure", "value"], 1, rows);

    let _ = writeln!(out, "\n### Scale: idle tenant connections\n");
    let _ = writeln!(
        out,
        "A fresh dialback; N tenants each hold an idle logged-in AMI connection to their own simulator. \
         Resident memory (`VmRSS`) and open files of the dialback process, and the hot tenant's callbacks at {} \
         concurrent for {} s next to them.\n",
        s("scale_concurrency"),
        s("scale_seconds")
    );
    let mut scale_levels: Vec<u64> =
        f.keys().filter_map(|k| k.strip_prefix("scale_")?.strip_suffix("_rss_kib")?.parse().ok()).collect();
    scale_levels.sort_unstable();
    let rows = scale_levels
        .into_iter()
        .map(|n| {
            let k = |key: &str| g(&format!("scale_{n}_{key}"));
            let (per_connection, fds) = match n {
                0 => ("–".to_owned(), k("fds")),
                _ => (s(&format!("rss_per_idle_conn_kib_{n}")), g(&format!("fds_{n}"))),
            };
            vec![
                n.to_string(),
                show(k("ami_connections")),
                show(k("rss_kib").map(|v| v / 1024.0)),
                per_connection,
                show(fds),
                show(k("callbacks_per_s")),
                show(k("p50_ms")),
                show(k("p99_ms")),
            ]
        })
        .collect();
    let head = [
        "tenants",
        "AMI connections",
        "RSS MiB",
        "RSS per idle connection KiB",
        "open files",
        "hot accepted/s",
        "p50 ms",
        "p99 ms",
    ];
    table(&mut out, &head, 0, rows);

    let _ = writeln!(out, "\n### Recordings: fetched over FTP and stored\n");
    let _ = writeln!(
        out,
        "{} files of {} KiB on a real FTP server (pyftpdlib, loopback), fetched by one recordings sync \
         (`recordings.parallel_downloads` 3): into the directory (`DIALBACK_RECORDINGS_DIR`), then by another \
         dialback into an S3-compatible store (s3s-fs on loopback, `DIALBACK_RECORDINGS__URL`). The sync's own \
         duration: the listing, the downloads and their hashes, the writes, the database.\n",
        s("recordings_fs_files"),
        show(g("recordings_fs_bytes").zip(g("recordings_fs_files")).map(|(b, n)| b / n / 1024.0)),
    );
    let rows = [("directory", "recordings_fs_"), ("object store (S3)", "recordings_s3_")]
        .into_iter()
        .map(|(what, prefix)| {
            let k = |key: &str| s(&format!("{prefix}{key}"));
            vec![what.to_owned(), k("files"), k("seconds"), k("files_per_s"), k("mb_per_s")]
        })
        .collect();
    table(&mut out, &["stored in", "files", "sync s", "files/s", "MB/s"], 1, rows);

    let _ = writeln!(out, "\n### The admin page's dashboard on a large journal\n");
    let _ = writeln!(
        out,
        "GET /v1/admin/dashboard of a company with {} calls in its journal over the last 30 days (written \
         straight to PostgreSQL, {} s): the first read rolls up every ended hour ({} calls), the later ones \
         count only the hours since. From request to the whole answer, one at a time.\n",
        s("dashboard_rows"),
        s("dashboard_seed_s"),
        s("dashboard_rolled_up_calls"),
    );
    let rows = vec![vec![
        s("dashboard_first_read_ms"),
        s("dashboard_read_p50_ms"),
        s("dashboard_read_p99_ms"),
        s("dashboard_read_samples"),
    ]];
    table(&mut out, &["first read ms", "then p50 ms", "p99 ms", "reads"], 0, rows);

    let _ = writeln!(out, "\n### Micro-benchmarks (`cargo bench`)\n");
    let rows = [
        ("AMI decode (the transcripts' mix, 4 KiB reads)", "ami_decode_mb_s", "MB/s"),
        ("AMI decode, messages", "ami_decode_msgs_per_s", "/s"),
        ("AMI encode (the same messages, validated)", "ami_encode_mb_s", "MB/s"),
        ("Originate built and encoded", "originate_encode_per_s", "/s"),
        ("phone normalisation (`phone::parse`, a mix of formats)", "phone_parse_per_s", "/s"),
        ("a callback's event data (`callbacks::view::event_data`)", "event_data_per_s", "/s"),
    ]
    .into_iter()
    .map(|(what, key, unit)| vec![what.to_owned(), format!("{} {unit}", s(key))])
    .collect();
    table(&mut out, &["what", "figure"], 1, rows);
    out
}

/// Replaces what lies between the markers in `doc`.
pub fn splice(doc: &str, figures: &str) -> anyhow::Result<String> {
    let begin = doc.find(BEGIN).ok_or_else(|| anyhow::anyhow!("BENCHMARKS.md lacks the line {BEGIN}"))?;
    let end = doc.find(END).ok_or_else(|| anyhow::anyhow!("BENCHMARKS.md lacks the line {END}"))?;
    anyhow::ensure!(begin < end, "the figure markers in BENCHMARKS.md are out of order");
    Ok(format!("{}{BEGIN}\n\n{}\n{}", &doc[..begin], figures, &doc[end..]))
}

/// Merges every `*.json` in `parts` (in name order) with `extra`, derives, writes both files.
pub fn run(parts: &Path, extra: Figures, results: &Path, doc: &Path) -> anyhow::Result<()> {
    let mut figures = Figures::new();
    let mut files: Vec<_> = std::fs::read_dir(parts)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for file in files {
        let part: Figures = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
        // Every number in one form: three decimals, whole numbers as integers.
        figures.extend(part.into_iter().map(|(k, v)| match v.as_f64() {
            Some(n) => (k, crate::stats::figure(n)),
            None => (k, v),
        }));
    }
    figures.extend(extra);
    machine(&mut figures);
    derive(&mut figures);
    std::fs::write(results, serde_json::to_string_pretty(&figures)? + "\n")?;
    let text = std::fs::read_to_string(doc)?;
    std::fs::write(doc, splice(&text, &render(&figures))?)?;
    Ok(())
}
