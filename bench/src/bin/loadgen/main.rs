//! The Tidings load generator and bench orchestrator.
//!
//! `loadgen run --mode smoke|quick|full [--out FILE] [--only a,b] [--docs DIR]` starts every
//! server in turn (Tidings as the binary runs by default: durable SQLite, a fresh data
//! directory per start; `--ephemeral` and PostgreSQL as extra rows) (pinned to core 0; run this process pinned to core 1), runs the scenarios in
//! interleaved order (A B C C B A), writes the results as JSON and, unless smoke, regenerates
//! `docs/benchmarks.md` and its plots. `loadgen report FILE` only regenerates the page.
//! `loadgen worker ...` is the sharded connection holder this process spawns of itself.
//!
//! Usually started by `bench/run`, which builds and installs everything first.

mod backlog;
mod client;
mod cluster;
mod connect;
mod fanout;
mod idle;
mod publish;
mod report;
mod rr;
mod servers;
mod slow;
mod stats;
mod storm;
mod worker;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use servers::{Common, Kind, Paths};

pub(crate) type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// How big each scenario is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Mode {
    Smoke,
    Quick,
    Full,
}

/// The sizes of one run.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) mode: Mode,
    pub(crate) passes: usize,
    pub(crate) common: Common,
    pub(crate) idle_steps: Vec<usize>,
    pub(crate) fanout_sizes: Vec<usize>,
    pub(crate) fanout_ladder: Vec<f64>,
    pub(crate) step: Duration,
    pub(crate) drain: Duration,
    pub(crate) rr_conns: usize,
    pub(crate) rr_ladder: Vec<f64>,
    pub(crate) connect_total: usize,
    pub(crate) connect_inflight: Vec<usize>,
    pub(crate) storm_clients: usize,
    pub(crate) slow_seconds: u64,
    pub(crate) slow_rate: f64,
    /// Publishing connections of the publish scenario, and its rate ladder (publishes/s).
    pub(crate) publish_conns: usize,
    pub(crate) publish_ladder: Vec<f64>,
    /// Megabytes of the backlog scenario (half to a channel, half to the offline inbox).
    pub(crate) backlog_mb: u64,
    /// The cluster scenario: subscribers of its one channel, its open-loop publish rates
    /// (publishes/s), how long each rate and the as-fast-as-acks step last, and how long to
    /// wait for a step's deliveries.
    pub(crate) cluster_subscribers: usize,
    pub(crate) cluster_rates: Vec<f64>,
    pub(crate) cluster_step: Duration,
    pub(crate) cluster_acks_step: Duration,
    pub(crate) cluster_drain: Duration,
    /// Only these servers (`--servers tidings,socket_io,...`); all when empty.
    pub(crate) servers: Vec<Kind>,
}

