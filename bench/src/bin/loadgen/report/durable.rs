//! Sections 7, 8 and 10 of the page: acknowledged publishes, the backlog replay, and sizes.

use std::fmt::Write as _;
use std::path::Path;

use super::plot::plot;
use super::{header, kinds_in, med, num, or_error, ratio, row};
use crate::Results;
use crate::Run;
use crate::backlog::BacklogResult;
use crate::publish::PublishResult;
use crate::rr::RrStep;
use crate::servers::Kind;

/// Section 7: acknowledged publishes to one channel and to many.
pub(super) fn publish(md: &mut String, r: &Results) {
    if r.publish.is_empty() {
        return;
    }
    let conns = r
        .publish
        .iter()
        .find_map(|x| x.result.as_ref().map(|y| y.result.connections))
        .unwrap_or(0);
    let _ = writeln!(
        md,
        "## 7. Acknowledged publishes\n\n{conns} connections publish with an ack on an \
         open-loop schedule, 100-byte payloads, nobody subscribed: the time from the intended \
         send to the acknowledgement, which for Tidings' durable stores comes after the \
         publication is committed (concurrent publishes share commits). To **one channel** \
         every publish contends for one channel's offsets; to **one channel each** it is the \
         request/reply shape. The rate steps up until p99 reaches 20 ms; the figures are the \
         highest rates with p99 under 10 ms and under 20 ms, every publish acknowledged (the \
         median of the passes, then each pass's in parentheses when they differ). \
         socketioxide stores nothing (its ack follows the room broadcast): it is the \
         request/reply peer, not a durable one.\n"
    );
    for (shape, title) in [("one", "one channel"), ("many", "one channel each")] {
        let runs: Vec<&Run<PublishResult>> = r
            .publish
            .iter()
            .filter(|x| x.result.as_ref().is_some_and(|y| y.shape == shape))
            .collect();
        if runs.is_empty() {
            continue;
        }
        let _ = writeln!(md, "### {} connections, {title}\n", num(conns as f64, 0));
        publish_table(md, &runs);
        md.push('\n');
    }
}

fn publish_table(md: &mut String, runs: &[&Run<PublishResult>]) {
    md.push_str(&header(&[
        "server",
        "publishes/s (p99 < 10 ms)",
        "publishes/s (p99 < 20 ms)",
        "p50 ms",
        "p99 ms",
        "server CPU µs/publish",
        "stopped because",
        "Tidings ÷ this (p99 < 20 ms)",
    ]));
    let best10 = |x: &PublishResult| x.result.best.clone();
    let best20 = |x: &PublishResult| x.result.best_20ms.clone();
    let at20 = |x: &PublishResult, f: fn(&RrStep) -> f64| best20(x).map(|b| f(&b));
    let t = med(runs, Kind::Tidings, |x| at20(x, |b| b.rate));
    for kind in kinds_in(runs) {
        let rate10 = med(runs, kind, |x| best10(x).map(|b| b.rate));
        let rate20 = med(runs, kind, |x| at20(x, |b| b.rate));
        let stopped = runs
            .iter()
            .filter(|x| x.server == kind)
            .filter_map(|x| x.result.as_ref().map(|y| y.result.stopped_because.clone()))
            .collect::<Vec<_>>()
            .join("; ");
        md.push_str(&row(&[
            kind.label().to_owned(),
            with_passes(rate10, &per_pass(runs, kind, |x| best10(x).map(|b| b.rate))),
            with_passes(rate20, &per_pass(runs, kind, |x| at20(x, |b| b.rate))),
            num(med(runs, kind, |x| at20(x, |b| b.latency.p50_ms)), 2),
            num(med(runs, kind, |x| at20(x, |b| b.latency.p99_ms)), 2),
            num(
                med(runs, kind, |x| at20(x, |b| b.server_cpu_us_per_request)),
                1,
            ),
            stopped,
            if kind == Kind::Tidings {
                String::new()
            } else {
                ratio(t, rate20)
            },
        ]));
    }
}

