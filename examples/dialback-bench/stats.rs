//! Figures and how they are taken: latency percentiles, the flat JSON object each subcommand
//! writes, and what `/proc` says about a process (resident memory, open files, CPU time).

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use serde_json::{Map, Value};

/// Linux reports CPU times in USER_HZ ticks, fixed at 100 on every architecture we run on.
const TICKS_PER_S: f64 = 100.0;

/// A flat set of named figures, written as one JSON object.
#[derive(Default)]
pub struct Figures {
    prefix: String,
    values: Map<String, Value>,
}

impl Figures {
    pub fn new(prefix: &str) -> Figures {
        Figures { prefix: prefix.to_owned(), values: Map::new() }
    }

    /// A measured quantity, rounded to three decimals (figures are not more precise than that).
    pub fn num(&mut self, key: &str, value: f64) {
        self.values.insert(format!("{}{key}", self.prefix), figure(value));
    }

    pub fn count(&mut self, key: &str, value: u64) {
        self.values.insert(format!("{}{key}", self.prefix), Value::from(value));
    }

    pub fn text(&mut self, key: &str, value: &str) {
        self.values.insert(format!("{}{key}", self.prefix), Value::from(value));
    }

    /// `p50_ms`, `p90_ms`, `p99_ms`, `max_ms` (and `samples`) of latencies in microseconds.
    pub fn latencies(&mut self, key_prefix: &str, micros: &mut [u64]) {
        micros.sort_unstable();
        for (name, q) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99)] {
            self.num(&format!("{key_prefix}{name}_ms"), percentile(micros, q) as f64 / 1000.0);
        }
        self.num(&format!("{key_prefix}max_ms"), micros.last().copied().unwrap_or(0) as f64 / 1000.0);
        self.count(&format!("{key_prefix}samples"), micros.len() as u64);
    }

    /// Prints the figures (for the person running the bench) and writes them to `out`.
    pub fn write(&self, out: Option<&Path>) -> anyhow::Result<()> {
        for (key, value) in &self.values {
            eprintln!("  {key:<48} {value}");
        }
        if let Some(out) = out {
            std::fs::write(out, serde_json::to_string_pretty(&self.values)? + "\n")?;
        }
        Ok(())
    }
}

/// A figure as JSON: rounded to three decimals, whole numbers as integers.
pub fn figure(value: f64) -> Value {
    let rounded = (value * 1000.0).round() / 1000.0;
    if rounded.fract() == 0.0 && rounded.abs() < 1e15 {
        Value::from(rounded as i64)
    } else {
        serde_json::Number::from_f64(rounded).map_or(Value::Null, Value::Number)
    }
}

/// Nearest-rank percentile of sorted values (0 when empty).
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// Open file descriptors of a process.
pub fn fds(pid: u32) -> anyhow::Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

/// Context switches (voluntary and not) of every thread of a process so far.
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// utime + stime of one process (all its threads), and its parent's pid.
fn proc_ticks(pid: u32) -> Option<(u64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime, ppid))
}

/// Busy ticks of the whole machine (all cores), and of them those spent in interrupts (on this
/// benchmark, mostly the kernel's loopback network processing, which no process is charged for),
/// from `/proc/stat`.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal: busy is everything but idle and iowait.
    (fields.iter().take(8).sum::<u64>() - field(3) - field(4), field(5) + field(6))
}

/// Whose CPU time to account: a process, or a process and its children (PostgreSQL runs one
/// backend per connection under the postmaster).
#[derive(Clone, Debug)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

impl std::str::FromStr for Watched {
    type Err = String;

    /// `NAME=PID`
    fn from_str(s: &str) -> Result<Watched, String> {
        let (name, pid) = s.split_once('=').ok_or("expected NAME=PID")?;
        Ok(Watched { name: name.to_owned(), pid: pid.parse().map_err(|_| "PID must be a number")? })
    }
}

pub struct CpuSample {
    at: Instant,
    machine: u64,
    interrupts: u64,
    by_name: HashMap<String, u64>,
}

/// Samples CPU time of the watched processes (each with its children), of this load generator,
/// and of the machine, so a run can say where its CPU went.
pub fn cpu_sample(watched: &[Watched]) -> CpuSample {
    let mut by_name: HashMap<String, u64> = HashMap::new();
    let own = std::process::id();
    let mut all = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                if let Some((ticks, ppid)) = proc_ticks(pid) {
                    all.push((pid, ppid, ticks));
                }
            }
        }
    }
    for &(pid, ppid, ticks) in &all {
        let name = if pid == own {
            Some("loadgen")
        } else {
            watched.iter().find(|w| w.pid == pid || w.pid == ppid).map(|w| w.name.as_str())
        };
        if let Some(name) = name {
            *by_name.entry(name.to_owned()).or_default() += ticks;
        }
    }
    let (machine, interrupts) = machine_ticks();
    CpuSample { at: Instant::now(), machine, interrupts, by_name }
}

impl CpuSample {
    /// `<name>_cpu_ms_per_callback` for each watched process: its CPU time since `before`,
    /// milliseconds per one of `callbacks`.
    pub fn per_callback_since(&self, before: &CpuSample, callbacks: usize, figures: &mut Figures, key_prefix: &str) {
        for (name, ticks) in &self.by_name {
            let delta = ticks.saturating_sub(before.by_name.get(name).copied().unwrap_or(0));
            let ms = delta as f64 / TICKS_PER_S * 1000.0 / callbacks.max(1) as f64;
            // `pg_cpu_ms_per_callback`, as issue 27 names PostgreSQL's.
            let name = if name == "postgres" { "pg" } else { name.as_str() };
            figures.num(&format!("{key_prefix}{name}_cpu_ms_per_callback"), ms);
        }
    }

    /// `cpu_<name>_pct` (percent of one core; the machine has `cores` × 100) for each watched
    /// process and the load generator, `cpu_interrupts_pct` (the kernel's network processing,
    /// mostly), and `cpu_other_pct`: busy time nobody here accounts for (other work on the
    /// machine: kernel threads, a compiler...).
    pub fn since(&self, before: &CpuSample, figures: &mut Figures, key_prefix: &str) {
        let wall = self.at.duration_since(before.at).as_secs_f64().max(1e-3);
        let pct = |ticks: u64| ticks as f64 / TICKS_PER_S / wall * 100.0;
        let mut accounted = 0;
        let mut names: Vec<&String> = self.by_name.keys().collect();
        names.sort();
        for name in names {
            let delta = self.by_name[name].saturating_sub(before.by_name.get(name).copied().unwrap_or(0));
            accounted += delta;
            figures.num(&format!("{key_prefix}cpu_{name}_pct"), pct(delta));
        }
        let machine = self.machine.saturating_sub(before.machine);
        let interrupts = self.interrupts.saturating_sub(before.interrupts);
        figures.num(&format!("{key_prefix}cpu_interrupts_pct"), pct(interrupts));
        figures.num(&format!("{key_prefix}cpu_other_pct"), pct(machine.saturating_sub(accounted + interrupts)));
        figures.num(&format!("{key_prefix}cpu_machine_pct"), pct(machine));
    }
}
