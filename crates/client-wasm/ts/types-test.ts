// Type test of the generated declarations: scripts/test-browser copies this file next to
// the tidings_client.d.ts that wasm-pack writes and runs `tsc --strict --noEmit` on it (when
// a TypeScript compiler is at hand). Every line must type-check, and every
// `@ts-expect-error` line must be an error: the types are as strict as they claim.
import { connect, TidingsClient, Subscription, StandardEvent, ServerFrame, TidingsError, ConnectionChange } from "./tidings_client";

declare module "./tidings_client" {
  interface StandardEvents { invoice_paid: { invoice: number; cents: number } }
}

async function main() {
  const client: TidingsClient = await connect("ws://x/ws", { token: "t", backoff: { minMs: 10, maxAttempts: 3 }, getToken: async () => "t" });
  const id: number = client.on("notification", (note, meta) => {
    const m: string = note.message;
    const lvl: "info" | "success" | "warning" | "error" | undefined = note.level;
    const ch: string = meta.channel;
    const off: number | undefined = meta.offset;
  });
  client.on("state", (change, state) => {
    if (change.type === "reconnecting") { const d: number | undefined = change.delay_ms; }
    if (change.type === "connected") { const u: string = change.user_id; }
    if (change.type === "error") { const k: string = change.kind; }
    const s: "idle" | "connecting" | "connected" | "reconnecting" | "closed" = state;
  });
  client.on("invoice_paid", (data) => { const c: number = data.cents; });
  client.on("my_custom", (data) => { const u: unknown = data; });
  client.on("publication", (event, meta) => { const t: string = event.type; });
  client.on("subscribed", (info) => { const r: boolean | undefined = info.recovered; });
  client.off(id);
  const room: Subscription = await client.subscribe("ticket:1", (e, m) => {});
  room.on("chat_message", (chat) => { const c: string = chat.content; });
  const reply = await room.publish({ type: "chat_message", data: { id: "1", content: "hi" } });
  const o: number | undefined = reply.offset;
  await client.publish("c", { type: "whatever", data: [1, 2] });
  await client.publish("c", { type: "notification", data: { message: "x", level: "success" } }, { delivery: "ephemeral" });
  const members = await room.presence();
  const who: string = members[0].user_id;
  const answer: unknown = await client.rpc("echo", { mood: "tired" });
  await client.rpc("ping");
  const st = client.state;
  client.close();
  const frame = {} as ServerFrame;
  if (frame.type === "message") { const e = frame.data.event; }
  if (frame.type === "reply" && frame.data.kind === "subscribe") { const r = frame.data.recovered; }
  const ev = {} as StandardEvent;
  if (ev.type === "upload_progress") { const p: number = ev.data.progress; }
  try { await client.presence("x"); } catch (e) { const te = e as TidingsError; const k = te.kind; }
  new TidingsClient("ws://x");
}

// These must fail:
async function bad(client: TidingsClient) {
  // @ts-expect-error: notification needs message
  await client.publish("c", { type: "notification", data: { title: "x" } });
  // @ts-expect-error: wrong level
  client.on("notification", (note) => { const n: number = note.level; });
  // @ts-expect-error: state handler args
  client.on("state", (change: number) => {});
  // @ts-expect-error: chat_message content must be string
  await client.publish("c", { type: "chat_message", data: { id: "1", content: 5 } });
  // @ts-expect-error: an rpc answer is unknown until the application says what it is
  const text: string = await client.rpc("echo", {});
  // @ts-expect-error: the method is a string
  await client.rpc(5, {});
}
