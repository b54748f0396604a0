//! The browser driver's I/O with the platform: the WebSocket and its events, the
//! `online`/`offline` events, and the device name kept in `localStorage`.

use std::rc::Weak;

use js_sys::Function;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, CloseEvent, Event, EventTarget, MessageEvent, WebSocket};

use tidings_protocol::SUBPROTOCOL;

use super::convert::message_of;
use super::driver::Shared;
use crate::core::{ConnId, Input, url_with_param};

/// The open (or opening) WebSocket and the callbacks attached to it.
pub(super) struct Socket {
    pub(super) conn: ConnId,
    pub(super) ws: WebSocket,
    _on_open: Closure<dyn FnMut(Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        // Nothing more about this transport reaches the core; the closures go with it. The
        // `error` listener stays: it is not ours to drop (see `ignore_errors`).
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
    }
}

thread_local! {
    /// A listener that does nothing, shared by every socket and never freed.
    static IGNORE: Function = Closure::<dyn FnMut(JsValue)>::new(|_: JsValue| {})
        .into_js_value()
        .unchecked_into();
}

/// Gives `ws` an `error` listener that ignores the event. The `close` event that always
/// follows drives reconnection, and browsers tell nothing useful in `error` anyway; but
/// Node's `ws` package throws an `error` event nobody listens to ("Unhandled 'error'
/// event": a refused reconnect would end the program). The listener is never removed, as
/// `ws` may still report an error after the client let go of the socket (closing one that
/// is still connecting does).
fn ignore_errors(ws: &WebSocket) {
    IGNORE.with(|ignore| ws.set_onerror(Some(ignore)));
}

/// Opens a WebSocket offering `tidings.v1`, its events feeding the core as `conn`.
pub(super) fn open(weak: &Weak<Shared>, conn: ConnId, url: &str) -> Result<Socket, String> {
    let ws = WebSocket::new_with_str(url, SUBPROTOCOL).map_err(|thrown| message_of(&thrown))?;
    ignore_errors(&ws);
    ws.set_binary_type(BinaryType::Arraybuffer);
    let feed = move |weak: &Weak<Shared>, input: Input| {
        if let Some(shared) = weak.upgrade() {
            shared.with(|inner, now| {
                if inner.is_current(conn) {
                    if matches!(input, Input::TransportClosed { .. }) {
                        inner.forget_socket();
                    }
                    inner.session.core_mut().handle(now, input);
                }
            });
        }
    };
    let w = weak.clone();
    let on_open = Closure::<dyn FnMut(Event)>::new(move |_: Event| {
        feed(&w, Input::TransportOpened { conn });
    });
    let w = weak.clone();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let input = match event.data().as_string() {
            Some(text) => Input::Frame { conn, text },
            None => Input::Activity { conn },
        };
        feed(&w, input);
    });
    let w = weak.clone();
    let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
        // A connection that dropped or never opened closes with 1006 (browsers tell
        // nothing more about failed handshakes); 1005 means the peer sent no code.
        let code = Some(event.code()).filter(|c| *c != 1005);
        let reason = event.reason();
        feed(&w, Input::TransportClosed { conn, code, reason });
    });
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    Ok(Socket {
        conn,
        ws,
        _on_open: on_open,
        _on_message: on_message,
        _on_close: on_close,
    })
}

/// Closes a WebSocket with `code` when browsers allow sending it (1000 and 3000–4999),
/// else with 1000; the reason is cut to the 123 bytes a close frame holds.
pub(super) fn close(ws: &WebSocket, code: u16, reason: &str) {
    let code = if code == 1000 || (3000..=4999).contains(&code) {
        code
    } else {
        1000
    };
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = reason.get(..end).unwrap_or_default();
    if ws.close_with_code_and_reason(code, reason).is_err() {
        let _ = ws.close();
    }
}

/// The `online`/`offline` listeners on the global object.
pub(super) struct Network {
    target: EventTarget,
    online: Closure<dyn FnMut(Event)>,
    offline: Closure<dyn FnMut(Event)>,
}

impl Drop for Network {
    fn drop(&mut self) {
        for (name, closure) in [("online", &self.online), ("offline", &self.offline)] {
            let _ = self
                .target
                .remove_event_listener_with_callback(name, closure.as_ref().unchecked_ref());
        }
    }
}

/// A property of the global object (`navigator`, `localStorage`), when it is an object.
fn global_object(name: &str) -> Option<JsValue> {
    js_sys::Reflect::get(&js_sys::global(), &name.into())
        .ok()
        .filter(JsValue::is_object)
}

/// `navigator.onLine`, `true` where there is no such thing.
pub(super) fn navigator_online() -> bool {
    global_object("navigator")
        .and_then(|navigator| js_sys::Reflect::get(&navigator, &"onLine".into()).ok())
        .and_then(|online| online.as_bool())
        .unwrap_or(true)
}

/// Listens to the global object's `online` and `offline` events (windows and workers
/// have them; elsewhere there is nothing to listen to).
pub(super) fn listen_network(weak: &Weak<Shared>) -> Option<Network> {
    let target = js_sys::global().dyn_into::<EventTarget>().ok()?;
    let handler = |input: fn() -> Input| {
        let weak = weak.clone();
        Closure::<dyn FnMut(Event)>::new(move |_: Event| {
            if let Some(shared) = weak.upgrade() {
                shared.input(input());
            }
        })
    };
    let network = Network {
        target,
        online: handler(|| Input::Online),
        offline: handler(|| Input::Offline),
    };
    // Dropping `network` removes both listeners, added or not.
    for (name, closure) in [("online", &network.online), ("offline", &network.offline)] {
        let _ = network
            .target
            .add_event_listener_with_callback(name, closure.as_ref().unchecked_ref());
    }
    Some(network)
}

/// Names this browser as a device for the offline inbox: a `device=` query parameter kept
/// in `localStorage` (`tidings.device`), unless the URL already has one or there is no
/// `localStorage` (Node): then the server's default device is used.
pub(super) fn with_device(url: String) -> String {
    if url.contains("device=") {
        return url;
    }
    match stored_device() {
        Some(device) => url_with_param(&url, "device", &device),
        None => url,
    }
}

fn stored_device() -> Option<String> {
    const KEY: &str = "tidings.device";
    let storage = global_object("localStorage")?;
    let method = |name: &str| -> Option<Function> {
        js_sys::Reflect::get(&storage, &name.into())
            .ok()?
            .dyn_into()
            .ok()
    };
    let existing = method("getItem")?
        .call1(&storage, &KEY.into())
        .ok()
        .and_then(|v| v.as_string())
        .filter(|d| !d.is_empty() && d.len() <= 64);
    if existing.is_some() {
        return existing;
    }
    let random = (js_sys::Math::random() * 2f64.powi(52)) as u64;
    let device = format!("web-{random:013x}");
    method("setItem")?
        .call2(&storage, &KEY.into(), &device.as_str().into())
        .ok()?;
    Some(device)
}
