//! TypeScript declarations of the types whose JSON shape serde does not derive (with the
//! `ts` feature; the derived ones come from `tsify` on each type), and [`link`], which a
//! WebAssembly crate calls so that every declaration reaches its `.d.ts`.
//!
//! [`RawEvent`](crate::RawEvent), [`Code`](crate::Code) and the frame envelopes have
//! hand-written `Serialize` impls, so their declarations are written here, next to the
//! `StandardEvents` map that ties each standard event type name to its payload. wasm-bindgen
//! copies every `typescript_custom_section` of the crates it links into the `.d.ts` it writes.

use wasm_bindgen::prelude::wasm_bindgen;

/// Keeps every TypeScript declaration of this crate in a WebAssembly link; call it once
/// (anywhere reachable) from the crate that wasm-bindgen processes.
///
/// The declarations are custom sections attached to this crate's object files, and wasm-ld
/// takes an object file out of an rlib only when something references one of its symbols.
/// Nothing references plain declarations, so each module that holds some has a function
/// that is never inlined, and this calls them all: a `.d.ts` without them would still
/// build, with `Notification`, `RawEvent` and the rest silently missing.
#[inline(never)]
pub fn link() -> usize {
    crate::messages::ts_link() + crate::event::ts_link() + WIRE_TYPES.len()
}

#[wasm_bindgen(typescript_custom_section)]
const WIRE_TYPES_SECTION: &str = WIRE_TYPES;

/// The declarations, as they appear in the generated `.d.ts`. The custom section above
/// reads it inside generated code that the dead-code lint does not see.
#[allow(dead_code)]
const WIRE_TYPES: &str = r#"
/**
 * An error or close code (the same numbers in `error` frames and WebSocket close frames):
 * 1000 normal, 1001 going away, 1006 abnormal, 1011 internal, 1012 server restart,
 * 4001 unauthenticated, 4002 heartbeat timeout, 4003 forbidden, 4004 not found,
 * 4006 disconnected, 4008 rate limited, 4009 slow consumer, 4010 too many connections,
 * 4011 too many subscriptions, 4400 bad frame, 4413 frame too large,
 * 4426 unsupported protocol, 4500 internal error, 4503 unavailable.
 * A newer server may send numbers not listed here.
 */
export type Code = number;

/**
 * The payload type of each standard event type. An interface, so an application can add
 * its own events by declaration merging:
 * `declare module "tidings-client" { interface StandardEvents { invoice_paid: InvoicePaid } }`.
 */
export interface StandardEvents {
    notification: Notification;
    upload_progress: UploadProgress;
    analysis_status: AnalysisStatus;
    chat_message: ChatMessage;
}

/** The payload type of event type `T`: typed for the names in `StandardEvents`, else unknown. */
export type EventData<T extends string> = T extends keyof StandardEvents ? StandardEvents[T] : unknown;

/** An event of a known type, discriminated by `type`. */
export type StandardEvent = { [K in keyof StandardEvents]: { type: K; data: StandardEvents[K] } }[keyof StandardEvents];

/** An event as it travels: its type name and its payload (any JSON). */
export interface RawEvent {
    type: string;
    data: unknown;
}

/** A frame from client to server. `id` is chosen by the client and comes back on the answer. */
export type ClientFrame =
    | { type: "ping"; id?: number }
    | { type: "subscribe"; id?: number; data: Subscribe }
    | { type: "unsubscribe"; id?: number; data: Unsubscribe }
    | { type: "publish"; id?: number; data: Publish }
    | { type: "typing"; id?: number; data: ChannelRef }
    | { type: "presence"; id?: number; data: ChannelRef };

/** A frame from server to client; `id` names the request it answers, if any. */
export type ServerFrame =
    | { type: "connected"; id?: number; data: Connected }
    | { type: "pong"; id?: number }
    | { type: "reply"; id?: number; data: Reply }
    | { type: "error"; id?: number; data: ErrorBody }
    | { type: "message"; id?: number; data: MessageBody }
    | { type: "user_joined"; id?: number; data: PresenceChange }
    | { type: "user_left"; id?: number; data: PresenceChange }
    | { type: "typing"; id?: number; data: TypingNotice }
    | { type: "shutdown"; id?: number; data: Shutdown };
"#;

#[cfg(test)]
mod tests {
    use super::WIRE_TYPES;
    use crate::{
        AnalysisStatus, ChatMessage, ClientFrame, Event, Notification, ServerFrame, UploadProgress,
    };

    #[test]
    fn the_event_map_names_every_standard_event() {
        for (kind, ty) in [
            (Notification::TYPE, "Notification"),
            (UploadProgress::TYPE, "UploadProgress"),
            (AnalysisStatus::TYPE, "AnalysisStatus"),
            (ChatMessage::TYPE, "ChatMessage"),
        ] {
            assert!(
                WIRE_TYPES.contains(&format!("    {kind}: {ty};\n")),
                "{kind}"
            );
        }
    }

    #[test]
    fn the_frame_unions_name_every_frame_type() {
        let client = [
            r#"{"type":"ping"}"#,
            r#"{"type":"subscribe","data":{"channel":"c"}}"#,
            r#"{"type":"unsubscribe","data":{"channel":"c"}}"#,
            r#"{"type":"publish","data":{"channel":"c","event":{"type":"x","data":1}}}"#,
            r#"{"type":"typing","data":{"channel":"c"}}"#,
            r#"{"type":"presence","data":{"channel":"c"}}"#,
        ];
        for text in client {
            let kind = ClientFrame::decode(text).map(|f| f.kind()).unwrap_or("?");
            assert!(WIRE_TYPES.contains(&format!("{{ type: \"{kind}\"; id?: number")));
        }
        let server = [
            r#"{"type":"connected","data":{"session_id":"s","user_id":"u","protocol":1,
                "heartbeat_ms":1,"heartbeat_timeout_ms":1,"max_frame_bytes":1,
                "subscriptions":[]}}"#,
            r#"{"type":"pong"}"#,
            r#"{"type":"reply","id":1,"data":{"kind":"unsubscribe","channel":"c"}}"#,
            r#"{"type":"error","data":{"code":4400,"message":"m"}}"#,
            r#"{"type":"message","data":{"channel":"c","epoch":"e","ts":0,
                "event":{"type":"x","data":1}}}"#,
            r#"{"type":"user_joined","data":{"channel":"c","user_id":"u"}}"#,
            r#"{"type":"user_left","data":{"channel":"c","user_id":"u"}}"#,
            r#"{"type":"typing","data":{"channel":"c","user_id":"u"}}"#,
            r#"{"type":"shutdown","data":{"reason":"r","reconnect_after_ms":0}}"#,
        ];
        for text in server {
            let kind = ServerFrame::decode(text).map(|f| f.kind()).unwrap_or("?");
            assert!(WIRE_TYPES.contains(&format!("{{ type: \"{kind}\"; id?: number")));
        }
    }
}
