//! One load-generator connection, speaking the Tidings protocol, Socket.IO v4 over WebSocket,
//! the raw line protocol of the ceilings, or a bare WebSocket handshake.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::Res;

/// The protocol a server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Proto {
    /// Tidings v1 frames on `/ws?token=`.
    Tidings,
    /// Socket.IO v4 over WebSocket only.
    SocketIo,
    /// The raw line protocol of the TCP ceilings.
    Raw,
    /// A bare WebSocket server that answers the handshake and one `ok` frame.
    Ws,
}

/// Where and how to connect.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) proto: Proto,
    pub(crate) addr: SocketAddr,
    pub(crate) secret: Arc<str>,
    /// Every client connects as the same user (`bench`), whatever name it is given.
    pub(crate) one_user: bool,
}

/// What one read from a connection gave.
pub(crate) enum Incoming {
    /// A frame carrying a bench payload (a publication, or a raw echo).
    Data(Vec<u8>),
    /// The answer to request `id` (`ok` false for a Tidings `error`).
    Ack { id: u64, ok: bool, text: Vec<u8> },
    /// Anything else (presence, pings answered internally, ...).
    Other,
    /// The connection ended; the close code when there was one.
    Closed(Option<u16>),
}

enum Stream {
    Ws(Box<WebSocketStream<TcpStream>>),
    Raw(BufReader<TcpStream>),
}

/// A connected client, past its protocol's handshake.
pub(crate) struct Client {
    proto: Proto,
    stream: Stream,
    next_id: u64,
    line: Vec<u8>,
}

/// Source addresses spread over 127.0.1.1 – 127.0.32.250 so that tens of thousands of
/// connections to one server address never run out of ephemeral ports.
pub(crate) fn source_ip(index: u64) -> Ipv4Addr {
    let n = index % 8000;
    Ipv4Addr::new(127, 0, 1 + (n / 250) as u8, 1 + (n % 250) as u8)
}

