//! The node's shared state and the one path every entry point takes: the socket's requests,
//! the Rust API ([`Tidings`](crate::Tidings)) and the HTTP API all publish, read history and
//! list presence through these functions, so the channel-name, reserved-channel, size, event,
//! delivery-class and authorization rules exist once.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tidings_protocol::messages::{HistoryPage, Member};
use tidings_protocol::{BROADCAST_CHANNEL, Delivery, RawEvent};

use crate::auth::{AccessRequest, Action, Authenticator, AuthorizeFn, Claims, default_policy};
use crate::config::Config;
use crate::errors::{ChannelError, PublishError};
use crate::hooks::{
    HookError, Hooks, PublishDecision, PublishRequest, RpcRequest, SubscribeRequest,
};
use crate::hub::{Hub, Published, Submitted};
use crate::store::Publication;

/// State shared by every connection and handler.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) auth: Authenticator,
    pub(crate) authorizer: Option<AuthorizeFn>,
    /// The application's subscribe, publish and RPC hooks (or HTTP proxies).
    pub(crate) hooks: Hooks,
    pub(crate) hub: Arc<Hub>,
    /// Set by [`Tidings::shutdown`](crate::Tidings::shutdown): new connections get 503.
    pub(crate) shutting_down: AtomicBool,
    /// One clock for every connection's rate limiter: making one calibrates it (a
    /// measurable share of a connect's CPU when each connection made its own).
    pub(crate) rate_clock: governor::clock::DefaultClock,
}

/// Who asks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Caller<'a> {
    /// A user (a connection, or a token on the HTTP API): the built-in policy and the
    /// application's authorizer decide.
    User {
        user_id: &'a Arc<str>,
        claims: &'a Arc<Claims>,
    },
    /// The application's back end (the Rust API, or the HTTP API's key): trusted with every
    /// channel, but held to the same channel, size and event rules.
    Backend,
    /// The back end publishing for a user (a chat message it has checked): trusted like
    /// [`Caller::Backend`], and the publication names the user as its sender.
    BackendFor { sender: &'a str },
}

impl Caller<'_> {
    /// The publishing user, recorded as the publication's sender.
    fn sender(&self) -> Option<Arc<str>> {
        match self {
            Caller::User { user_id, .. } => Some(Arc::clone(user_id)),
            Caller::Backend => None,
            Caller::BackendFor { sender } => Some(Arc::from(*sender)),
        }
    }
}

/// Default and maximum page sizes of `history`.
pub(crate) const HISTORY_DEFAULT_LIMIT: u32 = 100;
pub(crate) const HISTORY_MAX_LIMIT: u32 = 1000;

/// Bytes an event's envelope adds to its type and data: `{"type":"","data":}`.
const EVENT_ENVELOPE_BYTES: usize = 20;

/// Channel names: 1–255 bytes, no control characters.
pub(crate) fn check_channel_name(channel: &str) -> Result<(), String> {
    if channel.is_empty() || channel.len() > 255 {
        return Err("channel names are 1 to 255 bytes".to_owned());
    }
    if channel.chars().any(char::is_control) {
        return Err("channel names may not contain control characters".to_owned());
    }
    Ok(())
}

/// User ids (a back end's sender, a route's or a connect hook's user): 1–255 bytes, no
/// control characters.
pub(crate) fn check_user_id(sender: &str) -> Result<(), PublishError> {
    if sender.is_empty() || sender.len() > 255 || sender.chars().any(char::is_control) {
        return Err(PublishError::InvalidSender(
            "a sender is a user id of 1 to 255 bytes without control characters".to_owned(),
        ));
    }
    Ok(())
}

/// The refusal for the `broadcast` pseudo-channel: only `Tidings::broadcast` sends there,
/// and nothing is stored in it.
fn reserved(channel: &str) -> Option<String> {
    (channel == BROADCAST_CHANNEL).then(|| {
        format!("{BROADCAST_CHANNEL} is reserved: the back end sends to it with broadcast()")
    })
}

