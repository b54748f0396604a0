//! Tests of the core with a fake driver: a fake transport (frames in and out as text) and a
//! fake clock (timers fire when the test advances time). No sockets, no real time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::type_complexity
)]

mod backoff;
mod connection;
mod requests;
mod session;
mod subscriptions;

use std::collections::BTreeMap;

use tidings_protocol::{ClientFrame, ClientMessage, RawEvent};

use super::{
    ClientEvent, Completion, Config, ConnId, ConnectionEvent, Core, Input, OpId, Output,
    Publication, State, Timer,
};
use crate::ClientError;

/// A core plus everything a driver would hold: the clock, the armed timers, the open
/// transport, and every output not yet looked at.
pub(super) struct Harness {
    pub(super) core: Core,
    pub(super) now: u64,
    pub(super) timers: BTreeMap<Timer, u64>,
    /// The transport the core opened last and has not closed.
    pub(super) conn: Option<ConnId>,
    /// The attempt waiting for a token.
    pub(super) token_for: Option<ConnId>,
    pub(super) log: Vec<Output>,
}

/// The jitter used by default: the largest random number, so delays are deterministic.
pub(super) const RANDOM: u64 = u64::MAX;

impl Harness {
    pub(super) fn new(config: Config) -> Harness {
        Harness::with_random(config, || RANDOM)
    }

    pub(super) fn with_random(
        config: Config,
        random: impl FnMut() -> u64 + Send + 'static,
    ) -> Harness {
        Harness {
            core: Core::with_random(config, Box::new(random)),
            now: 0,
            timers: BTreeMap::new(),
            conn: None,
            token_for: None,
            log: Vec::new(),
        }
    }

    /// A harness with the default config for `ws://test/ws`.
    pub(super) fn default_config() -> Harness {
        Harness::new(Config::new("ws://test/ws"))
    }