async fn tcp_connect(addr: SocketAddr, index: u64, recv_buffer: Option<u32>) -> Res<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    socket.bind(SocketAddr::new(source_ip(index).into(), 0))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The bench payload: sequence number, intended send time (ns since the run's clock
/// origin), padded to exactly 100 bytes of JSON.
pub(crate) fn payload(seq: u64, t_ns: u64) -> String {
    let head = format!("{{\"s\":{seq},\"t\":{t_ns},\"p\":\"");
    let pad = 100usize.saturating_sub(head.len() + 2);
    let mut text = head;
    text.extend(std::iter::repeat_n('x', pad));
    text.push_str("\"}");
    text
}

/// Finds `"s":<seq>` and `"t":<t>` in a frame (in any key order: some servers re-encode the
/// payload with sorted keys); (seq, t_ns).
pub(crate) fn parse_payload(frame: &[u8]) -> Option<(u64, u64)> {
    let s = find(frame, b"\"s\":")? + 4;
    let (seq, _) = digits(frame.get(s..)?)?;
    let t = find(frame, b"\"t\":")? + 4;
    let (t, _) = digits(frame.get(t..)?)?;
    Some((seq, t))
}

fn digits(text: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    let mut used = 0;
    for byte in text {
        if !byte.is_ascii_digit() {
            break;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
        used += 1;
    }
    (used > 0).then_some((value, used))
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    id: Option<u64>,
}

impl Client {
    /// Connects as `user` from the source address of `index` and completes the handshake
    /// up to the protocol's connected state.
    pub(crate) async fn connect(target: &Target, user: &str, index: u64) -> Res<Client> {
        Self::connect_with(target, user, index, None).await
    }

    /// [`Client::connect`] with a small socket receive buffer (for slow consumers).
    pub(crate) async fn connect_with(
        target: &Target,
        user: &str,
        index: u64,
        recv_buffer: Option<u32>,
    ) -> Res<Client> {
        Self::connect_opts(target, user, index, recv_buffer, None).await
    }

    /// [`Client::connect`] as a named device (Tidings `?device=`, whose offline inbox
    /// follows `connected`).
    pub(crate) async fn connect_device(
        target: &Target,
        user: &str,
        index: u64,
        device: &str,
    ) -> Res<Client> {
        Self::connect_opts(target, user, index, None, Some(device)).await
    }

    async fn connect_opts(
        target: &Target,
        user: &str,
        index: u64,
        recv_buffer: Option<u32>,
        device: Option<&str>,
    ) -> Res<Client> {
        let user = if target.one_user { "bench" } else { user };
        let tcp = tcp_connect(target.addr, index, recv_buffer).await?;
        let path = match target.proto {
            Proto::Raw => {
                return Ok(Client {
                    proto: Proto::Raw,
                    stream: Stream::Raw(BufReader::with_capacity(16 * 1024, tcp)),
                    next_id: 1,
                    line: Vec::new(),
                });
            }
            Proto::Tidings => {
                let token = tidings_server::mint_token(&target.secret, user, 24 * 3600)?;
                match device {
                    Some(device) => format!("/ws?token={token}&device={device}"),
                    None => format!("/ws?token={token}"),
                }
            }
            Proto::SocketIo => "/socket.io/?EIO=4&transport=websocket".to_owned(),
            Proto::Ws => "/ws".to_owned(),
        };
        let url = format!("ws://{}{path}", target.addr);
        let config = WebSocketConfig::default()
            .read_buffer_size(16 * 1024)
            .write_buffer_size(0);
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config)).await?;
        let mut client = Client {
            proto: target.proto,
            stream: Stream::Ws(Box::new(ws)),
            next_id: 1,
            line: Vec::new(),
        };
        match target.proto {
            Proto::Tidings => loop {
                let text = client.next_text().await?;
                let env: Envelope<'_> = serde_json::from_slice(&text)?;
                match env.kind.as_ref() {
                    "connected" => break,
                    "error" => return Err(String::from_utf8_lossy(&text).into_owned().into()),
                    _ => {}
                }
            },
            Proto::SocketIo => {
                let open = client.next_text().await?;
                if !open.starts_with(b"0") {
                    return Err(format!("expected an engine.io open, got {open:?}").into());
                }
                let token = tidings_server::mint_token(&target.secret, user, 24 * 3600)?;
                client.send(format!("40{{\"token\":\"{token}\"}}")).await?;
                loop {
                    let text = client.next_text().await?;
                    if text.starts_with(b"40") {
                        break;
                    }
                    if text.starts_with(b"44") {
                        return Err(String::from_utf8_lossy(&text).into_owned().into());
                    }
                    if text == b"2" {
                        client.send("3".to_owned()).await?;
                    }
                }
            }
            Proto::Ws => {
                client.next_text().await?;
            }
            Proto::Raw => {}
        }
        Ok(client)
    }

    async fn next_text(&mut self) -> Res<Vec<u8>> {
        let Stream::Ws(ws) = &mut self.stream else {
            return Err("not a WebSocket".into());
        };
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => return Ok(text.as_bytes().to_vec()),
                Some(Ok(Message::Close(frame))) => {
                    return Err(format!("closed during the handshake: {frame:?}").into());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err("closed during the handshake".into()),
            }
        }
    }

    /// Sends one text frame (one line for the raw protocol, newline added).
    pub(crate) async fn send(&mut self, text: String) -> Res<()> {
        match &mut self.stream {
            Stream::Ws(ws) => ws.send(Message::text(text)).await?,
            Stream::Raw(raw) => {
                let mut bytes = text.into_bytes();
                bytes.push(b'\n');
                raw.get_mut().write_all(&bytes).await?;
            }
        }
        Ok(())
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends a join (subscribe) for `room`, optionally recovering from (epoch, offset);
    /// returns the request id. Raw joins are acknowledged with id 0; bare WS has none.
    pub(crate) async fn send_join(&mut self, room: &str, recover: Option<(&str, u64)>) -> Res<u64> {
        let id = self.take_id();
        let frame = match self.proto {
            Proto::Tidings => match recover {
                Some((epoch, offset)) => format!(
                    "{{\"type\":\"subscribe\",\"id\":{id},\"data\":{{\"channel\":\"{room}\",\"recover\":{{\"epoch\":\"{epoch}\",\"offset\":{offset}}}}}}}"
                ),
                None => format!(
                    "{{\"type\":\"subscribe\",\"id\":{id},\"data\":{{\"channel\":\"{room}\"}}}}"
                ),
            },
            Proto::SocketIo => format!("42{id}[\"join\",\"{room}\"]"),
            Proto::Raw => {
                self.send(format!("J {room}")).await?;
                return Ok(0);
            }
            Proto::Ws => return Ok(0),
        };
        self.send(frame).await?;
        Ok(id)
    }

    /// Joins `room` and waits for the acknowledgement; data frames seen meanwhile are given
    /// to `on_data`.
    pub(crate) async fn join(&mut self, room: &str) -> Res<()> {
        if self.proto == Proto::Ws {
            return Ok(());
        }
        let id = self.send_join(room, None).await?;
        loop {
            match self.next().await {
                Incoming::Ack { id: got, ok, text } if got == id => {
                    return if ok {
                        Ok(())
                    } else {
                        Err(String::from_utf8_lossy(&text).into_owned().into())
                    };
                }
                Incoming::Closed(code) => return Err(format!("closed ({code:?})").into()),
                _ => {}
            }
        }
    }

    /// Sends a publication of `payload` to `room`, acknowledged (Tidings, Socket.IO) or not
    /// (raw); returns the request id.
    pub(crate) async fn send_publish(&mut self, room: &str, payload: &str) -> Res<u64> {
        let id = self.take_id();
        let frame = match self.proto {
            Proto::Tidings => format!(
                "{{\"type\":\"publish\",\"id\":{id},\"data\":{{\"channel\":\"{room}\",\"event\":{{\"type\":\"bench\",\"data\":{payload}}}}}}}"
            ),
            Proto::SocketIo => format!("42{id}[\"publish\",\"{room}\",{payload}]"),
            Proto::Raw => format!("P {room} {payload}"),
            Proto::Ws => return Err("a bare WebSocket server has no rooms".into()),
        };
        self.send(frame).await?;
        Ok(id)
    }

    /// Sends a request that the server answers (request/reply): a publication with ack to
    /// `room` (Tidings, Socket.IO), an echo (raw). Returns the id its answer carries (for raw,
    /// the payload's sequence number, which the caller makes equal to the returned id).
    pub(crate) async fn send_request(&mut self, room: &str, seq: u64, t_ns: u64) -> Res<u64> {
        match self.proto {
            Proto::Raw => {
                self.send(format!("E {}", payload(seq, t_ns))).await?;
                Ok(seq)
            }
            _ => self.send_publish(room, &payload(seq, t_ns)).await,
        }
    }

    /// Reads the next frame and classifies it; answers Socket.IO pings on the way.
    pub(crate) async fn next(&mut self) -> Incoming {
        let text = match &mut self.stream {
            Stream::Raw(raw) => {
                self.line.clear();
                match raw.read_until(b'\n', &mut self.line).await {
                    Ok(0) | Err(_) => return Incoming::Closed(None),
                    Ok(_) => {}
                }
                if self.line.starts_with(b"ok") {
                    return Incoming::Ack {
                        id: 0,
                        ok: true,
                        text: Vec::new(),
                    };
                }
                return Incoming::Data(std::mem::take(&mut self.line));
            }
            Stream::Ws(ws) => match ws.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    return Incoming::Closed(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => return Incoming::Other,
                Some(Err(_)) | None => return Incoming::Closed(None),
            },
        };
        let bytes = text.as_bytes();
        match self.proto {
            Proto::Tidings => {
                if bytes.starts_with(b"{\"type\":\"message\"") {
                    return Incoming::Data(bytes.to_vec());
                }
                match serde_json::from_slice::<Envelope<'_>>(bytes) {
                    Ok(env) => match (env.kind.as_ref(), env.id) {
                        ("reply", Some(id)) => Incoming::Ack {
                            id,
                            ok: true,
                            text: bytes.to_vec(),
                        },
                        ("error", Some(id)) => Incoming::Ack {
                            id,
                            ok: false,
                            text: bytes.to_vec(),
                        },
                        ("message", _) => Incoming::Data(bytes.to_vec()),
                        _ => Incoming::Other,
                    },
                    Err(_) => Incoming::Other,
                }
            }
            Proto::SocketIo => {
                if bytes.starts_with(b"42") {
                    return Incoming::Data(bytes.to_vec());
                }
                if let Some(rest) = bytes.strip_prefix(b"43")
                    && let Some((id, _)) = digits(rest)
                {
                    return Incoming::Ack {
                        id,
                        ok: true,
                        text: bytes.to_vec(),
                    };
                }
                if bytes == b"2" {
                    if let Stream::Ws(ws) = &mut self.stream
                        && ws.send(Message::text("3")).await.is_err()
                    {
                        return Incoming::Closed(None);
                    }
                    return Incoming::Other;
                }
                if bytes.starts_with(b"41") || bytes.starts_with(b"1") {
                    return Incoming::Closed(None);
                }
                Incoming::Other
            }
            Proto::Raw | Proto::Ws => Incoming::Data(bytes.to_vec()),
        }
    }

    /// Closes abruptly (no close handshake): what a dropped network does.
    pub(crate) fn drop_now(self) {
        drop(self);
    }
}

