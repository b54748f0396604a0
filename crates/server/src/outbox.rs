//! A connection's bounded outbound queue: where fan-out leaves frames for the writer task.
//!
//! Publishers never touch sockets: they push shared, already-encoded frames here under a
//! short lock, and the connection's writer drains everything queued and flushes once. The
//! queue is bounded in frames and bytes. Ephemeral frames coalesce by key and are dropped first;
//! a must-deliver frame that does not fit marks the connection for closing with 4009, and
//! the queue is emptied so the memory is released at once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use tidings_protocol::Code;
use tokio::sync::Notify;

/// One queued frame.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    /// The encoded frame, shared with every other recipient.
    pub(crate) frame: Utf8Bytes,
    /// `Some` for ephemeral frames: a newer frame with the same key replaces this one.
    pub(crate) coalesce: Option<Arc<str>>,
}

impl Outgoing {
    /// A must-deliver frame.
    pub(crate) fn reliable(frame: Utf8Bytes) -> Outgoing {
        Outgoing {
            frame,
            coalesce: None,
        }
    }

    /// An ephemeral frame with its coalescing key.
    pub(crate) fn ephemeral(frame: Utf8Bytes, key: Arc<str>) -> Outgoing {
        Outgoing {
            frame,
            coalesce: Some(key),
        }
    }
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued for sending.
    Queued,
    /// Replaced an older queued frame with the same key.
    Coalesced,
    /// Ephemeral and the queue was full: dropped.
    Dropped,
    /// Must-deliver and the queue was full: the connection is now closing with 4009.
    Overflowed,
    /// The connection is already closing; nothing was queued.
    Closed,
}

impl Pushed {
    /// Whether the frame will reach the socket.
    pub(crate) fn delivered(self) -> bool {
        matches!(self, Pushed::Queued | Pushed::Coalesced)
    }
}

/// The close the writer sends after the last queued frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloseOrder {
    pub(crate) code: Code,
    pub(crate) reason: String,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Outgoing>,
    bytes: usize,
    close: Option<CloseOrder>,
    /// Highest byte count ever queued, for tests and metrics.
    peak_bytes: usize,
}

/// The queue, shared by the fan-out (producers) and the connection's writer (consumer).
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer: frames queued or a close ordered.
    wake: Notify,
    /// Wakes the reader when a close is ordered (it stops reading and lets the writer finish).
    closing: Notify,
    /// Wakes replays waiting for room: the writer took the queue, or a close was ordered.
    drained: Notify,
    max_bytes: usize,
    max_frames: usize,
}

/// What the writer takes in one go.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) frames: VecDeque<Outgoing>,
    pub(crate) ping: bool,
    pub(crate) close: Option<CloseOrder>,
}

