//! Sections 5–6 of the page: reconnect storm and slow consumer.

use std::fmt::Write as _;
use std::path::Path;

use super::plot::plot;
use super::{errors_of, header, kinds_in, med, num, or_error, row};
use crate::Results;
use crate::Run;
use crate::servers::Kind;

/// Section 5: reconnect storm.
pub(super) fn storm(md: &mut String, r: &Results) {
    if r.storm.is_empty() {
        return;
    }
    let runs: Vec<&Run<_>> = r.storm.iter().collect();
    let clients = runs
        .iter()
        .find_map(|x| x.result.as_ref().map(|y| y.clients))
        .unwrap_or(0);
    let _ = writeln!(
        md,
        "## 5. Reconnect storm\n\n{} clients in one channel with a steady publish stream \
         are dropped at once (TCP closed without a close handshake) and reconnect after a \
         uniform 0–1 s delay, the same policy for every server. Tidings clients resubscribe \
         with `recover`; the peers have no recovery. Lost = publications a client had not \
         received by the end (3 s after the stream stopped), summed over clients; the \
         publish rate is 50,000 / clients per second (2 to 50).\n",
        num(clients as f64, 0)
    );
    md.push_str(&header(&[
        "server",
        "95 % back (s)",
        "100 % back (s)",
        "publications",
        "lost (sum over clients)",
        "clients with loss",
        "not recovered",
        "connect retries",
    ]));
    for kind in kinds_in(&runs) {
        md.push_str(&row(&[
            kind.label().to_owned(),
            or_error(med(&runs, kind, |x| x.back_95_s), 2, errors_of(&runs, kind)),
            num(med(&runs, kind, |x| x.back_100_s), 2),
            num(med(&runs, kind, |x| Some(x.published as f64)), 0),
            num(med(&runs, kind, |x| Some(x.lost as f64)), 0),
            num(med(&runs, kind, |x| Some(x.clients_with_loss as f64)), 0),
            num(med(&runs, kind, |x| Some(x.not_recovered as f64)), 0),
            num(med(&runs, kind, |x| Some(x.connect_retries as f64)), 0),
        ]));
    }
    md.push('\n');
}

/// Section 6: slow consumer.
pub(super) fn slow(md: &mut String, r: &Results, plots: &Path, fonts: bool) {
    if r.slow.is_empty() {
        return;
    }
    let runs: Vec<&Run<_>> = r.slow.iter().collect();
    let _ = writeln!(
        md,
        "## 6. Slow consumer\n\nOne subscriber (16 KiB receive buffer) stops reading while \
         publications go on to it and ten healthy subscribers, with heartbeats of 120 s \
         for this scenario (so that silence alone closes nobody: what shows is each \
         server's queueing policy). Server RSS over the run; the healthy subscribers must \
         get everything. Tidings --ephemeral keeps the channel's history (1,000 \
         publications, the default) in memory, which is part of its growth; the durable \
         stores keep it on disk.\n"
    );
    md.push_str(&header(&[
        "server",
        "RSS start MiB",
        "RSS max MiB",
        "RSS end MiB",
        "growth KiB/s",
        "healthy received / expected",
        "the slow subscriber",
    ]));
    for kind in kinds_in(&runs) {
        let outcome = runs
            .iter()
            .filter(|x| x.server == kind)
            .map(|x| match (&x.result, &x.error) {
                (Some(res), _) => res.slow_outcome.clone(),
                (None, Some(e)) => format!("error: {e}"),
                _ => String::new(),
            })
            .collect::<Vec<_>>()
            .join("; ");
        md.push_str(&row(&[
            kind.label().to_owned(),
            num(
                med(&runs, kind, |x| Some(x.rss_start as f64 / 1048576.0)),
                1,
            ),
            num(med(&runs, kind, |x| Some(x.rss_max as f64 / 1048576.0)), 1),
            num(med(&runs, kind, |x| Some(x.rss_end as f64 / 1048576.0)), 1),
            num(med(&runs, kind, |x| Some(x.growth_kib_per_s)), 0),
            format!(
                "{} / {}",
                num(med(&runs, kind, |x| Some(x.healthy_received as f64)), 0),
                num(med(&runs, kind, |x| Some(x.healthy_expected as f64)), 0)
            ),
            outcome,
        ]));
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
            &plots.join("slow-consumer-rss.png"),
            "Slow consumer: server RSS over time (first pass)",
            "seconds",
            "RSS (MiB)",
            &series,
            false,
        )
        .is_ok()
    {
        md.push_str("\n![slow consumer RSS](benchmarks/slow-consumer-rss.png)\n");
    }
    md.push('\n');
}
