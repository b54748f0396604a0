//! The application's handlers, for every driver: what each listens to, and which of them an
//! event goes to. Drivers differ only in what a handler is (a Rust closure, a JavaScript
//! function) and how it is called.

use super::ClientEvent;

/// Identifies a registered handler, for removing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HandlerId(u64);

impl HandlerId {
    /// The number behind the id (JavaScript gets ids as numbers).
    pub fn get(self) -> u64 {
        self.0
    }

    /// The id with this number (the inverse of [`HandlerId::get`]).
    pub fn from_raw(raw: u64) -> HandlerId {
        HandlerId(raw)
    }
}

/// What a handler listens to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Listen {
    /// Every client event.
    All,
    /// Connection changes ([`ClientEvent::Connection`]).
    State,
    /// Every publication.
    Publication,
    /// Publications of this event type only.
    Event(String),
    /// Subscriptions started or restored.
    Subscribed,
    /// Subscriptions the server refused to restore.
    Unsubscribed,
    /// Users joining and leaving.
    Presence,
    /// Typing notices.
    Typing,
}

impl Listen {
    /// The listen of a name as applications in other languages give it: the reserved names
    /// `state`, `publication`, `subscribed`, `unsubscribed`, `presence` and `typing`, and
    /// any other name is an event type.
    pub fn parse(name: &str) -> Listen {
        match name {
            "state" => Listen::State,
            "publication" => Listen::Publication,
            "subscribed" => Listen::Subscribed,
            "unsubscribed" => Listen::Unsubscribed,
            "presence" => Listen::Presence,
            "typing" => Listen::Typing,
            other => Listen::Event(other.to_owned()),
        }
    }

    /// Whether a handler listening to this hears `event`.
    fn hears(&self, event: &ClientEvent) -> bool {
        match (self, event) {
            (Listen::All, _)
            | (Listen::State, ClientEvent::Connection(_))
            | (Listen::Publication, ClientEvent::Publication(_))
            | (Listen::Subscribed, ClientEvent::Subscribed(_))
            | (Listen::Unsubscribed, ClientEvent::Unsubscribed { .. })
            | (Listen::Presence, ClientEvent::UserJoined(_) | ClientEvent::UserLeft(_))
            | (Listen::Typing, ClientEvent::Typing(_)) => true,
            (Listen::Event(kind), ClientEvent::Publication(p)) => p.event.kind() == kind,
            _ => false,
        }
    }
}

/// The channel an event concerns; `None` for connection changes, which concern all.
fn channel_of(event: &ClientEvent) -> Option<&str> {
    match event {
        ClientEvent::Connection(_) => None,
        ClientEvent::Subscribed(s) => Some(&s.channel),
        ClientEvent::Unsubscribed { channel, .. } => Some(channel),
        ClientEvent::Publication(p) => Some(&p.channel),
        ClientEvent::UserJoined(c) | ClientEvent::UserLeft(c) => Some(&c.channel),
        ClientEvent::Typing(t) => Some(&t.channel),
    }
}

/// One registered handler.
struct Entry<F> {
    id: HandlerId,
    listen: Listen,
    /// Only events of this channel (handlers registered on a subscription).
    channel: Option<String>,
    call: F,
}

impl<F> Entry<F> {
    fn wants(&self, event: &ClientEvent) -> bool {
        self.listen.hears(event)
            && match (&self.channel, channel_of(event)) {
                (Some(only), Some(channel)) => only == channel,
                (Some(_), None) | (None, _) => true,
            }
    }
}

/// Every registered handler of a client, in registration order; `F` is what the driver
/// calls.
pub struct Handlers<F> {
    entries: Vec<Entry<F>>,
    /// Last id handed out by [`Handlers::next_id`].
    last: u64,
}

impl<F> Default for Handlers<F> {
    fn default() -> Self {
        Handlers {
            entries: Vec::new(),
            last: 0,
        }
    }
}

impl<F> std::fmt::Debug for Handlers<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers")
            .field("count", &self.entries.len())
            .finish()
    }
}

impl<F> Handlers<F> {
    /// A fresh id (for drivers that do not number handlers themselves).
    pub fn next_id(&mut self) -> HandlerId {
        self.last = self.last.wrapping_add(1);
        HandlerId(self.last)
    }

    /// Registers `call` for `listen`, of `channel` only when given.
    pub fn add(&mut self, id: HandlerId, listen: Listen, channel: Option<String>, call: F) {
        self.entries.push(Entry {
            id,
            listen,
            channel,
            call,
        });
    }

    /// Removes the handler with this id.
    pub fn remove(&mut self, id: HandlerId) {
        self.entries.retain(|entry| entry.id != id);
    }

    /// Removes the earliest handler registered for `listen` on `channel` (`None`: on the
    /// client) whose `call` is `which` (for applications that remove a handler by the
    /// function they registered, not by id).
    pub fn remove_first(
        &mut self,
        listen: &Listen,
        channel: Option<&str>,
        which: impl Fn(&F) -> bool,
    ) {
        let found = self.entries.iter().position(|entry| {
            entry.listen == *listen && entry.channel.as_deref() == channel && which(&entry.call)
        });
        if let Some(at) = found {
            self.entries.remove(at);
        }
    }

    /// Forgets the handlers of one channel (after the application unsubscribed).
    pub fn remove_channel(&mut self, channel: &str) {
        self.entries
            .retain(|entry| entry.channel.as_deref() != Some(channel));
    }

    /// Whether no handler hears `event`.
    pub fn is_deaf_to(&self, event: &ClientEvent) -> bool {
        !self.entries.iter().any(|entry| entry.wants(event))
    }

    /// The handlers that hear `event`, in registration order, with what each listens to.
    pub fn matching<'a>(
        &'a self,
        event: &'a ClientEvent,
    ) -> impl Iterator<Item = (&'a Listen, &'a F)> + 'a {
        self.entries
            .iter()
            .filter(move |entry| entry.wants(event))
            .map(|entry| (&entry.listen, &entry.call))
    }

    /// The same, for handlers that need `&mut` to be called.
    pub fn matching_mut<'a>(
        &'a mut self,
        event: &'a ClientEvent,
    ) -> impl Iterator<Item = (&'a Listen, &'a mut F)> + 'a {
        self.entries
            .iter_mut()
            .filter(move |entry| entry.wants(event))
            .map(|entry| (&entry.listen, &mut entry.call))
    }
}
