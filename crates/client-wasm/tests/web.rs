//! The browser client in headless Chromium against a real `tidings serve --dev`.
//!
//! Run by `scripts/test-browser`, which starts the server behind `tests/browser_helper.py`
//! and passes, at compile time: `TIDINGS_TEST_URL` (the WebSocket URL, through the helper's
//! proxy), `TIDINGS_TEST_TOKEN` (user `dev`) and `TIDINGS_TEST_HELPER` (the helper's HTTP
//! API: publish through the server's HTTP API, cut every connection, restart the server).
//! The helper is also the application's back end for `rpc` calls (the server's
//! `[proxy] rpc`): methods `echo`, `refuse`, `hang` and `calls`.
//! Without them every test passes vacuously and says so on the console.
#![cfg(target_arch = "wasm32")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use serde_json::{Value, json};
use tidings_client::TidingsClient;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

const URL: Option<&str> = option_env!("TIDINGS_TEST_URL");
const TOKEN: Option<&str> = option_env!("TIDINGS_TEST_TOKEN");
const HELPER: Option<&str> = option_env!("TIDINGS_TEST_HELPER");

#[wasm_bindgen(inline_js = r#"
export async function post(url, body) {
  const response = await fetch(url, { method: "POST", body: body === undefined ? "" : body });
  const text = await response.text();
  if (!response.ok) throw new Error(`${url}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}
export function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }
export function fire(name) { globalThis.dispatchEvent(new Event(name)); }
export function recorder() {
  const f = (...args) => { f.calls.push(args); };
  f.calls = [];
  return f;
}
export function tokens(list) {
  const f = async () => { f.calls += 1; return list[Math.min(f.calls, list.length) - 1]; };
  f.calls = 0;
  return f;
}
// The JavaScript surface, used as an application would.
export async function scenario(client, makeClient, channel) {
  const until = async (what, check) => {
    for (let i = 0; i < 250 && !check(); i++) await sleep(20);
    if (!check()) throw new Error(`timed out waiting for ${what}`);
  };
  const other = await makeClient();
  const seen = [];
  const all = [];
  const errors = [];
  client.on("state", (change) => { if (change.type === "error") errors.push(change); });
  // A handler that throws is reported, and the handlers after it still run.
  const boom = client.on("chat_message", () => { throw new Error("boom"); });
  const id = client.on("chat_message", (data, meta) => seen.push({ data, meta }));
  // Removed by the function itself, or by the one a wrapper stands in for.
  const direct = [];
  const push = (data) => direct.push(data);
  client.on("chat_message", push);
  const wrapped = [];
  const listener = (data) => wrapped.push(data);
  client.onListener("chat_message", (data) => listener(data), listener);
  const room = await client.subscribe(channel, (event, meta) => all.push({ event, meta }));
  if (room.channel !== channel) throw new Error("channel getter");
  const theirs = await other.subscribe(channel);
  const reply = await theirs.publish({ type: "chat_message", data: { id: "j1", content: "from js" } });
  await until("the chat message", () => seen.length === 1 && all.length === 1);
  const members = await room.presence();
  client.off(id);
  client.off(boom);
  client.offListener("chat_message", push);
  client.offListener("chat_message", listener);
  await other.publish(channel, { type: "chat_message", data: { id: "j2", content: "again" } });
  await until("the second message", () => all.length === 2);
  let error = null;
  try { await theirs.publish({ type: 5 }); } catch (e) { error = { name: e.name, kind: e.kind }; }
  await room.unsubscribe();
  other.close();
  let closed = null;
  try { await other.presence(channel); } catch (e) { closed = { name: e.name, kind: e.kind, code: e.code }; }
  return { reply, seen, all, members, error, closed, errors, direct, wrapped, state: client.state, otherState: other.state };
}
"#)]
extern "C" {
    #[wasm_bindgen(catch)]
    async fn post(url: String, body: JsValue) -> Result<JsValue, JsValue>;
    async fn sleep(ms: u32);
    fn fire(name: &str);
    fn recorder() -> JsValue;
    fn tokens(list: Vec<JsValue>) -> JsValue;
    #[wasm_bindgen(catch)]
    async fn scenario(
        client: JsValue,
        make_client: &js_sys::Function,
        channel: &str,
    ) -> Result<JsValue, JsValue>;
}

/// The server's coordinates, or `None` (the test then passes without running).
fn server() -> Option<(&'static str, &'static str, &'static str)> {
    let found = URL.zip(TOKEN).zip(HELPER).map(|((u, t), h)| (u, t, h));
    if found.is_none() {
        web_sys_log("TIDINGS_TEST_* not set at compile time: run scripts/test-browser");
    }
    found
}

fn web_sys_log(message: &str) {
    let console = js_sys::Reflect::get(&js_sys::global(), &"console".into()).unwrap();
    let log: js_sys::Function = js_sys::Reflect::get(&console, &"log".into())
        .unwrap()
        .into();
    let _ = log.call1(&console, &message.into());
}

fn js(value: &Value) -> JsValue {
    js_sys::JSON::parse(&value.to_string()).unwrap()
}

fn rust(value: &JsValue) -> Value {
    if value.is_undefined() {
        return Value::Null;
    }
    let text = js_sys::JSON::stringify(value).unwrap().as_string().unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every call a recorder saw: `[first argument, second argument]`.
fn calls(recorder: &JsValue) -> Vec<Value> {
    let calls = js_sys::Reflect::get(recorder, &"calls".into()).unwrap();
    rust(&calls).as_array().cloned().unwrap_or_default()
}

/// The `subscribed` events of one channel (the personal channel has its own).
fn restored(recorder: &JsValue, channel: &str) -> Vec<Value> {
    calls(recorder)
        .into_iter()
        .filter(|c| c[0]["channel"] == channel)
        .map(|c| c[0].clone())
        .collect()
}

/// The connection changes a `state` recorder saw, as `type` names.
fn changes(recorder: &JsValue) -> Vec<String> {
    calls(recorder)
        .iter()
        .map(|c| c[0]["type"].as_str().unwrap_or("?").to_owned())
        .collect()
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let start = js_sys::Date::now();
    while !check() {
        assert!(
            js_sys::Date::now() - start < 10_000.0,
            "timed out waiting for {what}"
        );
        sleep(20).await;
    }
}

async fn helper(path: &str, body: Option<Value>) -> Value {
    let (_, _, helper) = server().unwrap();
    let body = body.map_or(JsValue::UNDEFINED, |b| b.to_string().into());
    match post(format!("{helper}{path}"), body).await {
        Ok(value) => rust(&value),
        Err(error) => panic!("helper {path}: {error:?}"),
    }
}

/// Publishes through the server's HTTP API; returns the publication's offset.
async fn publish_via_api(channel: &str, message: &str) -> u64 {
    let event = json!({"type": "chat_message", "data": {"id": message, "content": message}});
    let reply = helper(
        "/publish",
        Some(json!({"channel": channel, "event": event})),
    )
    .await;
    reply["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("publish reply {reply}"))
}

async fn wait(promise: js_sys::Promise) -> Result<JsValue, JsValue> {
    JsFuture::from(promise).await
}

/// A client with fast reconnects and a `state` recorder.
fn client(extra: Value) -> (TidingsClient, JsValue) {
    let (url, token, _) = server().unwrap();
    let mut options = json!({"token": token, "backoff": {"minMs": 20, "maxMs": 200}});
    options
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    let client = TidingsClient::new(url.to_owned(), js(&options)).unwrap();
    let state = recorder();
    client.on("state".into(), state.clone()).unwrap();
    (client, state)
}

async fn connected(client: &TidingsClient) {
    until("connected", || client.state() == "connected").await;
}

/// A unique channel per test run, so history from an earlier run cannot interfere.
fn channel(name: &str) -> String {
    format!("browser:{name}:{}", js_sys::Date::now() as u64)
}

#[wasm_bindgen_test]
async fn receives_a_typed_notification_published_through_the_api() {
    if server().is_none() {
        return;
    }
    let (client, state) = client(json!({}));
    let notes = recorder();
    client.on("notification".into(), notes.clone()).unwrap();
    let room = channel("notify");
    let subscription = wait(client.subscribe(room.clone(), None, JsValue::UNDEFINED)).await;
    assert!(subscription.is_ok(), "{subscription:?}");
    assert_eq!(client.state(), "connected");
    let event = json!({"type": "notification", "data": {"message": "hi"}});
    let reply = helper("/publish", Some(json!({"channel": room, "event": event}))).await;
    assert_eq!(reply["offset"], 1, "{reply}");
    until("the notification", || calls(&notes).len() == 1).await;
    let call = &calls(&notes)[0];
    // Decoded as a `Notification`: the default level is filled in.
    assert_eq!(call[0], json!({"message": "hi", "level": "info"}));
    assert_eq!(call[1]["type"], "notification");
    assert_eq!(call[1]["channel"], room.as_str());
    assert_eq!(call[1]["offset"], 1);
    assert!(
        call[1].get("sender").is_none(),
        "a back-end publication has no sender"
    );
    client.close();
    assert_eq!(client.state(), "closed");
    assert_eq!(changes(&state), ["connecting", "connected", "closed"]);
    assert_eq!(calls(&state)[1][1], "connected");
}

#[wasm_bindgen_test]
async fn the_javascript_api_works_as_an_application_uses_it() {
    let Some((url, token, _)) = server() else {
        return;
    };
    let options = js(&json!({"token": token}));
    let client = wait(tidings_client::connect(url.to_owned(), options.clone()))
        .await
        .unwrap();
    let url = url.to_owned();
    let make = Closure::<dyn FnMut() -> js_sys::Promise>::new(move || {
        tidings_client::connect(url.clone(), options.clone())
    });
    let result = scenario(client, make.as_ref().unchecked_ref(), &channel("js")).await;
    let result = rust(&result.unwrap_or_else(|e| panic!("{e:?}")));
    assert_eq!(result["reply"]["offset"], 1, "{result}");
    assert_eq!(result["reply"]["delivered"], 2, "{result}");
    assert_eq!(
        result["seen"].as_array().map(Vec::len),
        Some(1),
        "off() removed it"
    );
    assert_eq!(
        result["direct"].as_array().map(Vec::len),
        Some(1),
        "{result}"
    );
    assert_eq!(
        result["wrapped"].as_array().map(Vec::len),
        Some(1),
        "{result}"
    );
    let seen = &result["seen"][0];
    assert_eq!(seen["data"], json!({"id": "j1", "content": "from js"}));
    assert_eq!(seen["meta"]["sender"], "dev");
    assert_eq!(seen["meta"]["offset"], 1);
    assert_eq!(result["all"][0]["event"]["type"], "chat_message");
    assert_eq!(result["all"][1]["event"]["data"]["content"], "again");
    assert_eq!(result["all"][1]["meta"]["offset"], 2);
    assert_eq!(
        result["members"],
        json!([{"user_id": "dev", "connections": 2}])
    );
    assert_eq!(
        result["error"],
        json!({"name": "TidingsError", "kind": "encode"})
    );
    assert_eq!(
        result["closed"],
        json!({"name": "TidingsError", "kind": "closed", "code": 1000})
    );
    assert_eq!(
        result["errors"].as_array().map(Vec::len),
        Some(1),
        "{result}"
    );
    assert_eq!(result["errors"][0]["kind"], "handler");
    assert!(
        result["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("boom"),
        "{result}"
    );
    assert_eq!(result["state"], "connected");
    assert_eq!(result["otherState"], "closed");
}

#[wasm_bindgen_test]
async fn a_dropped_connection_reconnects_and_recovers() {
    if server().is_none() {
        return;
    }
    let (client, state) = client(json!({}));
    let chats = recorder();
    let subscribed = recorder();
    client.on("chat_message".into(), chats.clone()).unwrap();
    client.on("subscribed".into(), subscribed.clone()).unwrap();
    let room = channel("drop");
    wait(client.subscribe(room.clone(), None, JsValue::UNDEFINED))
        .await
        .unwrap();
    assert_eq!(publish_via_api(&room, "m1").await, 1);
    until("m1", || calls(&chats).len() == 1).await;

    let dropped = helper("/drop", None).await;
    assert!(dropped["dropped"].as_u64().unwrap() >= 1, "{dropped}");
    assert_eq!(publish_via_api(&room, "m2").await, 2);
    until("m2", || calls(&chats).len() == 2).await;
    let offsets: Vec<Value> = calls(&chats)
        .iter()
        .map(|c| c[1]["offset"].clone())
        .collect();
    assert_eq!(offsets, [1, 2], "each publication once, in order");
    // The drop was seen as an abnormal close, and the subscription came back recovered.
    let lost = calls(&state)
        .into_iter()
        .find(|c| c[0]["type"] == "disconnected")
        .unwrap();
    assert_eq!(lost[0]["code"], 1006, "{lost}");
    until("the restored subscription", || {
        restored(&subscribed, &room)
            .iter()
            .any(|s| s["recovered"] == true)
    })
    .await;
    client.close();
}

#[wasm_bindgen_test]
async fn offline_pauses_reconnecting_and_online_reconnects_at_once() {
    if server().is_none() {
        return;
    }
    // A long backoff: only the `online` event can bring the connection back quickly.
    let (client, state) = client(json!({"backoff": {"minMs": 30000, "maxMs": 30000}}));
    let chats = recorder();
    let subscribed = recorder();
    client.on("chat_message".into(), chats.clone()).unwrap();
    client.on("subscribed".into(), subscribed.clone()).unwrap();
    let room = channel("offline");
    wait(client.subscribe(room.clone(), None, JsValue::UNDEFINED))
        .await
        .unwrap();
    assert_eq!(publish_via_api(&room, "m1").await, 1);
    until("m1", || calls(&chats).len() == 1).await;

    fire("offline");
    assert_eq!(client.state(), "reconnecting");
    let reconnecting = calls(&state).last().cloned().unwrap();
    assert_eq!(reconnecting[0]["type"], "reconnecting");
    assert!(
        reconnecting[0].get("delay_ms").is_none(),
        "no timer while offline"
    );
    // Publishes made offline are queued; publications made meanwhile are missed.
    let queued = client.publish(
        room.clone(),
        js(&json!({"type": "chat_message", "data": {"id": "q", "content": "queued"}})),
        JsValue::UNDEFINED,
    );
    assert_eq!(client.queued_publishes(), 1);
    assert_eq!(publish_via_api(&room, "m2").await, 2);
    assert_eq!(publish_via_api(&room, "m3").await, 3);
    let before = changes(&state).len();
    sleep(300).await;
    assert_eq!(changes(&state).len(), before, "no attempts while offline");

    let start = js_sys::Date::now();
    fire("online");
    connected(&client).await;
    assert!(js_sys::Date::now() - start < 2_000.0, "reconnected at once");
    let reply = rust(&wait(queued).await.unwrap());
    assert_eq!(reply["offset"], 4, "{reply}");
    until("m2, m3 and the queued message", || calls(&chats).len() == 4).await;
    let contents: Vec<Value> = calls(&chats)
        .iter()
        .map(|c| c[0]["content"].clone())
        .collect();
    assert_eq!(contents, ["m1", "m2", "m3", "queued"]);
    let again = restored(&subscribed, &room);
    assert_eq!(again.len(), 2, "{again:?}");
    assert_eq!(again[1]["recovered"], true, "{again:?}");
    assert_eq!(again[1]["missed"], 2, "{again:?}");
    client.close();
}

#[wasm_bindgen_test]
async fn get_token_is_asked_again_after_a_refused_token() {
    let Some((_, token, _)) = server() else {
        return;
    };
    let provider = tokens(vec!["not-a-valid-token".into(), token.into()]);
    let (url, _, _) = server().unwrap();
    let options = js(&json!({"backoff": {"minMs": 20, "maxMs": 200}}));
    js_sys::Reflect::set(&options, &"getToken".into(), &provider).unwrap();
    let client = TidingsClient::new(url.to_owned(), options).unwrap();
    let state = recorder();
    client.on("state".into(), state.clone()).unwrap();
    connected(&client).await;
    let asked = js_sys::Reflect::get(&provider, &"calls".into()).unwrap();
    assert_eq!(asked.as_f64(), Some(2.0));
    let refused = calls(&state)
        .into_iter()
        .find(|c| c[0]["type"] == "disconnected")
        .unwrap();
    assert_eq!(refused[0]["code"], 4001, "{refused}");
    client.close();
}

#[wasm_bindgen_test]
async fn a_refused_token_rejects_connect_with_a_tidings_error() {
    let Some((url, _, _)) = server() else {
        return;
    };
    let options = js(&json!({"token": "not-a-valid-token"}));
    let error = wait(tidings_client::connect(url.to_owned(), options))
        .await
        .unwrap_err();
    let get = |name: &str| rust(&js_sys::Reflect::get(&error, &name.into()).unwrap());
    assert_eq!(get("name"), "TidingsError");
    assert_eq!(get("kind"), "closed");
    assert_eq!(get("code"), 4001);
    let invalid = wait(tidings_client::connect(
        url.to_owned(),
        js(&json!({"backoff": 5})),
    ));
    let invalid = invalid.await.unwrap_err();
    assert!(invalid.is_instance_of::<js_sys::TypeError>(), "{invalid:?}");
}

#[wasm_bindgen_test]
async fn a_server_restart_reconnects_and_resubscribes() {
    if server().is_none() {
        return;
    }
    let (client, state) = client(json!({}));
    let chats = recorder();
    let subscribed = recorder();
    client.on("chat_message".into(), chats.clone()).unwrap();
    client.on("subscribed".into(), subscribed.clone()).unwrap();
    let room = channel("restart");
    wait(client.subscribe(room.clone(), None, JsValue::UNDEFINED))
        .await
        .unwrap();
    assert_eq!(publish_via_api(&room, "before").await, 1);
    until("the first message", || calls(&chats).len() == 1).await;
    let old_epoch = calls(&chats)[0][1]["epoch"].clone();

    // The server sends `shutdown`, closes with 1012 and comes back on the same port.
    helper("/restart", None).await;
    until("the restored subscription", || {
        restored(&subscribed, &room).len() == 2
    })
    .await;
    let restart = calls(&state)
        .into_iter()
        .find(|c| c[0]["type"] == "disconnected")
        .unwrap();
    assert_eq!(restart[0]["code"], 1012, "{restart}");
    let restored = restored(&subscribed, &room)[1].clone();
    // An in-memory store starts a new epoch (history is gone, and the client says so with
    // `recovered: false`); a durable one keeps the epoch and everything is recovered.
    let same_epoch = restored["epoch"] == old_epoch;
    assert_eq!(restored["recovered"], same_epoch, "{restored}");

    let offset = publish_via_api(&room, "after").await;
    assert_eq!(offset, if same_epoch { 2 } else { 1 });
    until("the message after the restart", || calls(&chats).len() == 2).await;
    let after = calls(&chats)[1].clone();
    assert_eq!(after[0]["content"], "after");
    assert_eq!(after[1]["epoch"], restored["epoch"]);
    client.close();
}

/// A rejection's `name`, `kind`, `code` and `message`.
fn rejection(error: &JsValue) -> Value {
    let get = |name: &str| rust(&js_sys::Reflect::get(error, &name.into()).unwrap());
    json!({"name": get("name"), "kind": get("kind"), "code": get("code"), "message": get("message")})
}

/// How many calls of `method` with `data` the helper's back end has seen.
async fn backend_calls(client: &TidingsClient, method: &str, data: &Value) -> u64 {
    let asked = js(&json!({"method": method, "data": data}));
    let count = wait(client.rpc("calls".into(), asked)).await.unwrap();
    rust(&count).as_u64().unwrap()
}

#[wasm_bindgen_test]
async fn rpc_calls_are_answered_refused_and_failed_by_a_drop_without_a_resend() {
    if server().is_none() {
        return;
    }
    let (client, _) = client(json!({}));
    connected(&client).await;
    let answer = wait(client.rpc("echo".into(), js(&json!({"mood": "tired", "n": [1, 2]}))));
    assert_eq!(
        rust(&answer.await.unwrap()),
        json!({"user_id": "dev", "data": {"mood": "tired", "n": [1, 2]}})
    );
    // Without data the call carries `null`.
    let answer = wait(client.rpc("echo".into(), JsValue::UNDEFINED)).await;
    assert_eq!(rust(&answer.unwrap())["data"], Value::Null);

    // Refusals are TidingsErrors of kind `server` with the server's code.
    let unknown = wait(client.rpc("nope".into(), JsValue::UNDEFINED)).await;
    let unknown = rejection(&unknown.unwrap_err());
    assert_eq!(
        (&unknown["name"], &unknown["kind"], &unknown["code"]),
        (&json!("TidingsError"), &json!("server"), &json!(4004)),
        "{unknown}"
    );
    let refused = wait(client.rpc("refuse".into(), JsValue::UNDEFINED)).await;
    let refused = rejection(&refused.unwrap_err());
    assert_eq!(refused["code"], 4003, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("members only"),
        "{refused}"
    );
    // Data that is not JSON is refused before anything is sent.
    let big = wait(client.rpc("echo".into(), js_sys::BigInt::from(5_i64).into())).await;
    assert_eq!(rejection(&big.unwrap_err())["kind"], "encode");

    // A call the back end is still answering when the connection drops fails at once...
    let key = json!(channel("rpc-drop"));
    let call = client.rpc("hang".into(), js(&key));
    let start = js_sys::Date::now();
    while backend_calls(&client, "hang", &key).await == 0 {
        assert!(
            js_sys::Date::now() - start < 5_000.0,
            "the call never arrived"
        );
        sleep(20).await;
    }
    let dropped = helper("/drop", None).await;
    assert!(dropped["dropped"].as_u64().unwrap() >= 1, "{dropped}");
    let lost = rejection(&wait(call).await.unwrap_err());
    assert_eq!(
        (&lost["kind"], &lost["code"]),
        (&json!("disconnected"), &json!(1006)),
        "{lost}"
    );
    // ... and is not made again after the reconnect.
    connected(&client).await;
    sleep(300).await;
    assert_eq!(backend_calls(&client, "hang", &key).await, 1);
    client.close();
}