impl Plan {
    fn new(mode: Mode) -> Plan {
        let fanout_ladder = vec![
            10e3, 20e3, 50e3, 100e3, 200e3, 300e3, 500e3, 700e3, 1e6, 1.4e6, 2e6, 3e6,
        ];
        let rr_ladder = vec![
            1e3, 2e3, 5e3, 10e3, 20e3, 30e3, 50e3, 70e3, 100e3, 150e3, 200e3,
        ];
        match mode {
            Mode::Smoke => Plan {
                mode,
                passes: 1,
                common: Common {
                    heartbeat_ms: 1000,
                    heartbeat_timeout_ms: 1000,
                    server_core: 0,
                    keep_backlog: false,
                },
                idle_steps: vec![50, 100, 200],
                fanout_sizes: vec![20],
                fanout_ladder: vec![2e3, 10e3],
                step: Duration::from_millis(500),
                drain: Duration::from_millis(1000),
                rr_conns: 50,
                rr_ladder: vec![500.0, 2000.0],
                connect_total: 200,
                connect_inflight: vec![64],
                storm_clients: 200,
                slow_seconds: 2,
                slow_rate: 1000.0,
                publish_conns: 50,
                publish_ladder: vec![500.0, 2000.0],
                backlog_mb: 4,
                cluster_subscribers: 100,
                cluster_rates: vec![50.0],
                cluster_step: Duration::from_millis(1000),
                cluster_acks_step: Duration::from_millis(500),
                cluster_drain: Duration::from_secs(5),
                servers: Vec::new(),
            },
            Mode::Quick => Plan {
                mode,
                passes: 2,
                common: Common {
                    heartbeat_ms: 3000,
                    heartbeat_timeout_ms: 3000,
                    server_core: 0,
                    keep_backlog: false,
                },
                idle_steps: vec![1000, 2000, 4000],
                fanout_sizes: vec![1000],
                fanout_ladder: vec![20e3, 50e3, 100e3, 200e3, 300e3, 500e3, 700e3, 1.4e6, 3e6],
                step: Duration::from_millis(1500),
                drain: Duration::from_secs(2),
                rr_conns: 1000,
                rr_ladder: vec![1e3, 5e3, 10e3, 15e3, 20e3, 30e3, 50e3, 100e3],
                connect_total: 2000,
                connect_inflight: vec![256],
                storm_clients: 3000,
                slow_seconds: 6,
                slow_rate: 2000.0,
                publish_conns: 1000,
                publish_ladder: vec![
                    1e3, 5e3, 10e3, 15e3, 20e3, 25e3, 30e3, 40e3, 50e3, 70e3, 100e3,
                ],
                backlog_mb: 100,
                cluster_subscribers: 1000,
                cluster_rates: vec![20.0, 50.0, 100.0],
                cluster_step: Duration::from_secs(3),
                cluster_acks_step: Duration::from_secs(2),
                cluster_drain: Duration::from_secs(10),
                servers: Vec::new(),
            },
            Mode::Full => Plan {
                mode,
                passes: 2,
                common: Common {
                    heartbeat_ms: 5000,
                    heartbeat_timeout_ms: 5000,
                    server_core: 0,
                    keep_backlog: false,
                },
                idle_steps: vec![1000, 5000, 10_000, 19_000],
                fanout_sizes: vec![100, 1000, 10_000],
                fanout_ladder,
                step: Duration::from_secs(2),
                drain: Duration::from_secs(2),
                rr_conns: 1000,
                rr_ladder,
                connect_total: 5000,
                connect_inflight: vec![64, 256, 1024],
                storm_clients: 15_000,
                slow_seconds: 20,
                slow_rate: 2000.0,
                publish_conns: 1000,
                publish_ladder: vec![
                    1e3, 2e3, 5e3, 10e3, 15e3, 20e3, 30e3, 40e3, 50e3, 60e3, 70e3, 85e3, 100e3,
                    150e3,
                ],
                backlog_mb: 100,
                cluster_subscribers: 1000,
                cluster_rates: vec![20.0, 50.0, 100.0, 200.0],
                cluster_step: Duration::from_secs(5),
                cluster_acks_step: Duration::from_secs(3),
                cluster_drain: Duration::from_secs(15),
                servers: Vec::new(),
            },
        }
    }
}

/// One server's outcome in one pass of one scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Run<T> {
    pub(crate) server: Kind,
    pub(crate) pass: usize,
    pub(crate) seconds: f64,
    pub(crate) result: Option<T>,
    pub(crate) error: Option<String>,
}

/// Everything one bench run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Results {
    pub(crate) date: String,
    pub(crate) mode: String,
    pub(crate) machine: String,
    pub(crate) versions: Vec<(String, String)>,
    pub(crate) commands: Vec<String>,
    pub(crate) heartbeat_ms: u64,
    pub(crate) seconds: f64,
    pub(crate) idle: Vec<Run<idle::IdleResult>>,
    pub(crate) fanout: Vec<Run<fanout::FanoutResult>>,
    pub(crate) rr: Vec<Run<rr::RrResult>>,
    pub(crate) connect: Vec<Run<connect::ConnectResult>>,
    pub(crate) storm: Vec<Run<storm::StormResult>>,
    pub(crate) slow: Vec<Run<slow::SlowResult>>,
    #[serde(default)]
    pub(crate) publish: Vec<Run<publish::PublishResult>>,
    #[serde(default)]
    pub(crate) backlog: Vec<Run<backlog::BacklogResult>>,
    /// Several nodes (its runs are all Tidings on PostgreSQL; the setup is in the result).
    #[serde(default)]
    pub(crate) cluster: Vec<Run<cluster::ClusterResult>>,
}

impl Plan {
    /// The scenario's servers in interleaved order, A B C then C B A, over the passes.
    /// `TIDINGS_TEST_SKIP_POSTGRES` (as for the tests) leaves the PostgreSQL row out.
    pub(crate) fn order(&self, kinds: &[Kind]) -> Vec<(Kind, usize)> {
        let postgres = std::env::var_os("TIDINGS_TEST_SKIP_POSTGRES").is_none();
        let kinds: Vec<Kind> = kinds
            .iter()
            .copied()
            .filter(|k| self.servers.is_empty() || self.servers.contains(k))
            .filter(|k| postgres || *k != Kind::TidingsPostgres)
            .collect();
        interleaved(&kinds, self.passes)
    }
}