/// Each pass's value of `metric` for `kind`, in pass order (`None`: no step passed).
fn per_pass(
    runs: &[&Run<PublishResult>],
    kind: Kind,
    metric: impl Fn(&PublishResult) -> Option<f64>,
) -> Vec<Option<f64>> {
    runs.iter()
        .filter(|x| x.server == kind)
        .map(|x| x.result.as_ref().and_then(&metric))
        .collect()
}

/// A rate, followed by every pass's when they differ: a ladder's steps are coarse, and the
/// median of two passes is their mean.
fn with_passes(median: f64, passes: &[Option<f64>]) -> String {
    let show = |v: Option<f64>| v.map_or("none".to_owned(), |v| num(v, 0));
    let head = show(median.is_finite().then_some(median));
    let differ = passes.windows(2).any(|w| w.first() != w.get(1));
    if differ {
        let each: Vec<String> = passes.iter().copied().map(show).collect();
        format!("{head} ({})", each.join(" / "))
    } else {
        head
    }
}

/// Section 8: a backlog replayed to a reconnecting client.
pub(super) fn backlog(md: &mut String, r: &Results, plots: &Path, fonts: bool) {
    if r.backlog.is_empty() {
        return;
    }
    let runs: Vec<&Run<BacklogResult>> = r.backlog.iter().collect();
    let first = runs.iter().find_map(|x| x.result.as_ref());
    let mb = first.map_or(f64::NAN, |x| x.bytes as f64 / 1e6);
    let each = first.map_or(0, |x| x.channel_publications);
    let _ = writeln!(
        md,
        "## 8. Backlog after a reconnect\n\nA client (one user, one device) subscribes to a \
         channel and disconnects. Over the HTTP API, {mb} MB of publications are made while \
         it is away: {each} events of 4 KiB to the channel (`POST /api/publish`) and {each} \
         notifications of 4 KiB to the user (`POST /api/notify/user/{{id}}`, its offline \
         inbox). The client reconnects as the same device (the inbox follows `connected`), \
         resubscribes with `recover` from its last position, and keeps reading. \"All \
         arrived\" runs from the reconnect to the last publication, each in offset order and \
         once. The server's RSS is sampled every 20 ms during the replay: a server that \
         pages the backlog from its store as the connection drains stays flat.\n",
        mb = num(mb, 0),
        each = num(each as f64, 0),
    );
    md.push_str(&header(&[
        "server",
        "all arrived (s)",
        "MB/s",
        "recovered / missed",
        "received (channel + inbox)",
        "out of order",
        "RSS before MiB",
        "RSS peak MiB",
        "RSS after MiB",
        "server CPU s",
        "published in (s; HTTP, 64 in flight)",
    ]));
    for kind in kinds_in(&runs) {
        let mib = |f: fn(&BacklogResult) -> u64| {
            num(med(&runs, kind, |x| Some(f(x) as f64 / 1048576.0)), 1)
        };
        let answer = runs
            .iter()
            .filter(|x| x.server == kind)
            .find_map(|x| x.result.as_ref())
            .map_or("–".to_owned(), |x| {
                format!(
                    "{} / {}",
                    x.recovered.map_or("–".to_owned(), |b| b.to_string()),
                    x.missed.map_or("–".to_owned(), |m| num(m as f64, 0))
                )
            });
        md.push_str(&row(&[
            kind.label().to_owned(),
            or_error(
                med(&runs, kind, |x| Some(x.replay_s)),
                2,
                super::errors_of(&runs, kind),
            ),
            num(
                med(&runs, kind, |x| {
                    Some(x.frame_bytes as f64 / 1e6 / x.replay_s.max(1e-9))
                }),
                0,
            ),
            answer,
            num(
                med(&runs, kind, |x| {
                    Some((x.channel_received + x.inbox_received) as f64)
                }),
                0,
            ),
            num(med(&runs, kind, |x| Some(x.out_of_order as f64)), 0),
            mib(|x| x.rss_start),
            mib(|x| x.rss_peak),
            mib(|x| x.rss_end),
            num(med(&runs, kind, |x| Some(x.server_cpu_s)), 2),
            num(med(&runs, kind, |x| Some(x.publish_s)), 1),
        ]));
    }
    for kind in [Kind::Socketioxide, Kind::SocketIo] {
        let why = match kind {
            Kind::SocketIo => {
                "n/a: its optional connection-state recovery (off in this peer) keeps a \
                 disconnected socket's packets in memory for 2 minutes; no offline inbox"
            }
            _ => "n/a: no recovery, no offline inbox",
        };
        let mut cells = vec![kind.label().to_owned(), why.to_owned()];
        cells.extend(std::iter::repeat_n(String::new(), 9));
        md.push_str(&row(&cells));
    }
    let series: Vec<(Kind, Vec<(f64, f64)>)> = kinds_in(&runs)
        .into_iter()
        .filter_map(|kind| {
            let run = runs.iter().find(|x| x.server == kind)?.result.as_ref()?;
            Some((
                kind,
                run.samples
                    .iter()
                    .map(|(t, rss)| (*t, *rss as f64 / 1048576.0))
                    .collect(),
            ))
        })
        .collect();
    if fonts
        && plot(
            &plots.join("backlog-rss.png"),
            "Backlog replay: server RSS from the reconnect (first pass)",
            "seconds",
            "RSS (MiB)",
            &series,
            false,
        )
        .is_ok()
    {
        md.push_str("\n![backlog replay RSS](benchmarks/backlog-rss.png)\n");
    }
    md.push('\n');
}

