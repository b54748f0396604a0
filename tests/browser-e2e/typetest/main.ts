// A TypeScript developer's first program with @tidings/client, in Node 20 with `ws`.
//
// typetest.test.mjs installs the packed tarball into a fresh copy of this project, checks it
// with `tsc --strict --noEmit` (every `@ts-expect-error` line must be an error, or tsc fails
// with "Unused '@ts-expect-error' directive"), checks that without the directives exactly
// those lines fail, then compiles and runs it against a real `tidings serve --dev`.
import WebSocket from "ws";
import {
  TidingsClient,
  type ChatMessage,
  type ConnectionState,
  type Member,
  type Notification,
  type PublicationMeta,
  type Subscription,
  type TidingsError,
} from "@tidings/client";

// The application's own events, declared once: event type name -> payload.
interface ShopEvents {
  order_shipped: { order: number; carrier: string };
}

// The back end's RPC methods, declared once: method name -> request and response.
interface ShopRpc {
  motivation_requested: { request: { mood: string }; response: { message: string } };
  refuse: { request: { why?: string }; response: null };
  // Declared here, but the back end does not answer it (any more): 4004.
  retired_method: { response: { ok: boolean } };
}

// Events can also be added for every client at once, by module augmentation.
declare module "@tidings/client" {
  interface TidingsEvents {
    invoice_paid: { invoice: number; cents: number };
  }
}

const url = need("TIDINGS_URL");
const token = need("TIDINGS_TOKEN");
const api = need("TIDINGS_API");
const apiKey = need("TIDINGS_API_KEY");