/// A/B/C then C/B/A: each pass alternates direction, so drift hits every server alike.
pub(crate) fn interleaved(kinds: &[Kind], passes: usize) -> Vec<(Kind, usize)> {
    let mut order = Vec::new();
    for pass in 0..passes {
        if pass % 2 == 0 {
            order.extend(kinds.iter().map(|k| (*k, pass)));
        } else {
            order.extend(kinds.iter().rev().map(|k| (*k, pass)));
        }
    }
    order
}

/// Runs `body` against a freshly started `kind`, recording time and errors.
pub(crate) async fn with_server<T, F, Fut>(
    kind: Kind,
    pass: usize,
    paths: &Paths,
    plan: &Plan,
    body: F,
) -> Run<T>
where
    F: FnOnce(servers::Server) -> Fut,
    Fut: std::future::Future<Output = Res<T>>,
{
    let started = Instant::now();
    let outcome = match servers::Server::start(kind, paths, plan.common).await {
        Ok(server) => body(server).await,
        Err(e) => Err(e),
    };
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(result) => Run {
            server: kind,
            pass,
            seconds,
            result: Some(result),
            error: None,
        },
        Err(e) => {
            eprintln!("    {} failed: {e}", kind.label());
            Run {
                server: kind,
                pass,
                seconds,
                result: None,
                error: Some(e.to_string()),
            }
        }
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

const USAGE: &str = "usage: loadgen run --mode smoke|quick|full [--out FILE] [--only idle,fanout,rr,connect,storm,slow,publish,backlog,cluster] [--servers tidings,tidings_postgres,tidings_ephemeral,tidings_one_user,socketioxide,socket_io,raw_naive,raw_batch,bare_ws] [--docs DIR] [--passes N] [--fanout-sizes a,b] [--merge] | loadgen report FILE";

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // A run takes minutes and a full one half an hour: asking for help must not start one.
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return std::process::ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match args.first().map(String::as_str) {
            Some("worker") => worker::main(&args).await.map(|()| true),
            Some("report") => {
                let file = args.get(1).ok_or("usage: loadgen report RESULTS.json")?;
                let docs = PathBuf::from(arg(&args, "--docs").unwrap_or_else(|| "docs".into()));
                let results: Results = serde_json::from_str(&std::fs::read_to_string(file)?)?;
                report::write(&results, &docs)?;
                Ok(true)
            }
            Some("run") => run(&args).await,
            _ => Err(USAGE.into()),
        }
    });
    // Connection tasks may still be winding down: do not wait for them.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: &[String]) -> Res<bool> {
    let mode = match arg(args, "--mode").as_deref() {
        Some("smoke") => Mode::Smoke,
        Some("quick") => Mode::Quick,
        Some("full") | None => Mode::Full,
        Some(other) => return Err(format!("unknown mode {other}").into()),
    };
    let mut plan = Plan::new(mode);
    if let Some(sizes) = arg(args, "--fanout-sizes") {
        plan.fanout_sizes = sizes.split(',').map(str::parse).collect::<Result<_, _>>()?;
    }
    if let Some(passes) = arg(args, "--passes") {
        plan.passes = passes.parse()?;
    }
    if let Some(list) = arg(args, "--servers") {
        for name in list.split(',') {
            plan.servers
                .push(serde_json::from_str(&format!("\"{name}\""))?);
        }
    }
    let only: Option<Vec<String>> =
        arg(args, "--only").map(|s| s.split(',').map(str::to_owned).collect());
    let wants = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    let root = PathBuf::from(arg(args, "--root").unwrap_or_else(|| ".".into()));
    let work = std::env::temp_dir().join(format!("tidings-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let paths = Paths {
        tidings: root.join("target/release/tidings"),
        sio_peer: root.join("bench/peers/socketioxide/target/release/sio-peer"),
        node_peer: root.join("bench/peers/socketio-node/server.js"),
        ceiling: root.join("target/release/ceiling"),
        work: work.clone(),
    };
    let started = Instant::now();
    let mut results = Results {
        date: date_string(),
        mode: format!("{mode:?}").to_lowercase(),
        machine: servers::machine(),
        versions: servers::versions(&paths),
        commands: vec![
            bench_run_command(mode, args),
            format!("taskset -c 1 target/release/loadgen {}", args.join(" ")),
        ],
        heartbeat_ms: plan.common.heartbeat_ms,
        ..Results::default()
    };
    println!(
        "bench {:?}: {} pass(es), servers on core {}, generator on CPUs {:?}",
        mode,
        plan.passes,
        plan.common.server_core,
        affinity()
    );
    if wants("idle") {
        results.idle = idle::scenario(&plan, &paths).await;
    }
    if wants("fanout") {
        results.fanout = fanout::scenario(&plan, &paths).await;
    }
    if wants("rr") {
        results.rr = rr::scenario(&plan, &paths).await;
    }
    if wants("connect") {
        results.connect = connect::scenario(&plan, &paths).await;
    }
    if wants("storm") {
        results.storm = storm::scenario(&plan, &paths).await;
    }
    if wants("slow") {
        results.slow = slow::scenario(&plan, &paths).await;
    }
    if wants("publish") {
        results.publish = publish::scenario(&plan, &paths).await;
    }
    if wants("backlog") {
        results.backlog = backlog::scenario(&plan, &paths).await;
    }
    if wants("cluster") {
        results.cluster = cluster::scenario(&plan, &paths).await;
    }
    results.seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&work);
    servers::drop_databases().await;

    let out = arg(args, "--out").map(PathBuf::from);
    // --merge: keep the other scenarios of an existing results file (re-running one
    // scenario of a full run). Without one for today, the newest results file next to it
    // gives the other scenarios (bench/run names the file by the date).
    if args.iter().any(|a| a == "--merge")
        && let Some(out) = &out
        && let Some((from, text)) = merge_base(out)
    {
        let mut base: Results = serde_json::from_str(&text)?;
        if from != *out {
            println!(
                "{} does not exist: the other scenarios come from {}",
                out.display(),
                from.display()
            );
        }
        if wants("idle") {
            base.idle = std::mem::take(&mut results.idle);
        }
        if wants("fanout") {
            base.fanout = std::mem::take(&mut results.fanout);
        }
        if wants("rr") {
            base.rr = std::mem::take(&mut results.rr);
        }
        if wants("connect") {
            base.connect = std::mem::take(&mut results.connect);
        }
        if wants("storm") {
            base.storm = std::mem::take(&mut results.storm);
        }
        if wants("slow") {
            base.slow = std::mem::take(&mut results.slow);
        }
        if wants("publish") {
            base.publish = std::mem::take(&mut results.publish);
        }
        if wants("backlog") {
            base.backlog = std::mem::take(&mut results.backlog);
        }
        if wants("cluster") {
            base.cluster = std::mem::take(&mut results.cluster);
        }
        let into = if from == *out {
            String::new()
        } else {
            format!(" into the results of {}", from.display())
        };
        base.commands.push(format!(
            "re-run on {} and merged{into}: loadgen {}",
            results.date,
            args.join(" ")
        ));
        base.seconds += results.seconds;
        results = base;
    }
    if let Some(out) = &out {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, serde_json::to_string_pretty(&results)?)?;
        println!("results written to {}", out.display());
    }
    if mode != Mode::Smoke {
        let docs = PathBuf::from(arg(args, "--docs").unwrap_or_else(|| "docs".into()));
        report::write(&results, &docs)?;
        println!("{} regenerated", docs.join("benchmarks.md").display());
    }
    let (passed, failed) = report::summary(&results);
    println!("bench took {:.0} s", results.seconds);
    println!("{passed} passed, {failed} failed");
    // Smoke proves the harness: a failed run fails it. In quick and full runs a server that
    // gives up under load is a measurement (it is on the page), not a failure of the bench.
    Ok(failed == 0 || mode != Mode::Smoke)
}

