//! What every driver does the same way around the [`Core`]: it forwards the application's
//! operations, remembers who waits for each result, tells `connect` when the client is
//! ready (or closed for good first), and keeps the handlers. A [`Session`] does all of that,
//! so a driver only carries out the [`Io`] and calls what [`Session::poll`] hands it.

use std::collections::VecDeque;

use super::{
    ClientEvent, Completion, ConnId, ConnectionEvent, Core, Handlers, OpId, Operation, Output,
    Timer,
};
use crate::ClientError;

/// Input and output the driver performs for the core.
#[derive(Debug, Clone, PartialEq)]
pub enum Io {
    /// Obtain a token (run the application's provider) and answer with
    /// [`Input::Token`](super::Input::Token).
    NeedToken {
        /// The attempt the token is for.
        conn: ConnId,
    },
    /// Open a WebSocket to `url` offering the `tidings.v1` subprotocol.
    Open {
        /// The id to tag this transport's inputs with.
        conn: ConnId,
        /// The URL, token included.
        url: String,
    },
    /// Send a text frame on `conn` (drop it if `conn` is no longer the open transport).
    Send {
        /// The transport.
        conn: ConnId,
        /// The frame.
        text: String,
    },
    /// Close (or abort) `conn` with this code and reason; report nothing more about it.
    Close {
        /// The transport.
        conn: ConnId,
        /// The close code to send.
        code: u16,
        /// The close reason to send.
        reason: String,
    },
    /// Arm `timer` for `deadline`, replacing its earlier deadline.
    SetTimer {
        /// The timer.
        timer: Timer,
        /// When it should fire (milliseconds on the driver's clock).
        deadline: u64,
    },
    /// Disarm `timer`.
    CancelTimer {
        /// The timer.
        timer: Timer,
    },
}

/// What the driver does next, from [`Session::poll`]. `R` is how the driver answers one
/// operation (a channel, a promise's functions).
#[derive(Debug)]
pub enum Step<R> {
    /// Input or output for the core.
    Io(Io),
    /// The client is ready (its first `connected` since [`Session::connect`]), or closed
    /// for good before it was: answer whoever waits for the connection.
    Ready(Result<(), ClientError>),
    /// An event for the handlers ([`Session::handlers`] says which).
    Event(ClientEvent),
    /// An operation finished: answer `R`.
    Reply(R, Result<Completion, ClientError>),
}

/// A [`Core`], the waiters of its operations and the handlers of its events.
pub struct Session<R, F> {
    core: Core,
    /// Who waits for each operation in flight (few at a time: a list is enough).
    replies: Vec<(OpId, R)>,
    handlers: Handlers<F>,
    /// `connect` was called and neither `connected` nor a terminal close followed yet.
    awaiting_ready: bool,
    /// Steps decided outside the core's outputs, delivered first.
    steps: VecDeque<Step<R>>,
}

impl<R, F> std::fmt::Debug for Session<R, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("core", &self.core)
            .field("waiting", &self.replies.len())
            .finish_non_exhaustive()
    }
}

impl<R, F> Session<R, F> {
    /// A session of `core`, without handlers.
    pub fn new(core: Core) -> Session<R, F> {
        Session {
            core,
            replies: Vec::new(),
            handlers: Handlers::default(),
            awaiting_ready: false,
            steps: VecDeque::new(),
        }
    }

    /// The core, to read its state.
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The core, to feed it [`Input`](super::Input)s and commands without a result
    /// (typing, close).
    pub fn core_mut(&mut self) -> &mut Core {
        &mut self.core
    }

    /// The handlers.
    pub fn handlers(&self) -> &Handlers<F> {
        &self.handlers
    }

    /// The handlers, to add or remove some.
    pub fn handlers_mut(&mut self) -> &mut Handlers<F> {
        &mut self.handlers
    }

    /// Starts connecting; a [`Step::Ready`] follows on the first `connected` or on a
    /// terminal close, whichever comes first.
    pub fn connect(&mut self, now: u64) {
        self.awaiting_ready = true;
        self.core.connect(now);
    }

    /// Starts `operation`; its result reaches `reply` as a [`Step::Reply`], also when it
    /// fails at once. Leaving a channel forgets the handlers registered for it.
    pub fn perform(&mut self, now: u64, operation: Operation, reply: R) {
        if let Operation::Unsubscribe { channel } = &operation {
            self.handlers.remove_channel(channel);
        }
        match self.core.perform(now, operation) {
            Ok(op) => self.replies.push((op, reply)),
            Err(error) => self.steps.push_back(Step::Reply(reply, Err(error))),
        }
    }

    /// The next step, in the order the core decided; drain until `None` after every call
    /// into the session or its core.
    pub fn poll(&mut self) -> Option<Step<R>> {
        loop {
            if let Some(step) = self.steps.pop_front() {
                return Some(step);
            }
            let step = match self.core.poll_output()? {
                Output::NeedToken { conn } => Step::Io(Io::NeedToken { conn }),
                Output::OpenTransport { conn, url } => Step::Io(Io::Open { conn, url }),
                Output::Send { conn, text } => Step::Io(Io::Send { conn, text }),
                Output::CloseTransport { conn, code, reason } => {
                    Step::Io(Io::Close { conn, code, reason })
                }
                Output::SetTimer { timer, deadline } => Step::Io(Io::SetTimer { timer, deadline }),
                Output::CancelTimer { timer } => Step::Io(Io::CancelTimer { timer }),
                Output::Event(event) => match self.readiness(&event) {
                    // Ready first, so code woken by it sees the client as it is now.
                    Some(ready) => {
                        self.steps.push_back(Step::Event(event));
                        Step::Ready(ready)
                    }
                    None => Step::Event(event),
                },
                Output::Completed { op, result } => {
                    let Some(at) = self.replies.iter().position(|(id, _)| *id == op) else {
                        continue;
                    };
                    let (_, reply) = self.replies.swap_remove(at);
                    Step::Reply(reply, result)
                }
            };
            return Some(step);
        }
    }

    /// Whether `event` settles a `connect` that waits.
    fn readiness(&mut self, event: &ClientEvent) -> Option<Result<(), ClientError>> {
        if !self.awaiting_ready {
            return None;
        }
        let ready = match event {
            ClientEvent::Connection(ConnectionEvent::Connected(_)) => Ok(()),
            ClientEvent::Connection(ConnectionEvent::Closed { code, reason }) => {
                Err(ClientError::Closed {
                    code: *code,
                    reason: reason.clone(),
                })
            }
            _ => return None,
        };
        self.awaiting_ready = false;
        Some(ready)
    }
}
