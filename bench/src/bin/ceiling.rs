//! The ceilings of this machine, run beside Tidings and its peers in the same bench run.
//!
//! - `ceiling naive --bind ADDR`: raw tokio TCP fan-out, one socket write per delivery.
//! - `ceiling batch --bind ADDR`: raw tokio TCP fan-out whose writer coalesces every frame
//!   queued for a connection into one write (what socketioxide and Tidings do under load).
//! - `ceiling ws --bind ADDR`: a bare tokio-tungstenite server: handshake, one `ok` text
//!   frame, then it holds the connection (answering pings). No JWT, no rooms.
//!
//! The raw line protocol (one frame per line): `J <room>` joins a room and is answered
//! `ok`; `P <room> <payload>` sends `<payload>` to every member of the room; `E <payload>`
//! is answered with `<payload>`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Frame = Arc<[u8]>;
type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Naive,
    Batch,
}

/// A room member: connection id and its writer's queue.
type Member = (u64, mpsc::UnboundedSender<Frame>);

#[derive(Default)]
struct Rooms {
    next_id: AtomicU64,
    members: Mutex<HashMap<String, Vec<Member>>>,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("");
    let bind = args
        .iter()
        .position(|a| a == "--bind")
        .and_then(|i| args.get(i + 1))
        .map_or("127.0.0.1:9100", String::as_str);
    let addr: SocketAddr = bind.parse()?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(4096)?;
    let raw = match mode {
        "naive" => Some(Mode::Naive),
        "batch" => Some(Mode::Batch),
        "ws" => None,
        other => return Err(format!("unknown mode {other:?}: naive, batch or ws").into()),
    };
    eprintln!("ceiling {mode} listening on {addr}");
    let rooms = Arc::new(Rooms::default());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match raw {
            Some(mode) => {
                tokio::spawn(raw_connection(stream, mode, rooms.clone()));
            }
            None => {
                tokio::spawn(ws_connection(stream));
            }
        }
    }
}

async fn ws_connection(stream: TcpStream) {
    // Lean buffers, like a server tuned for many idle connections: the same read buffer as
    // Tidings' default (1 KiB).
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    if ws.send(Message::text("ok")).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = ws.next().await {
        if message.is_close() {
            break;
        }
    }
}

async fn raw_connection(stream: TcpStream, mode: Mode, rooms: Arc<Rooms>) {
    let id = rooms.next_id.fetch_add(1, Ordering::Relaxed);
    let (read, write) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel::<Frame>();
    let writer = tokio::spawn(writer(write, rx, mode));
    let mut reader = BufReader::new(read);
    let mut line = Vec::with_capacity(256);
    let mut joined: Vec<String> = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let (command, rest) = match line.split_first() {
            Some((c, rest)) => (*c, rest.get(1..).unwrap_or_default()),
            None => continue,
        };
        match command {
            b'J' => {
                let room = String::from_utf8_lossy(rest.strip_suffix(b"\n").unwrap_or(rest));
                if let Ok(mut members) = rooms.members.lock() {
                    members
                        .entry(room.to_string())
                        .or_default()
                        .push((id, tx.clone()));
                }
                joined.push(room.to_string());
                let _ = tx.send(Arc::from(&b"ok\n"[..]));
            }
            b'P' => {
                let Some(space) = rest.iter().position(|b| *b == b' ') else {
                    continue;
                };
                let room = String::from_utf8_lossy(rest.get(..space).unwrap_or_default());
                let frame: Frame = Arc::from(rest.get(space + 1..).unwrap_or_default());
                if let Ok(members) = rooms.members.lock()
                    && let Some(list) = members.get(room.as_ref())
                {
                    for (_, member) in list {
                        let _ = member.send(frame.clone());
                    }
                }
            }
            b'E' => {
                let _ = tx.send(Arc::from(rest));
            }
            _ => {}
        }
    }
    if let Ok(mut members) = rooms.members.lock() {
        for room in joined {
            if let Some(list) = members.get_mut(&room) {
                list.retain(|(member, _)| *member != id);
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

async fn writer(mut write: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Frame>, mode: Mode) {
    let mut buffer = Vec::with_capacity(64 * 1024);
    while let Some(frame) = rx.recv().await {
        match mode {
            Mode::Naive => {
                if write.write_all(&frame).await.is_err() {
                    return;
                }
            }
            Mode::Batch => {
                buffer.extend_from_slice(&frame);
                while buffer.len() < 256 * 1024 {
                    match rx.try_recv() {
                        Ok(frame) => buffer.extend_from_slice(&frame),
                        Err(_) => break,
                    }
                }
                if write.write_all(&buffer).await.is_err() {
                    return;
                }
                buffer.clear();
            }
        }
    }
}
