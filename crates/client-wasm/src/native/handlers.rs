//! The application's handlers as Rust closures: how each kind is made, and how an event is
//! handed to those that hear it (which ones: [`Handlers`], shared with every driver).

use std::panic::{AssertUnwindSafe, catch_unwind};

use tidings_protocol::Event;

use crate::ClientError;
use crate::core::{ClientEvent, ConnectionEvent, Handlers, Listen, Publication};

/// A handler, decoding included: an error is a payload that did not decode.
pub(super) type HandlerFn = Box<dyn FnMut(&ClientEvent) -> Result<(), ClientError> + Send>;

/// What [`Client::add_handler`](super::Client) registers.
type Registration = (Listen, Option<String>, HandlerFn);

/// Publications of type `E` (of `channel` only, when given), decoded; undecodable ones are
/// reported.
pub(super) fn typed<E: Event>(
    channel: Option<String>,
    mut handler: impl FnMut(E) + Send + 'static,
) -> Registration {
    let call = move |event: &ClientEvent| {
        let ClientEvent::Publication(publication) = event else {
            return Ok(());
        };
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
    };
    (Listen::Event(E::TYPE.to_owned()), channel, Box::new(call))
}

/// Every publication (of `channel` only, when given), raw.
pub(super) fn raw(
    channel: Option<String>,
    mut handler: impl FnMut(&Publication) + Send + 'static,
) -> Registration {
    let call = move |event: &ClientEvent| {
        if let ClientEvent::Publication(publication) = event {
            handler(publication);
        }
        Ok(())
    };
    (Listen::Publication, channel, Box::new(call))
}

/// Connection changes.
pub(super) fn connection(
    mut handler: impl FnMut(&ConnectionEvent) + Send + 'static,
) -> Registration {
    let call = move |event: &ClientEvent| {
        if let ClientEvent::Connection(change) = event {
            handler(change);
        }
        Ok(())
    };
    (Listen::State, None, Box::new(call))
}

/// Every client event.
pub(super) fn every(mut handler: impl FnMut(&ClientEvent) + Send + 'static) -> Registration {
    let call = move |event: &ClientEvent| {
        handler(event);
        Ok(())
    };
    (Listen::All, None, Box::new(call))
}

/// Calls every handler that hears `event`, in registration order. A handler that panics is
/// caught (the client keeps running) and reported, like a payload that does not decode.
pub(super) fn dispatch(handlers: &mut Handlers<HandlerFn>, event: &ClientEvent) {
    for problem in call_all(handlers, event) {
        // Problems while reporting a problem are not reported again.
        let report = ClientEvent::Connection(ConnectionEvent::Error(problem));
        let _ = call_all(handlers, &report);
    }
}

fn call_all(handlers: &mut Handlers<HandlerFn>, event: &ClientEvent) -> Vec<ClientError> {
    let mut problems = Vec::new();
    for (_, call) in handlers.matching_mut(event) {
        match catch_unwind(AssertUnwindSafe(|| call(event))) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => problems.push(error),
            Err(panic) => problems.push(ClientError::Handler(panic_message(&*panic))),
        }
    }
    problems
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