/// Section 10: sizes. The browser client's size is measured when the npm package is built
/// (`scripts/build-npm`) and recorded by hand in the tuning log; its table or figures are
/// repeated here.
pub(super) fn sizes(md: &mut String, tuning_log: &str) {
    md.push_str("## 10. Sizes\n\n");
    match browser_client_size(tuning_log) {
        Some((heading, figures)) => {
            let _ = writeln!(
                md,
                "The browser client (WebAssembly and its JavaScript), as built for the npm \
                 package by `scripts/build-npm`; from [{heading}](#{}) in the tuning log \
                 below.\n",
                slug(&heading)
            );
            md.push_str(&figures);
            md.push_str("\n\n");
        }
        None => md.push_str(
            "The browser client's size (WebAssembly and JavaScript, raw and gzip) is not \
             recorded yet: `scripts/build-npm` prints it, and it will appear here once the \
             tuning log (`docs/benchmarks-tuning.md`) has a \"Browser client size\" section.\n\n",
        ),
    }
}

/// The heading and the table (or size lines) of the tuning log's "Browser client size"
/// section, if it has one with figures.
fn browser_client_size(log: &str) -> Option<(String, String)> {
    let mut lines = log.lines();
    let (level, heading) = lines.by_ref().find_map(|line| {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        let title = line.get(hashes..)?.trim();
        (hashes > 0 && title.to_lowercase().contains("browser client size"))
            .then(|| (hashes, title.to_owned()))
    })?;
    let body: Vec<&str> = lines
        .take_while(|line| {
            let hashes = line.chars().take_while(|c| *c == '#').count();
            hashes == 0 || hashes > level
        })
        .collect();
    let table: Vec<&str> = body
        .iter()
        .copied()
        .filter(|l| l.trim_start().starts_with('|'))
        .collect();
    let figures: Vec<&str> = if table.is_empty() {
        body.into_iter()
            .filter(|l| {
                let l = l.to_lowercase();
                l.contains("kib") || l.contains(" kb") || l.contains("bytes")
            })
            .collect()
    } else {
        table
    };
    (!figures.is_empty()).then(|| (heading, figures.join("\n")))
}

/// The anchor GitHub gives a heading.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn browser_client_size_is_found_in_the_log() {
        let log = "## Tuning log\n\n### 5. Browser client size\n\nSome words.\n\n\
                   | file | raw | gzip |\n|---|---|---|\n| wasm | 300 KiB | 110 KiB |\n\n\
                   ### 6. Next\n| other | table |\n";
        let (heading, figures) = browser_client_size(log).unwrap();
        assert_eq!(heading, "5. Browser client size");
        assert_eq!(
            figures,
            "| file | raw | gzip |\n|---|---|---|\n| wasm | 300 KiB | 110 KiB |"
        );
        assert_eq!(slug(&heading), "5-browser-client-size");
        assert!(browser_client_size("## Tuning log\n\n### 1. Presence\n").is_none());
    }
}
