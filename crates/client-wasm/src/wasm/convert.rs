//! Values that cross between Rust and JavaScript. Data crosses as JSON (serde_json on this
//! side, the engine's `JSON` on the other): every shape is the serde form of a core type
//! (`crate::core`, `crate::core::view`), so there is one definition of each, and one
//! serializer in the module. Errors become `TidingsError`s.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tsify::Tsify;
use wasm_bindgen::{JsCast, JsValue};

use tidings_protocol::{Delivery, RawEvent};

use crate::ClientError;

/// Plain data for JavaScript: the value's JSON, parsed by the engine.
pub(super) fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, ClientError> {
    let text = serde_json::to_string(value).map_err(|e| ClientError::Encode(e.to_string()))?;
    parse(&text)
}

/// JSON text as a JavaScript value.
pub(super) fn parse(text: &str) -> Result<JsValue, ClientError> {
    js_sys::JSON::parse(text).map_err(|e| ClientError::Decode(message_of(&e)))
}

/// Reads an optional object of type `T` (`None` for `undefined` and `null`); a
/// `TypeError` naming `what` when it does not fit. Functions in it are ignored.
pub(super) fn from_js<T: DeserializeOwned>(
    value: &JsValue,
    what: &str,
) -> Result<Option<T>, JsValue> {
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    let invalid = |message: String| type_error(&format!("invalid {what}: {message}"));
    let text = stringify(value).map_err(|e| invalid(e.to_string()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| invalid(e.to_string()))
}

/// `JSON.stringify(value)`.
fn stringify(value: &JsValue) -> Result<String, ClientError> {
    js_sys::JSON::stringify(value)
        .map_err(|e| ClientError::Encode(message_of(&e)))?
        .as_string()
        .ok_or_else(|| ClientError::Encode("the value is not JSON".to_owned()))
}

/// Options of one subscription.
#[derive(Debug, Default, serde::Deserialize, Tsify)]
pub(super) struct SubscribeOptions {
    /// Deliver only these event types on this subscription (the first subscribe to a
    /// channel decides).
    #[tsify(optional)]
    pub(super) events: Option<Vec<String>>,
}

/// Options of one publish.
#[derive(Debug, Default, serde::Deserialize, Tsify)]
pub(super) struct PublishOptions {
    /// Override the event type's delivery class.
    #[tsify(optional)]
    pub(super) delivery: Option<Delivery>,
}

/// An event from JavaScript, `{type: string, data?: any}`, as it goes on the wire.
pub(super) fn raw_event(event: &JsValue) -> Result<RawEvent, ClientError> {
    serde_json::from_str(&stringify(event)?)
        .map_err(|e| ClientError::Encode(format!("an event is {{type: string, data?: any}}: {e}")))
}

/// Any JavaScript value as JSON (`undefined` is `null`), for an rpc's arguments; an
/// `encode` error when `JSON.stringify` refuses it (a `BigInt`, a cycle) or makes nothing
/// of it (a function).
pub(super) fn json_value(value: &JsValue) -> Result<serde_json::Value, ClientError> {
    if value.is_undefined() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(&stringify(value)?).map_err(|e| ClientError::Encode(e.to_string()))
}

/// A rejection: a JavaScript `Error` named `TidingsError` with `kind` and `code`.
pub(super) fn error_value(error: &ClientError) -> JsValue {
    let value = js_sys::Error::new(&error.to_string());
    value.set_name("TidingsError");
    let kind = JsValue::from_str(error.kind().name());
    let _ = js_sys::Reflect::set(&value, &"kind".into(), &kind);
    if let Some(code) = error.code() {
        let _ = js_sys::Reflect::set(&value, &"code".into(), &JsValue::from(code.as_u16()));
    }
    value.into()
}

/// A `TypeError` for a bad argument.
pub(super) fn type_error(message: &str) -> JsValue {
    js_sys::TypeError::new(message).into()
}

/// The message of a thrown JavaScript value.
pub(super) fn message_of(value: &JsValue) -> String {
    if let Some(error) = value.dyn_ref::<js_sys::Error>() {
        return String::from(error.message());
    }
    value.as_string().unwrap_or_else(|| format!("{value:?}"))
}