function need(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set`);
  }
  return value;
}

function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  return Promise.race([
    promise,
    new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms)),
  ]);
}

async function publishOverHttp(channel: string, event: { type: string; data: unknown }): Promise<void> {
  const response = await fetch(`${api}/api/publish`, {
    method: "POST",
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
    body: JSON.stringify({ channel, event }),
  });
  if (!response.ok) {
    throw new Error(`POST /api/publish: ${response.status} ${await response.text()}`);
  }
}

/** Resolves when `call` rejects with a TidingsError of kind `server` and this code. */
async function refusedWith(code: number, call: Promise<unknown>): Promise<void> {
  try {
    await call;
  } catch (error) {
    const e = error as TidingsError;
    if (e.name === "TidingsError" && e.kind === "server" && e.code === code) {
      return;
    }
    throw error;
  }
  throw new Error(`a call that should fail with ${code} succeeded`);
}

async function main(): Promise<void> {
  const client = new TidingsClient<ShopEvents, ShopRpc>(url, {
    token,
    WebSocket,
    backoff: { minMs: 100, maxMs: 2000 },
    requestTimeoutMs: 5000,
  });
  const states: ConnectionState[] = [];
  client.on("state", (state, change) => {
    states.push(state);
    if (change.type === "closed") {
      const code: number = change.code;
      console.log(`closed with ${code}`);
    }
  });

  // A notification to the user's own channel, typed from the generated declarations.
  const notified = new Promise<Notification>((resolve) => {
    client.on("notification", (n, meta: PublicationMeta) => {
      const level: "info" | "success" | "warning" | "error" | undefined = n.level;
      console.log(`notification on ${meta.channel} (${level}): ${n.message}`);
      resolve(n);
    });
  });

  await within(10_000, "connected", client.ready());

  const room: Subscription<ShopEvents> = await within(5000, "subscribe", client.subscribe("ticket:42"));
  const chat = new Promise<[ChatMessage, PublicationMeta]>((resolve) => {
    room.on("chat_message", (m, meta) => resolve([m, meta]));
  });
  const shipped = new Promise<number>((resolve) => {
    const off = room.on("order_shipped", (e) => {
      off();
      resolve(e.order);
    });
  });
  const paid = new Promise<number>((resolve) => {
    room.once("invoice_paid", (e) => resolve(e.cents));
  });
  // `off(type, listener)` removes what `on` registered with that listener.
  let removedCalls = 0;
  const removed = (): void => {
    removedCalls += 1;
  };
  room.on("chat_message", removed);
  room.off("chat_message", removed);
  client.on("order_shipped", removed);
  client.off("order_shipped", removed);

  const reply = await room.publish({ type: "chat_message", data: { id: "m1", content: "Hello from Node" } });
  const offset: number | undefined = reply.offset;
  const [message, meta] = await within(5000, "chat_message", chat);
  if (message.content !== "Hello from Node" || meta.offset !== offset || meta.sender !== "dev") {
    throw new Error(`unexpected chat message ${JSON.stringify([message, meta])}`);
  }
  await client.publish("ticket:42", { type: "order_shipped", data: { order: 7, carrier: "post" } });
  await room.publish({ type: "invoice_paid", data: { invoice: 3, cents: 1200 } });
  if ((await within(5000, "order_shipped", shipped)) !== 7 || (await within(5000, "invoice_paid", paid)) !== 1200) {
    throw new Error("application events arrived wrong");
  }
  if (removedCalls !== 0) {
    throw new Error(`a removed listener was called ${removedCalls} times`);
  }

  // History: the stored publications, oldest first.
  const page = await room.history({ limit: 10 });
  const stored = page.publications.map(({ event, meta: m }) => [event.type, m.offset] as const);
  if (JSON.stringify(stored[0]) !== JSON.stringify(["chat_message", offset])) {
    throw new Error(`unexpected history ${JSON.stringify(stored)}`);
  }

  const members: Member[] = await room.presence();
  if (members.length !== 1 || members[0]?.user_id !== "dev") {
    throw new Error(`unexpected members ${JSON.stringify(members)}`);
  }

  await publishOverHttp("user:dev", { type: "notification", data: { message: "Report ready", level: "success" } });
  const note = await within(5000, "notification", notified);
  if (note.level !== "success" || note.message !== "Report ready") {
    throw new Error(`unexpected notification ${JSON.stringify(note)}`);
  }

  // RPC: the back end's answer, typed through ShopRpc.
  const motivation = await within(5000, "rpc", client.rpc("motivation_requested", { mood: "tired" }));
  const text: string = motivation.message;
  console.log(`rpc: ${text}`);
  // Refusals are TidingsErrors of kind `server` with the server's code.
  await refusedWith(4004, client.rpc("retired_method"));
  await refusedWith(4003, client.rpc("refuse", {}));
  // Without an RPC map any method name is accepted (the server checks it), the answer is
  // `unknown`.
  const untyped: TidingsClient = new TidingsClient(url, { token, WebSocket });
  try {
    // An rpc needs a live connection (it is never queued): wait for it.
    await within(10_000, "the second client", untyped.ready());
    await refusedWith(4004, untyped.rpc("anything", { any: ["json", 1, null] }));
    await refusedWith(4400, untyped.rpc(""));
  } finally {
    untyped.close();
  }

  // Failures are TidingsErrors with a kind and a code.
  try {
    await client.subscribe("user:someone-else");
    throw new Error("subscribing to another user's channel succeeded");
  } catch (error) {
    const e = error as TidingsError;
    if (e.name !== "TidingsError" || e.kind !== "server" || e.code !== 4003) {
      throw error;
    }
  }

  await room.unsubscribe();
  client.close();
  if (client.state !== "closed" || !states.includes("connected")) {
    throw new Error(`unexpected states ${states.join(", ")}`);
  }
  console.log("typetest ok");
}

// These must not type-check: the types bite.
export async function wrong(client: TidingsClient<ShopEvents>, room: Subscription<ShopEvents>): Promise<void> {
  // @ts-expect-error: no such event type (a typo of chat_message)
  room.on("chat_mesage", () => {});
  // @ts-expect-error: content is a string
  await room.publish({ type: "chat_message", data: { id: "m2", content: 42 } });
  // @ts-expect-error: order is a number
  await client.publish("orders", { type: "order_shipped", data: { order: "7", carrier: "post" } });
  // @ts-expect-error: publish to a channel needs the channel
  await client.publish({ type: "chat_message", data: { id: "m3", content: "hi" } });
  // @ts-expect-error: subscribe needs a channel
  await client.subscribe();
  // @ts-expect-error: a notification has no `text`, it has `message`
  await room.publish({ type: "notification", data: { text: "hi" } });
  // @ts-expect-error: the level is a string union, not a number
  client.on("notification", (n) => { const level: number = n.level; });
  // @ts-expect-error: a state listener gets the state first
  client.on("state", (state: number) => {});
  // @ts-expect-error: augmented events are typed too
  room.on("invoice_paid", (e) => { const cents: string = e.cents; });
  // @ts-expect-error: history's limit is a number
  await room.history({ limit: "10" });
  // @ts-expect-error: an unknown option
  new TidingsClient("ws://x", { tokne: "t" });
}

// Nor these: the RPC map bites too.
export async function wrongRpc(client: TidingsClient<ShopEvents, ShopRpc>, untyped: TidingsClient): Promise<void> {
  // @ts-expect-error: no such method (a typo of motivation_requested)
  await client.rpc("motivation_request", { mood: "tired" });
  // @ts-expect-error: mood is a string
  await client.rpc("motivation_requested", { mood: 3 });
  // @ts-expect-error: the request is required
  await client.rpc("motivation_requested");
  // @ts-expect-error: a method without a request takes no data
  await client.rpc("retired_method", { ok: true });
  // @ts-expect-error: the answer's message is a string
  const n: number = (await client.rpc("motivation_requested", { mood: "x" })).message;
  // @ts-expect-error: without an RPC map the answer is unknown
  const s: string = await untyped.rpc("anything");
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
