//! Subscriptions: the table the client restores after every reconnect, and the per-channel
//! position that keeps publications in order, without duplicates and without silent gaps.

use tidings_protocol::ClientMessage;
use tidings_protocol::messages::{ChannelPosition, MessageBody, Recover, Subscribe, Unsubscribe};

use super::config::millis;
use super::requests::Request;
use super::{ClientEvent, Completion, Core, OpId, Subscribed, Timer};
use crate::ClientError;

/// One subscription, kept across connections.
pub(super) struct Sub {
    /// The event filter sent with every subscribe.
    pub(super) events: Option<Vec<String>>,
    /// The last publication delivered (or the position the subscription started at);
    /// `None` before the first successful subscribe.
    pub(super) position: Option<Position>,
    /// Where the subscription stands on the current connection.
    pub(super) phase: SubPhase,
    /// Application subscribes waiting for the first successful reply.
    pub(super) waiters: Vec<OpId>,
    /// Consecutive retryable refusals while restoring: the backoff exponent.
    pub(super) retries: u32,
}

/// A channel position: offsets compare only within one epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Position {
    pub(super) epoch: String,
    pub(super) offset: u64,
}

/// Where a subscription stands on the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SubPhase {
    /// Not on the server: no connection, or waiting for `connected`.
    Idle,
    /// A subscribe with this wire id is in flight.
    Requested(u64),
    /// Subscribed; publications are delivered.
    Active,
    /// Refused with a retryable code; sent again at this time.
    RetryAt(u64),
}

impl Sub {
    pub(super) fn new(events: Option<Vec<String>>, waiter: OpId) -> Sub {
        Sub {
            events,
            position: None,
            phase: SubPhase::Idle,
            waiters: vec![waiter],
            retries: 0,
        }
    }

    /// The subscription's current position as a [`Subscribed`] (for a subscribe that
    /// finds the channel already subscribed).
    pub(super) fn info(&self, channel: &str) -> Subscribed {
        Subscribed {
            channel: channel.to_owned(),
            epoch: self
                .position
                .as_ref()
                .map(|p| p.epoch.clone())
                .unwrap_or_default(),
            offset: self.position.as_ref().map_or(0, |p| p.offset),
            recovered: None,
            missed: None,
        }
    }
}

impl Core {
    /// Sends a subscribe for `channel`, recovering from its position when it has one.
    pub(super) fn send_subscribe(&mut self, now: u64, channel: &str) {
        let Some(sub) = self.subs.get(channel) else {
            return;
        };
        let recover = sub.position.as_ref().map(|p| Recover {
            epoch: p.epoch.clone(),
            offset: p.offset,
        });
        let message = ClientMessage::Subscribe(Subscribe {
            channel: channel.to_owned(),
            recover: recover.clone(),
            events: sub.events.clone(),
        });
        let request = Request::Subscribe {
            channel: channel.to_owned(),
            recover,
        };
        match self.send_request(now, message, request, true) {
            Ok(id) => {
                if let Some(sub) = self.subs.get_mut(channel) {
                    sub.phase = SubPhase::Requested(id);
                }
            }
            Err(error) => self.drop_subscription(channel, error),
        }
    }

