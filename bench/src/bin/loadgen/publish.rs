//! Scenario 7, acknowledged publishes: N connections publish with an ack, on an open-loop
//! schedule, to ONE channel (every publish contends for one channel's offsets) and to MANY
//! channels (one each, the request/reply shape). Nobody is subscribed: what is measured is
//! the path from `publish` to its acknowledgement, which for Tidings' durable stores includes
//! the commit (group commit shares it among concurrent publishes). The rate steps up until
//! p99 reaches 20 ms; the figures are the highest rates with p99 under 10 ms and under 20 ms.

use serde::{Deserialize, Serialize};

use crate::rr::{RrResult, Shape, measure};
use crate::servers::{Kind, Paths};
use crate::{Mode, Plan, Run, with_server};

/// One shape's outcome (the request/reply result, with its channel count).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct PublishResult {
    /// `one` or `many`.
    pub(crate) shape: String,
    pub(crate) result: RrResult,
}

/// socketioxide has no durability: it is here as the request/reply peer (an ack after the
/// room broadcast).
pub(crate) const SERVERS: [Kind; 4] = [
    Kind::Tidings,
    Kind::TidingsPostgres,
    Kind::TidingsEphemeral,
    Kind::Socketioxide,
];

pub(crate) async fn scenario(plan: &Plan, paths: &Paths) -> Vec<Run<PublishResult>> {
    // One stall (a checkpoint, a neighbour's build) fails a whole ladder step of a durable
    // store: three passes, so that the median is a pass and not the mean of two.
    let mut plan = plan.clone();
    if plan.mode != Mode::Smoke {
        plan.passes = plan.passes.max(3);
    }
    let plan = &plan;
    let mut runs = Vec::new();
    for (name, channels) in [("one", 1), ("many", plan.publish_conns)] {
        let shape = Shape {
            connections: plan.publish_conns,
            channels,
            prefix: "pub",
            ladder: plan.publish_ladder.clone(),
            stop_ms: 20.0,
        };
        println!(
            "== acknowledged publishes: {} connections to {channels} channel(s)",
            plan.publish_conns
        );
        for (kind, pass) in plan.order(&SERVERS) {
            let mut run = with_server(kind, pass, paths, plan, |server| async {
                let result = measure(server, plan, &shape).await?;
                Ok(PublishResult {
                    shape: name.to_owned(),
                    result,
                })
            })
            .await;
            if let (None, Some(e)) = (&run.result, &run.error) {
                // Keep the shape with the failure, so the page files it under its table.
                run.result = Some(PublishResult {
                    shape: name.to_owned(),
                    result: RrResult {
                        connections: plan.publish_conns,
                        channels,
                        stopped_because: format!("error: {e}"),
                        ..RrResult::default()
                    },
                });
            }
            if let Some(r) = &run.result {
                let at = |s: &Option<crate::rr::RrStep>| {
                    s.as_ref()
                        .map_or("none".to_owned(), |b| format!("{:.0}/s", b.rate))
                };
                println!(
                    "  {:<32} p99 < 10 ms: {}  p99 < 20 ms: {}  ({})",
                    kind.label(),
                    at(&r.result.best),
                    at(&r.result.best_20ms),
                    r.result.stopped_because
                );
            }
            runs.push(run);
        }
    }
    runs
}