/// Tidings `message` frames: (epoch, offset) of the publication, for recovery.
pub(crate) fn tidings_position(frame: &[u8]) -> Option<(String, u64)> {
    #[derive(Deserialize)]
    struct Frame {
        data: Data,
    }
    #[derive(Deserialize)]
    struct Data {
        epoch: String,
        offset: Option<u64>,
    }
    let frame: Frame = serde_json::from_slice(frame).ok()?;
    Some((frame.data.epoch, frame.data.offset?))
}

/// The `epoch` and `offset` of a Tidings subscribe reply.
pub(crate) fn tidings_reply_position(reply: &[u8]) -> Option<(String, u64)> {
    tidings_position(reply)
}

/// How long to wait for any single connection step.
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_100_bytes_and_parses() {
        let p = payload(42, 123_456_789);
        assert_eq!(p.len(), 100);
        assert_eq!(parse_payload(p.as_bytes()), Some((42, 123_456_789)));
        let framed = format!("42[\"message\",{p}]");
        assert_eq!(parse_payload(framed.as_bytes()), Some((42, 123_456_789)));
        let sorted = r#"42["message",{"p":"xx","s":7,"t":9}]"#;
        assert_eq!(parse_payload(sorted.as_bytes()), Some((7, 9)));
        let tidings = r#"{"type":"message","data":{"channel":"fan","offset":3,"epoch":"e","ts":17,"sender":"s","event":{"type":"bench","data":{"s":5,"t":6,"p":"x"}}}}"#;
        assert_eq!(parse_payload(tidings.as_bytes()), Some((5, 6)));
    }

    #[test]
    fn source_ips_stay_in_loopback() {
        for i in [0u64, 1, 249, 250, 7999, 8000, 123_456] {
            let ip = source_ip(i);
            assert!(ip.is_loopback());
            assert_ne!(ip.octets()[3], 0);
        }
    }

    #[test]
    fn positions_of_tidings_frames() {
        let m = br#"{"type":"message","data":{"channel":"c","offset":7,"epoch":"e1","ts":1,"event":{"type":"bench","data":{}}}}"#;
        assert_eq!(tidings_position(m), Some(("e1".into(), 7)));
        let r = br#"{"type":"reply","id":2,"data":{"kind":"subscribe","channel":"c","epoch":"e1","offset":3}}"#;
        assert_eq!(tidings_reply_position(r), Some(("e1".into(), 3)));
    }
}