impl Shared {
    /// Whether `caller` may do `action` on `channel`: the built-in policy, then the
    /// application's hook. The back end may do anything.
    pub(crate) async fn authorize(
        &self,
        caller: Caller<'_>,
        channel: &str,
        action: Action,
    ) -> bool {
        let Caller::User { user_id, claims } = caller else {
            return true;
        };
        let request = AccessRequest {
            user_id: user_id.clone(),
            claims: claims.clone(),
            channel: channel.to_owned(),
            action,
        };
        if !default_policy(&self.config.policy, &request) {
            return false;
        }
        match &self.authorizer {
            Some(hook) => hook(request).await,
            None => true,
        }
    }

    /// The checks before joining or reading a channel.
    pub(crate) async fn check_read(
        &self,
        caller: Caller<'_>,
        channel: &str,
    ) -> Result<(), ChannelError> {
        check_channel_name(channel).map_err(ChannelError::InvalidChannel)?;
        if let Some(reason) = reserved(channel) {
            return Err(ChannelError::Forbidden(reason));
        }
        if !self.authorize(caller, channel, Action::Subscribe).await {
            return Err(ChannelError::Forbidden(format!(
                "access to {channel} denied"
            )));
        }
        if let (Some(hook), Caller::User { user_id, claims }) = (&self.hooks.subscribe, caller) {
            let request = SubscribeRequest {
                user_id: Arc::clone(user_id),
                channel: channel.to_owned(),
                claims: Arc::clone(claims),
            };
            self.hooks
                .bounded(hook(request))
                .await
                .map_err(ChannelError::Backend)?;
        }
        Ok(())
    }

    /// A user's `rpc` call, answered by the application's hook (or RPC proxy).
    pub(crate) async fn rpc(
        &self,
        user_id: &Arc<str>,
        claims: &Arc<Claims>,
        method: String,
        data: serde_json::Value,
    ) -> Result<serde_json::Value, HookError> {
        let Some(hook) = &self.hooks.rpc else {
            return Err(HookError::NotFound(format!(
                "no back end answers rpc here (method {method})"
            )));
        };
        let request = RpcRequest {
            user_id: Arc::clone(user_id),
            method,
            data,
            claims: Arc::clone(claims),
        };
        self.hooks.bounded(hook(request)).await
    }

    /// Publishes an event: checks the channel, the size, the event and the caller's right,
    /// picks the delivery class, then stores (unless ephemeral) and fans out.
    pub(crate) async fn publish(
        &self,
        caller: Caller<'_>,
        channel: &str,
        event: RawEvent,
        delivery: Option<Delivery>,
    ) -> Result<Published, PublishError> {
        let submitted = self
            .submit_publish(caller, channel, event, delivery)
            .await?;
        Ok(submitted.outcome().await?)
    }