/// The results file a `--merge` keeps the other scenarios of: `out` itself, or else the
/// newest dated results file (`YYYY-MM-DD.json`) in its directory; with its text.
fn merge_base(out: &std::path::Path) -> Option<(PathBuf, String)> {
    if let Ok(text) = std::fs::read_to_string(out) {
        return Some((out.to_path_buf(), text));
    }
    let dir = out.parent()?;
    let newest = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|s| s.len() == 10 && s.chars().all(|c| c.is_ascii_digit() || c == '-'))
        })
        .max()?;
    let text = std::fs::read_to_string(&newest).ok()?;
    Some((newest, text))
}

/// The `bench/run` line that runs what `args` asks.
fn bench_run_command(mode: Mode, args: &[String]) -> String {
    let mut line = format!("bench/run --{}", format!("{mode:?}").to_lowercase());
    for flag in ["--only", "--servers"] {
        if let Some(value) = arg(args, flag) {
            line.push_str(&format!(" {flag} {value}"));
        }
    }
    if args.iter().any(|a| a == "--merge") {
        line.push_str(" --merge");
    }
    line
}

fn affinity() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

fn date_string() -> String {
    std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%dT%H:%M:%SZ")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_goes_forth_and_back() {
        let order = interleaved(&[Kind::Tidings, Kind::Socketioxide, Kind::SocketIo], 2);
        let kinds: Vec<Kind> = order.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [
                Kind::Tidings,
                Kind::Socketioxide,
                Kind::SocketIo,
                Kind::SocketIo,
                Kind::Socketioxide,
                Kind::Tidings
            ]
        );
    }
}
