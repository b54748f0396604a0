//! A connection's writer task: outbox → socket, one flush per batch, heartbeat pings.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tidings_protocol::{Code, truncate_close_reason};
use tokio::time::Instant;

use crate::hub::Conn;
use crate::outbox::Batch;

/// Sends queued frames, one flush per batch, plus heartbeat pings; ends after a close order
/// or when the socket fails.
pub(super) async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    conn: Arc<Conn>,
    heartbeat: Duration,
) {
    let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let batch = tokio::select! {
            batch = conn.outbox.next_batch() => batch,
            _ = ticker.tick() => Batch { ping: true, ..Batch::default() },
        };
        let Batch {
            frames,
            ping,
            close,
        } = batch;
        let count = frames.len() as u64;
        let mut result = Ok(());
        for item in frames {
            result = sink.feed(Message::Text(item.frame)).await;
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() && ping {
            result = sink.feed(Message::Ping(Default::default())).await;
        }
        if result.is_ok() {
            // A client that stops reading stalls this flush; the outbox keeps bounding memory
            // and a close order (4009) cannot be delivered to it anyway.
            result = sink.flush().await;
        }
        metrics::counter!(crate::metrics::FRAMES_OUT).increment(count);
        if result.is_err() {
            conn.outbox.close(Code::Abnormal, "");
            return;
        }
        if let Some(order) = close {
            if order.code != Code::Abnormal {
                let frame = close_frame(order.code, &order.reason);
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    sink.send(Message::Close(Some(frame))),
                )
                .await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
            return;
        }
    }
}

/// A close frame with the reason cut to what RFC 6455 allows.
pub(crate) fn close_frame(code: Code, reason: &str) -> CloseFrame {
    CloseFrame {
        code: code.as_u16(),
        reason: Utf8Bytes::from(truncate_close_reason(reason)),
    }
}