    /// [`Shared::publish`] without waiting for the commit: the checks, then the publication's
    /// place in its channel. A connection answers the [`Submitted`] later and reads on.
    pub(crate) async fn submit_publish(
        &self,
        caller: Caller<'_>,
        channel: &str,
        event: RawEvent,
        delivery: Option<Delivery>,
    ) -> Result<Submitted, PublishError> {
        check_channel_name(channel).map_err(PublishError::InvalidChannel)?;
        if let Some(reason) = reserved(channel) {
            return Err(PublishError::Forbidden(reason));
        }
        if let Caller::BackendFor { sender } = caller {
            check_user_id(sender)?;
        }
        self.check_size(&event)?;
        event.validate_standard().map_err(|e| {
            PublishError::InvalidEvent(format!("invalid {} event: {e}", event.kind()))
        })?;
        if !self.authorize(caller, channel, Action::Publish).await {
            return Err(PublishError::Forbidden(format!(
                "publishing to {channel} denied"
            )));
        }
        let event = match (&self.hooks.publish, caller) {
            (Some(hook), Caller::User { user_id, claims }) => {
                let request = PublishRequest {
                    user_id: Arc::clone(user_id),
                    channel: channel.to_owned(),
                    event,
                    claims: Arc::clone(claims),
                };
                let original = request.event.clone();
                match self.hooks.bounded(hook(request)).await {
                    Ok(PublishDecision::Allow) => original,
                    Ok(PublishDecision::Replace(replacement)) => {
                        // The back end's event meets the same rules as the client's.
                        self.check_size(&replacement)?;
                        replacement.validate_standard().map_err(|e| {
                            PublishError::InvalidEvent(format!(
                                "the back end's {} event is invalid: {e}",
                                replacement.kind()
                            ))
                        })?;
                        replacement
                    }
                    Err(error) => return Err(PublishError::Backend(error)),
                }
            }
            _ => event,
        };
        let requested = delivery.unwrap_or_else(|| event.default_delivery());
        // Channels of an ephemeral class are never stored, whatever the event type says.
        let delivery = if self.config.retention(channel).ephemeral {
            Delivery::Ephemeral
        } else {
            requested
        };
        Ok(self
            .hub
            .submit(channel, event, caller.sender(), delivery)
            .await?)
    }

    /// Refuses an event larger than any client could receive: the frame limit.
    pub(crate) fn check_size(&self, event: &RawEvent) -> Result<(), PublishError> {
        let size = event.kind().len() + event.data_json().len() + EVENT_ENVELOPE_BYTES;
        let limit = self.config.limits.max_frame_bytes;
        if size > limit {
            return Err(PublishError::TooLarge { size, limit });
        }
        Ok(())
    }

    /// A page of a channel's stored history (default 100, at most 1000 publications).
    pub(crate) async fn history(
        &self,
        caller: Caller<'_>,
        channel: &str,
        since: Option<u64>,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, ChannelError> {
        self.check_read(caller, channel).await?;
        let store = &self.hub.stores().publications;
        let position = store.position(channel).await?;
        let limit = limit
            .unwrap_or(HISTORY_DEFAULT_LIMIT)
            .clamp(1, HISTORY_MAX_LIMIT);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut publications = store.history(channel, since, before, limit).await?;
        // One reply must fit a connection's queue: a page of large publications is cut short
        // (at least one publication), and the client pages on from the last offset it got.
        let budget = self.config.limits.outbound_queue_bytes / 2;
        let fitting = |page: &mut dyn Iterator<Item = &Arc<Publication>>| {
            let mut bytes = 0;
            page.take_while(|p| {
                bytes += p.frame().len();
                bytes <= budget
            })
            .count()
            .max(1)
        };
        // Paging back (no `since`) keeps the newest; paging forward, the oldest.
        if since.is_none() {
            let keep = fitting(&mut publications.iter().rev()).min(publications.len());
            publications.drain(..publications.len() - keep);
        } else {
            let keep = fitting(&mut publications.iter());
            publications.truncate(keep);
        }
        Ok(HistoryPage {
            channel: channel.to_owned(),
            epoch: position.epoch.to_string(),
            offset: position.offset,
            publications: publications.iter().map(|p| p.to_message()).collect(),
        })
    }

    /// A channel's members on this node, one entry per user.
    pub(crate) async fn presence(
        &self,
        caller: Caller<'_>,
        channel: &str,
    ) -> Result<Vec<Member>, ChannelError> {
        self.check_read(caller, channel).await?;
        Ok(self.hub.members(channel).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        assert!(check_channel_name("ticket:1").is_ok());
        assert!(check_channel_name("").is_err());
        assert!(check_channel_name(&"x".repeat(256)).is_err());
        assert!(check_channel_name("a\nb").is_err());
        assert!(reserved(BROADCAST_CHANNEL).is_some());
        assert!(reserved("lobby").is_none());
    }
}
