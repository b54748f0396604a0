//! What the request handlers see of a connection, and its start: the `connected` frame and
//! the channels the server joins for it (personal inbox, route-bound channel).

use std::collections::HashSet;
use std::sync::Arc;

use tidings_protocol::messages::{ChannelPosition, Connected, Recover};
use tidings_protocol::{Code, PROTOCOL_VERSION, ServerFrame, ServerMessage};

use crate::auth::Claims;
use crate::errors::RequestError;
use crate::hub::{Asked, Conn};
use crate::node::{Caller, Shared};
use crate::store::{Position, StoreError};
use crate::time::millis;

/// One connection's state, as request handlers use it.
pub(crate) struct Session {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conn: Arc<Conn>,
    pub(crate) claims: Arc<Claims>,
    /// The device named at connect (`?device=`), for the offline inbox.
    pub(crate) device: String,
    /// Channels this connection is in, including the automatic ones.
    pub(crate) subscriptions: HashSet<Arc<str>>,
    /// Channels the server joined by itself (personal, route-bound): they cannot be left.
    pub(crate) automatic: Vec<Arc<str>>,
}

impl Session {
    pub(crate) fn new(
        shared: Arc<Shared>,
        conn: Arc<Conn>,
        claims: Claims,
        device: String,
    ) -> Self {
        Session {
            shared,
            conn,
            claims: Arc::new(claims),
            device,
            subscriptions: HashSet::new(),
            automatic: Vec::new(),
        }
    }

    /// This connection's user, as the node's operations see a caller.
    pub(crate) fn caller(&self) -> Caller<'_> {
        Caller::User {
            user_id: &self.conn.user_id,
            claims: &self.claims,
        }
    }

    /// Queues an `error` frame answering request `id`.
    pub(crate) fn reply_error(&self, id: Option<u64>, error: &RequestError) {
        crate::requests::reply_error(&self.conn, id, error);
    }

    /// Queues `connected`, then joins the personal and route-bound channels. On an error the
    /// connection must be closed with it.
    pub(crate) async fn start(
        &mut self,
        bound_channel: Option<String>,
    ) -> Result<(), RequestError> {
        let personal = tidings_protocol::user_channel(&self.conn.user_id);
        let mut automatic = vec![personal.clone()];
        if let Some(channel) = bound_channel {
            self.shared
                .check_read(self.caller(), &channel)
                .await
                .map_err(|e| match e {
                    // The application's own reason, when its hook refused.
                    crate::errors::ChannelError::Backend(_) => RequestError::from(e),
                    e if e.code() == Code::Forbidden => {
                        RequestError::new(Code::Forbidden, format!("access to {channel} denied"))
                    }
                    e => RequestError::from(e),
                })?;
            if channel != personal {
                automatic.push(channel);
            }
        }
        // Read positions first and announce them in `connected`; then subscribe recovering
        // from those positions, so whatever is published in between still arrives, after
        // `connected` and in order.
        let mut positions = Vec::with_capacity(automatic.len());
        for channel in automatic {
            let position = self.shared.hub.position(&channel).await?;
            // The personal channel is the offline inbox: it starts where this device
            // acknowledged, so what was published while it was away follows `connected`.
            let start = if channel == personal {
                self.inbox_start(&channel, &position).await?
            } else {
                InboxStart::live(position.offset)
            };
            positions.push(ChannelPosition {
                channel,
                epoch: position.epoch.to_string(),
                offset: start.offset,
                recovered: start.recovered,
                history_start: start.history_start,
            });
        }
        self.send_connected(positions.clone());
        for position in positions {
            let recover = Recover {
                epoch: position.epoch,
                offset: position.offset,
            };
            let hub = &self.shared.hub;
            hub.subscribe(
                &self.conn,
                &position.channel,
                None,
                Some(recover),
                Asked::Automatically,
            )
            .await?;
            let channel: Arc<str> = Arc::from(position.channel);
            self.automatic.push(channel.clone());
            self.subscriptions.insert(channel);
        }
        Ok(())
    }

    fn send_connected(&self, subscriptions: Vec<ChannelPosition>) {
        let config = &self.shared.config;
        self.conn
            .send(&ServerFrame::push(ServerMessage::Connected(Connected {
                session_id: self.conn.session_id.clone(),
                user_id: self.conn.user_id.to_string(),
                protocol: PROTOCOL_VERSION,
                heartbeat_ms: millis(config.heartbeat),
                heartbeat_timeout_ms: millis(config.heartbeat_timeout),
                max_frame_bytes: config.limits.max_frame_bytes,
                subscriptions,
            })));
    }

    /// Where the personal channel starts: after the device's (or user's) last ack in this
    /// epoch, else after 0; moved past what retention already removed, and to the newest
    /// `recovery_limit` items. Whether that start skips anything is `recovered`. Without an
    /// inbox store, the live position.
    async fn inbox_start(
        &self,
        channel: &str,
        position: &Position,
    ) -> Result<InboxStart, StoreError> {
        let stores = self.shared.hub.stores();
        let Some(inbox) = &stores.inbox else {
            return Ok(InboxStart::live(position.offset));
        };
        let (user, device) = (&*self.conn.user_id, self.device.as_str());
        let known = inbox.inbox_start(user, device).await?;
        // A position from another epoch (or ahead of this one) says nothing about what
        // this device has seen.
        let (acked, same_epoch) = match &known {
            Some(start) if *start.epoch == *position.epoch && start.offset <= position.offset => {
                (start.offset, true)
            }
            Some(_) => (0, false),
            None => (0, true),
        };
        let mut start = InboxStart {
            offset: position.offset,
            recovered: Some(same_epoch),
            history_start: None,
        };
        if acked < position.offset {
            let oldest = stores
                .publications
                .history(channel, Some(acked), None, 1)
                .await?;
            let first = oldest.first().and_then(|p| p.offset);
            let newest_allowed = position
                .offset
                .saturating_sub(self.shared.hub.recovery_limit());
            // Start after the ack, or after what retention removed, or at the limit.
            let offset = first
                .map_or(position.offset, |first| first.saturating_sub(1))
                .max(acked)
                .max(newest_allowed);
            if offset > acked {
                start.recovered = Some(false);
            }
            start.offset = offset;
            if start.recovered == Some(false) {
                start.history_start = first;
            }
        }
        // A device's first connection pins its own position, so from now on it gets every
        // item once, whatever the user's other devices acknowledge.
        if !known.as_ref().is_some_and(|k| k.own) {
            inbox
                .ack(user, device, &position.epoch, start.offset)
                .await?;
        }
        Ok(start)
    }
}

/// Where an automatic channel starts, as `connected` tells it.
struct InboxStart {
    offset: u64,
    recovered: Option<bool>,
    history_start: Option<u64>,
}

impl InboxStart {
    /// At the latest offset, nothing to say about recovery (a bound channel, or no inbox).
    fn live(offset: u64) -> InboxStart {
        InboxStart {
            offset,
            recovered: None,
            history_start: None,
        }
    }
}