impl Outbox {
    pub(crate) fn new(max_bytes: usize, max_frames: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            closing: Notify::new(),
            drained: Notify::new(),
            max_bytes,
            max_frames: max_frames.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent (every update
        // is a single push or swap), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame under the delivery rules described in the module docs.
    pub(crate) fn push(&self, item: Outgoing) -> Pushed {
        let outcome = self.push_locked(&mut self.lock(), item);
        if outcome != Pushed::Dropped && outcome != Pushed::Closed {
            self.wake.notify_one();
        }
        if outcome == Pushed::Overflowed {
            self.closing.notify_one();
            self.drained.notify_waiters();
        }
        outcome
    }

    /// Whether `len` more bytes fit in half the queue now (see [`Outbox::room_for`]).
    pub(crate) fn fits_now(&self, len: usize) -> bool {
        let state = self.lock();
        state.queue.is_empty() || state.bytes + len <= self.max_bytes / 2
    }

    /// Waits until `len` more bytes fit in half the queue (or the queue is empty), so that a
    /// replay feeds the connection only as fast as it drains and live traffic keeps the other
    /// half. False when the connection is closing.
    pub(crate) async fn room_for(&self, len: usize) -> bool {
        loop {
            let drained = self.drained.notified();
            {
                let state = self.lock();
                if state.close.is_some() {
                    return false;
                }
                let half_bytes = state.bytes + len <= self.max_bytes / 2;
                let half_frames = state.queue.len() < self.max_frames / 2;
                if state.queue.is_empty() || (half_bytes && half_frames) {
                    return true;
                }
            }
            drained.await;
        }
    }

    fn fits(&self, state: &State, len: usize) -> bool {
        state.bytes + len <= self.max_bytes && state.queue.len() < self.max_frames
    }

    fn push_locked(&self, state: &mut State, item: Outgoing) -> Pushed {
        if state.close.is_some() {
            return Pushed::Closed;
        }
        let len = item.frame.as_str().len();
        if let Some(key) = &item.coalesce {
            let queued = state
                .queue
                .iter_mut()
                .find(|queued| queued.coalesce.as_deref() == Some(&**key));
            if let Some(slot) = queued {
                let old = std::mem::replace(slot, item).frame.as_str().len();
                state.bytes = state.bytes - old + len;
                state.peak_bytes = state.peak_bytes.max(state.bytes);
                return Pushed::Coalesced;
            }
        }
        if !self.fits(state, len) {
            if item.coalesce.is_some() {
                return Pushed::Dropped;
            }
            // Make room by dropping ephemeral frames before giving up on the client.
            let State { queue, bytes, .. } = state;
            queue.retain(|queued| {
                let keep = queued.coalesce.is_none();
                if !keep {
                    *bytes -= queued.frame.as_str().len();
                }
                keep
            });
            if !self.fits(state, len) {
                state.queue = VecDeque::new();
                state.bytes = 0;
                state.close = Some(CloseOrder {
                    code: Code::SlowConsumer,
                    reason: "outbound queue overflow: the client reads too slowly".to_owned(),
                });
                return Pushed::Overflowed;
            }
        }
        state.bytes += len;
        state.peak_bytes = state.peak_bytes.max(state.bytes);
        state.queue.push_back(item);
        Pushed::Queued
    }

    /// Closes after the frames already queued (the first close order wins).
    pub(crate) fn close(&self, code: Code, reason: impl Into<String>) {
        {
            let mut state = self.lock();
            if state.close.is_none() {
                state.close = Some(CloseOrder {
                    code,
                    reason: reason.into(),
                });
            }
        }
        self.wake.notify_one();
        self.closing.notify_one();
        self.drained.notify_waiters();
    }

    /// Resolves once a close was ordered.
    pub(crate) async fn closed(&self) {
        while !self.is_closing() {
            self.closing.notified().await;
        }
    }

    /// Whether a close was ordered.
    pub(crate) fn is_closing(&self) -> bool {
        self.lock().close.is_some()
    }

    /// Waits for work, then takes everything queued.
    pub(crate) async fn next_batch(&self) -> Batch {
        loop {
            {
                let mut state = self.lock();
                if !state.queue.is_empty() || state.close.is_some() {
                    state.bytes = 0;
                    self.drained.notify_waiters();
                    return Batch {
                        frames: std::mem::take(&mut state.queue),
                        ping: false,
                        close: state.close.clone(),
                    };
                }
            }
            self.wake.notified().await;
        }
    }

    /// (frames, bytes) queued now.
    pub(crate) fn depth(&self) -> (usize, usize) {
        let state = self.lock();
        (state.queue.len(), state.bytes)
    }

    /// The most bytes ever queued at once.
    pub(crate) fn peak_bytes(&self) -> usize {
        self.lock().peak_bytes
    }

    /// Takes every queued frame, as text, without waiting: for tests that run handlers
    /// without a socket.
    #[cfg(test)]
    pub(crate) fn drain(&self) -> Vec<String> {
        let mut state = self.lock();
        state.bytes = 0;
        std::mem::take(&mut state.queue)
            .into_iter()
            .map(|item| item.frame.as_str().to_owned())
            .collect()
    }

    /// The close ordered, if any.
    #[cfg(test)]
    pub(crate) fn close_order(&self) -> Option<CloseOrder> {
        self.lock().close.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Utf8Bytes {
        Utf8Bytes::from("x".repeat(n))
    }

    #[test]
    fn reliable_overflow_closes_with_4009_and_frees_the_queue() {
        let outbox = Outbox::new(100, 10);
        assert_eq!(outbox.push(Outgoing::reliable(text(60))), Pushed::Queued);
        assert_eq!(
            outbox.push(Outgoing::reliable(text(60))),
            Pushed::Overflowed
        );
        assert_eq!(outbox.depth(), (0, 0));
        assert_eq!(outbox.push(Outgoing::reliable(text(1))), Pushed::Closed);
        assert!(outbox.is_closing());
        assert!(outbox.peak_bytes() <= 100);
    }

    #[test]
    fn ephemeral_frames_coalesce_and_give_way() {
        let outbox = Outbox::new(100, 10);
        let key: Arc<str> = "progress\u{0}\"a\"".into();
        assert_eq!(
            outbox.push(Outgoing::ephemeral(text(30), key.clone())),
            Pushed::Queued
        );
        assert_eq!(
            outbox.push(Outgoing::ephemeral(text(40), key.clone())),
            Pushed::Coalesced
        );
        assert_eq!(outbox.depth(), (1, 40));
        // A reliable frame that only fits without the ephemeral one evicts it.
        assert_eq!(outbox.push(Outgoing::reliable(text(90))), Pushed::Queued);
        assert_eq!(outbox.depth(), (1, 90));
        // No room for an ephemeral one: dropped, the connection stays.
        assert_eq!(
            outbox.push(Outgoing::ephemeral(text(20), "other".into())),
            Pushed::Dropped
        );
        assert!(!outbox.is_closing());
    }

    #[test]
    fn frame_count_is_bounded_too() {
        let outbox = Outbox::new(1_000_000, 2);
        assert!(outbox.push(Outgoing::reliable(text(1))).delivered());
        assert!(outbox.push(Outgoing::reliable(text(1))).delivered());
        assert_eq!(outbox.push(Outgoing::reliable(text(1))), Pushed::Overflowed);
    }

    #[tokio::test]
    async fn batches_take_everything_and_carry_the_close() {
        let outbox = Outbox::new(1000, 10);
        outbox.push(Outgoing::reliable(text(1)));
        outbox.push(Outgoing::reliable(text(2)));
        outbox.close(Code::ServerRestart, "restart");
        let batch = outbox.next_batch().await;
        assert_eq!(batch.frames.len(), 2);
        assert_eq!(batch.close.map(|c| c.code), Some(Code::ServerRestart));
        assert_eq!(outbox.depth(), (0, 0));
    }
}