    /// Moves the core's outputs into the log, acting on them like a driver would.
    pub(super) fn pump(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match &output {
                Output::SetTimer { timer, deadline } => {
                    self.timers.insert(*timer, *deadline);
                }
                Output::CancelTimer { timer } => {
                    self.timers.remove(timer);
                }
                Output::OpenTransport { conn, .. } => self.conn = Some(*conn),
                Output::CloseTransport { conn, .. } if self.conn == Some(*conn) => self.conn = None,
                Output::NeedToken { conn } => self.token_for = Some(*conn),
                _ => {}
            }
            self.log.push(output);
        }
    }

    /// Every output since the last call.
    pub(super) fn take(&mut self) -> Vec<Output> {
        self.pump();
        std::mem::take(&mut self.log)
    }

    pub(super) fn input(&mut self, input: Input) {
        self.core.handle(self.now, input);
        self.pump();
    }

    /// Advances the fake clock by `ms`, firing every timer that falls due, in order.
    pub(super) fn advance(&mut self, ms: u64) {
        let until = self.now + ms;
        loop {
            let due = self
                .timers
                .iter()
                .filter(|(_, deadline)| **deadline <= until)
                .min_by_key(|(_, deadline)| **deadline)
                .map(|(timer, deadline)| (*timer, *deadline));
            let Some((timer, deadline)) = due else { break };
            self.timers.remove(&timer);
            self.now = self.now.max(deadline);
            self.input(Input::TimerFired(timer));
        }
        self.now = until;
    }

    pub(super) fn connect(&mut self) {
        self.core.connect(self.now);
        self.pump();
    }

    pub(super) fn conn(&self) -> ConnId {
        self.conn.expect("no open transport")
    }

    pub(super) fn open(&mut self) {
        let conn = self.conn();
        self.input(Input::TransportOpened { conn });
    }

    /// The server sends `text`.
    pub(super) fn server(&mut self, text: &str) {
        let conn = self.conn();
        self.input(Input::Frame {
            conn,
            text: text.to_owned(),
        });
    }

    /// The server sends `connected` (heartbeat 25 s + 10 s) with these automatic channels.
    pub(super) fn connected(&mut self, automatic: &[(&str, &str, u64)]) {
        let subscriptions: Vec<String> = automatic
            .iter()
            .map(|(c, e, o)| format!(r#"{{"channel":"{c}","epoch":"{e}","offset":{o}}}"#))
            .collect();
        self.server(&format!(
            r#"{{"type":"connected","data":{{"session_id":"s","user_id":"7","protocol":1,
            "heartbeat_ms":25000,"heartbeat_timeout_ms":10000,"max_frame_bytes":4096,
            "subscriptions":[{}]}}}}"#,
            subscriptions.join(",")
        ));
    }

    /// connect + open + `connected`, from Idle or Reconnecting (firing the reconnect timer).
    pub(super) fn establish(&mut self, automatic: &[(&str, &str, u64)]) {
        match self.core.state() {
            State::Idle | State::Closed => self.connect(),
            State::Reconnecting => {
                let deadline = self.timers[&Timer::Reconnect];
                self.advance(deadline - self.now);
            }
            State::Connecting | State::Connected => {}
        }
        self.open();
        self.connected(automatic);
    }

    /// The transport reports a close with `code`.
    pub(super) fn drop_transport(&mut self, code: u16) {
        let conn = self.conn();
        self.conn = None;
        self.input(Input::TransportClosed {
            conn,
            code: Some(code),
            reason: format!("closed with {code}"),
        });
    }

    /// The server publishes on `channel` at `offset` (`None`: ephemeral).
    pub(super) fn publication(&mut self, channel: &str, epoch: &str, offset: Option<u64>) {
        let offset = offset
            .map(|o| format!(r#""offset":{o},"#))
            .unwrap_or_default();
        self.server(&format!(
            r#"{{"type":"message","data":{{"channel":"{channel}",{offset}"epoch":"{epoch}",
            "ts":1,"event":{{"type":"note","data":{{}}}}}}}}"#
        ));
    }

    /// The server answers subscribe `id`.
    pub(super) fn subscribe_reply(
        &mut self,
        id: u64,
        channel: &str,
        epoch: &str,
        offset: u64,
        recovered: Option<bool>,
    ) {
        let recovered = recovered
            .map(|r| format!(r#","recovered":{r}"#))
            .unwrap_or_default();
        self.server(&format!(
            r#"{{"type":"reply","id":{id},"data":{{"kind":"subscribe","channel":"{channel}",
            "epoch":"{epoch}","offset":{offset}{recovered}}}}}"#
        ));
    }

    /// The server answers request `id` with an error.
    pub(super) fn error_reply(&mut self, id: u64, code: u16) {
        self.server(&format!(
            r#"{{"type":"error","id":{id},"data":{{"code":{code},"message":"no"}}}}"#
        ));
    }
}

/// The frames sent, decoded.
pub(super) fn sent(outputs: &[Output]) -> Vec<ClientFrame> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send { text, .. } => Some(ClientFrame::decode(text).expect("valid frame")),
            _ => None,
        })
        .collect()
}

/// The subscribe frames sent: (id, channel, recover (epoch, offset)).
pub(super) fn subscribes(outputs: &[Output]) -> Vec<(u64, String, Option<(String, u64)>)> {
    sent(outputs)
        .into_iter()
        .filter_map(|f| match f.message {
            ClientMessage::Subscribe(s) => Some((
                f.id.unwrap_or(0),
                s.channel,
                s.recover.map(|r| (r.epoch, r.offset)),
            )),
            _ => None,
        })
        .collect()
}

/// The application events.
pub(super) fn events(outputs: &[Output]) -> Vec<ClientEvent> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// The connection events.
pub(super) fn connection_events(outputs: &[Output]) -> Vec<ConnectionEvent> {
    events(outputs)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Connection(c) => Some(c),
            _ => None,
        })
        .collect()
}

/// (channel, offset) of every publication delivered.
pub(super) fn delivered(outputs: &[Output]) -> Vec<(String, Option<u64>)> {
    events(outputs)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Publication(Publication {
                channel, offset, ..
            }) => Some((channel, offset)),
            _ => None,
        })
        .collect()
}

/// The completions, by operation.
pub(super) fn completions(outputs: &[Output]) -> Vec<(OpId, Result<Completion, ClientError>)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Completed { op, result } => Some((*op, result.clone())),
            _ => None,
        })
        .collect()
}

/// A test event payload.
pub(super) fn note() -> RawEvent {
    RawEvent::from_parts("note", &serde_json::json!({"text": "hi"})).unwrap()
}
