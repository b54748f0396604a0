//! The application's handlers, owned by the driver task and called from it in event order.

use std::panic::{AssertUnwindSafe, catch_unwind};

use tidings_protocol::Event;

use super::HandlerId;
use crate::ClientError;
use crate::core::{ClientEvent, ConnectionEvent, Publication};

/// A publication handler, decoding included: an error is a payload that did not decode.
type PublicationFn = Box<dyn FnMut(&Publication) -> Result<(), ClientError> + Send>;

/// What a handler listens to.
pub(super) enum Handler {
    /// Publications, of one channel or all, decoded as one event type or raw.
    Publication {
        channel: Option<String>,
        call: PublicationFn,
    },
    /// Connection changes.
    Connection(Box<dyn FnMut(&ConnectionEvent) + Send>),
    /// Every client event.
    Event(Box<dyn FnMut(&ClientEvent) + Send>),
}

impl Handler {
    /// A handler for publications of type `E`: others are skipped, undecodable ones
    /// reported.
    pub(super) fn typed<E: Event>(
        channel: Option<String>,
        mut handler: impl FnMut(E) + Send + 'static,
    ) -> Handler {
        Handler::Publication {
            channel,
            call: Box::new(move |publication: &Publication| {
                match publication.event.decode::<E>() {
                    None => Ok(()),
                    Some(Ok(event)) => {
                        handler(event);
                        Ok(())
                    }
                    Some(Err(error)) => Err(ClientError::Decode(format!(
                        "{} on {} at {:?}: {error}",
                        E::TYPE,
                        publication.channel,
                        publication.offset
                    ))),
                }
            }),
        }
    }

    /// A handler for every publication, raw.
    pub(super) fn raw(
        channel: Option<String>,
        mut handler: impl FnMut(&Publication) + Send + 'static,
    ) -> Handler {
        Handler::Publication {
            channel,
            call: Box::new(move |publication: &Publication| {
                handler(publication);
                Ok(())
            }),
        }
    }
}

/// Every registered handler, in registration order.
#[derive(Default)]
pub(super) struct Registry {
    handlers: Vec<(HandlerId, Handler)>,
}

impl Registry {
    pub(super) fn add(&mut self, id: HandlerId, handler: Handler) {
        self.handlers.push((id, handler));
    }

    pub(super) fn remove(&mut self, id: HandlerId) {
        self.handlers.retain(|(existing, _)| *existing != id);
    }

    /// Forgets the handlers of one channel (after the application unsubscribed).
    pub(super) fn remove_channel(&mut self, channel: &str) {
        self.handlers.retain(|(_, handler)| {
            !matches!(handler, Handler::Publication { channel: Some(c), .. } if c == channel)
        });
    }

    /// Calls every handler interested in `event`. A handler that panics is caught (the
    /// client keeps running) and reported, like a payload that does not decode.
    pub(super) fn dispatch(&mut self, event: &ClientEvent) {
        for problem in self.call_all(event) {
            // Problems while reporting a problem are not reported again.
            let _ = self.call_all(&ClientEvent::Connection(ConnectionEvent::Error(problem)));
        }
    }

    fn call_all(&mut self, event: &ClientEvent) -> Vec<ClientError> {
        let mut problems = Vec::new();
        for (_, handler) in &mut self.handlers {
            let outcome = catch_unwind(AssertUnwindSafe(|| match (handler, event) {
                (Handler::Event(call), _) => {
                    call(event);
                    Ok(())
                }
                (Handler::Connection(call), ClientEvent::Connection(change)) => {
                    call(change);
                    Ok(())
                }
                (Handler::Publication { channel, call }, ClientEvent::Publication(p))
                    if channel.as_deref().is_none_or(|c| c == p.channel) =>
                {
                    call(p)
                }
                _ => Ok(()),
            }));
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(error)) => problems.push(error),
                Err(panic) => problems.push(ClientError::Handler(panic_message(&*panic))),
            }
        }
        problems
    }
}

/// The message of a caught panic, when it has one.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "a handler panicked".to_owned()
    }
}