    /// After `connected`: adopts the server's automatic subscriptions, undoes those the
    /// application left, and restores every other subscription.
    pub(super) fn restore_subscriptions(&mut self, now: u64, automatic: &[ChannelPosition]) {
        self.auto = automatic.iter().map(|p| p.channel.clone()).collect();
        for position in automatic {
            let channel = &position.channel;
            if self.left.contains(channel) {
                // Left by the application; the server cannot be told, so drop its traffic.
                continue;
            }
            let server = Position {
                epoch: position.epoch.clone(),
                offset: position.offset,
            };
            if !self.subs.contains_key(channel) {
                let sub = Sub {
                    events: None,
                    position: None,
                    phase: SubPhase::Idle,
                    waiters: Vec::new(),
                    retries: 0,
                };
                self.subs.insert(channel.clone(), sub);
            }
            let Some(sub) = self.subs.get_mut(channel) else {
                continue;
            };
            let recovered = match &sub.position {
                // First connection: the server says whether this device's inbox is whole.
                None => position.recovered,
                Some(mine) if mine.epoch != server.epoch => Some(false),
                Some(mine) if mine.offset >= server.offset => Some(true),
                // Publications were made while the client was away: the server subscribed
                // this connection without replaying them, so ask for them.
                Some(_) => {
                    self.send_subscribe(now, channel);
                    continue;
                }
            };
            if recovered != Some(true) {
                sub.position = Some(server.clone());
            }
            sub.phase = SubPhase::Active;
            sub.retries = 0;
            let info = Subscribed {
                channel: channel.clone(),
                epoch: server.epoch,
                offset: server.offset,
                recovered,
                missed: None,
            };
            let waiters = std::mem::take(&mut sub.waiters);
            self.announce(info, waiters);
        }
        let restore: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, sub)| sub.phase == SubPhase::Idle)
            .map(|(channel, _)| channel.clone())
            .collect();
        for channel in restore {
            self.send_subscribe(now, &channel);
        }
    }

    /// The connection dropped: no subscription is on the server any more.
    pub(super) fn subscriptions_offline(&mut self) {
        for sub in self.subs.values_mut() {
            sub.phase = SubPhase::Idle;
        }
        self.cancel_timer(Timer::Resubscribe);
        // The server forgets a dropped connection's subscriptions, except the automatic
        // ones it adds again on the next connection, whose traffic stays unwanted.
        let auto = &self.auto;
        self.left.retain(|channel| auto.contains(channel));
    }

    /// A subscribe reply. `recover` is what the request asked to recover from.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn subscribe_succeeded(
        &mut self,
        id: u64,
        channel: String,
        recover: Option<Recover>,
        epoch: String,
        offset: u64,
        recovered: Option<bool>,
        missed: Option<u64>,
    ) {
        let Some(sub) = self.subs.get_mut(&channel) else {
            // Unsubscribed meanwhile; the unsubscribe request follows this one.
            return;
        };
        if sub.phase != SubPhase::Requested(id) {
            return;
        }
        let recovered = recover.map(|sent| recovered == Some(true) && sent.epoch == epoch);
        if recovered != Some(true) {
            // Nothing up to `offset` will come: continue from the channel's position (or
            // from what was already delivered, should that be further in the same epoch).
            let ahead = sub
                .position
                .as_ref()
                .is_some_and(|p| p.epoch == epoch && p.offset > offset);
            if !ahead {
                sub.position = Some(Position {
                    epoch: epoch.clone(),
                    offset,
                });
            }
        }
        sub.phase = SubPhase::Active;
        sub.retries = 0;
        let waiters = std::mem::take(&mut sub.waiters);
        let info = Subscribed {
            channel,
            epoch,
            offset,
            recovered,
            missed,
        };
        self.announce(info, waiters);
    }

    /// A subscribe failed (error frame or timeout). A restore refused with a retryable
    /// code is retried with backoff; otherwise the subscription is dropped and whoever
    /// waits for it hears why.
    pub(super) fn subscribe_failed(
        &mut self,
        now: u64,
        id: u64,
        channel: &str,
        error: ClientError,
    ) {
        let Some(sub) = self.subs.get_mut(channel) else {
            return;
        };
        if sub.phase != SubPhase::Requested(id) {
            return;
        }
        let retryable = match &error {
            ClientError::Server { code, .. } => code.is_retryable(),
            ClientError::Timeout { .. } => true,
            _ => false,
        };
        if retryable && sub.waiters.is_empty() {
            let delay = millis(
                self.config
                    .backoff
                    .delay(sub.retries, self.random.next_u64()),
            );
            sub.retries = sub.retries.saturating_add(1);
            let at = now.saturating_add(delay);
            sub.phase = SubPhase::RetryAt(at);
            self.arm_resubscribe();
            return;
        }
        if matches!(error, ClientError::Timeout { .. }) {
            // The server may still subscribe us: leave, and drop what arrives meanwhile.
            self.left.insert(channel.to_owned());
            let message = ClientMessage::Unsubscribe(Unsubscribe {
                channel: channel.to_owned(),
            });
            let request = Request::Unsubscribe {
                channel: channel.to_owned(),
                op: None,
            };
            let _ = self.send_request(now, message, request, true);
        }
        self.drop_subscription(channel, error);
    }

    /// Forgets a subscription the server will not (or cannot) hold.
    fn drop_subscription(&mut self, channel: &str, error: ClientError) {
        let Some(sub) = self.subs.remove(channel) else {
            return;
        };
        self.fail_all(sub.waiters, &error);
        if sub.position.is_some() {
            self.emit(ClientEvent::Unsubscribed {
                channel: channel.to_owned(),
                error,
            });
        }
    }

    /// The resubscribe timer fired: retries every subscription whose time has come.
    pub(super) fn retry_subscriptions(&mut self, now: u64) {
        let due: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, sub)| matches!(sub.phase, SubPhase::RetryAt(at) if at <= now))
            .map(|(channel, _)| channel.clone())
            .collect();
        for channel in due {
            self.send_subscribe(now, &channel);
        }
        self.arm_resubscribe();
    }

    fn arm_resubscribe(&mut self) {
        let next = self
            .subs
            .values()
            .filter_map(|sub| match sub.phase {
                SubPhase::RetryAt(at) => Some(at),
                _ => None,
            })
            .min();
        match next {
            Some(at) => self.set_timer(Timer::Resubscribe, at),
            None => self.cancel_timer(Timer::Resubscribe),
        }
    }

    /// Reports a (re)started subscription to the application and its waiters.
    fn announce(&mut self, info: Subscribed, waiters: Vec<OpId>) {
        for op in waiters {
            self.complete(op, Ok(Completion::Subscribed(info.clone())));
        }
        self.emit(ClientEvent::Subscribed(info));
    }

    /// A `message`: delivers it if it is the next one of its channel, drops duplicates,
    /// and turns gaps (on unfiltered subscriptions) and epoch changes into a recovering
    /// resubscribe.
    pub(super) fn on_message(&mut self, now: u64, message: MessageBody) {
        let Some(sub) = self.subs.get_mut(&message.channel) else {
            if !self.left.contains(&message.channel) {
                // Not a subscription of ours (e.g. the `broadcast` pseudo-channel): nothing
                // to order it against.
                self.emit(ClientEvent::Publication(message));
            }
            return;
        };
        let Some(offset) = message.offset else {
            // Ephemeral: neither stored nor ordered.
            self.emit(ClientEvent::Publication(message));
            return;
        };
        match &mut sub.position {
            None => {
                sub.position = Some(Position {
                    epoch: message.epoch.clone(),
                    offset,
                });
            }
            Some(last) if last.epoch == message.epoch && offset <= last.offset => return,
            // With an event filter, offsets skip the other types by design: not a loss.
            Some(last)
                if last.epoch == message.epoch
                    && (offset == last.offset + 1 || sub.events.is_some()) =>
            {
                last.offset = offset;
            }
            Some(_) => {
                // A gap or a new epoch. Deliver nothing out of order: recover from the last
                // delivered position (a recovery already in flight covers this one too).
                if sub.phase == SubPhase::Active {
                    let channel = message.channel;
                    self.send_subscribe(now, &channel);
                }
                return;
            }
        }
        self.note_processed(now, &message.channel, &message.epoch, offset);
        self.emit(ClientEvent::Publication(message));
    }
}
