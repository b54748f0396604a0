//! Scenario 1, idle memory: connections step up (each in its personal channel and one shared
//! channel), server RSS after each step, the least-squares slope per connection, and every
//! connection still alive after two heartbeat periods.

use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::servers::{Kind, Paths, Server};
use crate::worker::PER_WORKER;
use crate::{Plan, Res, Run, stats, with_server};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct IdleResult {
    /// RSS of the server before any connection.
    pub(crate) baseline_rss: u64,
    /// (connections, server RSS in bytes) after each step.
    pub(crate) points: Vec<(usize, u64)>,
    /// Least-squares slope: bytes of server RSS per connection.
    pub(crate) bytes_per_connection: f64,
    pub(crate) opened: u64,
    pub(crate) failed: u64,
    /// Connections still open after two heartbeat periods.
    pub(crate) alive_after_heartbeats: u64,
    pub(crate) waited_s: f64,
    pub(crate) rss_after_heartbeats: u64,
    pub(crate) worker_processes: usize,
}

pub(crate) const SERVERS: [Kind; 5] = [
    Kind::Tidings,
    Kind::TidingsOneUser,
    Kind::Socketioxide,
    Kind::SocketIo,
    Kind::BareWs,
];

pub(crate) async fn scenario(plan: &Plan, paths: &Paths) -> Vec<Run<IdleResult>> {
    println!("== idle memory: {:?} connections", plan.idle_steps);
    let mut runs = Vec::new();
    for (kind, pass) in plan.order(&SERVERS) {
        let run = with_server(kind, pass, paths, plan, |server| measure(server, plan)).await;
        if let Some(r) = &run.result {
            println!(
                "  {:<32} {:>8.0} B/conn  opened {} failed {}  alive after {:.0} s: {}",
                kind.label(),
                r.bytes_per_connection,
                r.opened,
                r.failed,
                r.waited_s,
                r.alive_after_heartbeats
            );
        }
        runs.push(run);
    }
    runs
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    fn spawn(server: &Server, base: u64) -> Res<Worker> {
        let proto = serde_json::to_string(&server.kind.proto())?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("worker")
            .arg("--proto")
            .arg(proto.trim_matches('"'))
            .arg("--addr")
            .arg(server.addr.to_string())
            .arg("--base")
            .arg(base.to_string())
            .arg("--one-user")
            .arg((server.kind == Kind::TidingsOneUser).to_string())
            .arg("--room")
            // Diagnostic: BENCH_IDLE_ROOM=- joins no shared channel.
            .arg(std::env::var("BENCH_IDLE_ROOM").unwrap_or_else(|_| "shared".to_owned()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().ok_or("worker stdin")?;
        let stdout = child.stdout.take().ok_or("worker stdout")?;
        Ok(Worker {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    async fn ask(&mut self, command: &str) -> Res<Vec<u64>> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        let line = self
            .lines
            .next_line()
            .await?
            .ok_or("the worker process ended")?;
        Ok(line
            .split_whitespace()
            .skip(1)
            .filter_map(|w| w.parse().ok())
            .collect())
    }
}

async fn measure(server: Server, plan: &Plan) -> Res<IdleResult> {
    let max = plan.idle_steps.iter().copied().max().unwrap_or(0);
    let count = max.div_ceil(PER_WORKER).max(1);
    let mut workers = Vec::new();
    for w in 0..count {
        workers.push(Worker::spawn(&server, 1_000_000 * (w as u64 + 1))?);
    }
    let settle = match plan.mode {
        crate::Mode::Smoke => Duration::from_millis(300),
        crate::Mode::Quick => Duration::from_secs(1),
        crate::Mode::Full => Duration::from_secs(2),
    };
    tokio::time::sleep(settle).await;
    let mut result = IdleResult {
        baseline_rss: server.rss(),
        worker_processes: count,
        ..IdleResult::default()
    };
    let mut held = vec![0usize; count];
    for &target in &plan.idle_steps {
        // Spread the step over the workers; they open their shares concurrently.
        let mut asks = Vec::new();
        for (w, worker) in workers.iter_mut().enumerate() {
            let share = target / count + usize::from(w < target % count);
            let have = held.get(w).copied().unwrap_or(0);
            let more = share.saturating_sub(have);
            if let Some(h) = held.get_mut(w) {
                *h = have + more;
            }
            asks.push(async move { worker.ask(&format!("open {more}")).await });
        }
        for answer in futures_util::future::join_all(asks).await {
            let answer = answer?;
            result.opened += answer.first().copied().unwrap_or(0);
            result.failed += answer.get(1).copied().unwrap_or(0);
        }
        tokio::time::sleep(settle).await;
        let rss = server.rss();
        println!(
            "    {:<24} {:>6} connections  RSS {:>8.1} MiB",
            server.kind.label(),
            target,
            rss as f64 / 1048576.0
        );
        result.points.push((target, rss));
    }
    let points: Vec<(f64, f64)> = result
        .points
        .iter()
        .map(|(n, rss)| (*n as f64, *rss as f64))
        .collect();
    result.bytes_per_connection = stats::slope(&points);
    // Two heartbeat periods (plus the timeout's grace) with every connection idle.
    let wait = Duration::from_millis(
        2 * plan.common.heartbeat_ms + plan.common.heartbeat_timeout_ms / 2 + 500,
    );
    tokio::time::sleep(wait).await;
    result.waited_s = wait.as_secs_f64();
    for worker in &mut workers {
        result.alive_after_heartbeats += worker.ask("alive").await?.first().copied().unwrap_or(0);
    }
    result.rss_after_heartbeats = server.rss();
    for mut worker in workers {
        let _ = worker.stdin.write_all(b"quit\n").await;
        let _ = worker.child.kill().await;
    }
    server.stop().await;
    Ok(result)
}
