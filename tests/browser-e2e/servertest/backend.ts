// A TypeScript developer's Node back end with @tidings/client/server: it mints its users'
// tokens, publishes typed events over the HTTP API, reads history and presence back, and
// handles the API's typed errors; a user of @tidings/client (Node 20, `ws`) receives.
//
// server-api.test.mjs installs the packed tarball into a fresh copy of this project, checks it
// with `tsc --strict --noEmit` (every `@ts-expect-error` line must be an error), checks that
// without the directives exactly those lines fail, then compiles and runs it against a real
// `tidings serve --dev`.
import WebSocket from "ws";
import { TidingsClient, type Notification, type PublicationMeta } from "@tidings/client";
import {
  TidingsApiError,
  TidingsConnectionError,
  TidingsServerApi,
  WebhookSignatureError,
  constructWebhookEvent,
  mintToken,
  signWebhook,
  verifyWebhookSignature,
  type ChannelMembers,
  type HistoryPage,
  type Publication,
  type PublishResult,
  type UserStatus,
  type WebhookEvent,
} from "@tidings/client/server";
// @ts-expect-error: the server entry has no WebSocket client (that is @tidings/client)
import { TidingsClient as NotHere } from "@tidings/client/server";

// The application's own events, declared once: event type name -> payload; the same map
// types the browser client and the back end.
interface ShopEvents {
  order_shipped: { order: number; carrier: string };
}

// Events added for every client and back end of the program, by module augmentation.
declare module "@tidings/client" {
  interface TidingsEvents {
    invoice_paid: { invoice: number; cents: number };
  }
}

const url = need("TIDINGS_URL");
const api = need("TIDINGS_API");
const apiKey = need("TIDINGS_API_KEY");
const jwtSecret = need("TIDINGS_JWT_SECRET");

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

function check(condition: boolean, what: string): void {
  if (!condition) {
    throw new Error(`check failed: ${what}`);
  }
}

async function main(): Promise<void> {
  const tidings = new TidingsServerApi<ShopEvents>(api, { apiKey, timeoutMs: 5000 });

  // The back end issues its user's token; the server verifies it with its JWT secret.
  const token = mintToken(jwtSecret, "shopper", { expiresIn: 600, channels: ["shop:*"] });
  const client = new TidingsClient<ShopEvents>(url, { token, WebSocket, requestTimeoutMs: 5000 });
  try {
    await within(10_000, "connected", client.ready());
    const shop = await within(5000, "subscribe", client.subscribe("shop:7"));
    const shipped = new Promise<[number, PublicationMeta]>((resolve) => {
      shop.once("order_shipped", (e, meta) => resolve([e.order, meta]));
    });
    const paid = new Promise<number>((resolve) => {
      shop.once("invoice_paid", (e) => resolve(e.cents));
    });
    const notified = new Promise<Notification>((resolve) => {
      client.once("notification", (n) => resolve(n));
    });

    const result: PublishResult = await tidings.publish(
      "shop:7",
      "order_shipped",
      { order: 7, carrier: "post" },
      { sender: "clerk" },
    );
    const [order, meta] = await within(5000, "order_shipped", shipped);
    check(order === 7 && meta.sender === "clerk" && meta.offset === result.offset, "order_shipped arrived");
    await tidings.publish("shop:7", "invoice_paid", { invoice: 3, cents: 1200 });
    check((await within(5000, "invoice_paid", paid)) === 1200, "invoice_paid arrived");
    await tidings.notifyUser("shopper", { message: "Shipped", title: "Order 7", level: "success" });
    const note = await within(5000, "notification", notified);
    check(note.message === "Shipped" && note.level === "success", "the notification arrived");

    const page: HistoryPage = await tidings.history("shop:7", { limit: 10 });
    check(
      JSON.stringify(page.publications.map((p) => p.event.type)) === '["order_shipped","invoice_paid"]',
      `history ${JSON.stringify(page)}`,
    );
    const all: Publication[] = [];
    for await (const publication of tidings.iterHistory("shop:7", { pageSize: 1 })) {
      all.push(publication);
    }
    check(all.length === 2 && all[1]?.offset === page.offset, "iterHistory pages through");

    const status: UserStatus = await tidings.userStatus("shopper");
    check(status.connected && status.connections === 1, `status ${JSON.stringify(status)}`);
    const members: ChannelMembers = await tidings.channelMembers("shop:7");
    check(members.members.some((m) => m.user_id === "shopper"), "a member");
    const users: string[] = [];
    for await (const id of tidings.iterUsers({ pageSize: 1 })) {
      users.push(id);
    }
    check(users.includes("shopper"), `users ${users.join(",")}`);
    check((await tidings.healthz()).ok, "healthy");

    // Refusals are TidingsApiErrors: the HTTP status and the server's code.
    try {
      await new TidingsServerApi(api, { apiKey: "wrong" }).stats();
      throw new Error("a wrong API key was accepted");
    } catch (error) {
      if (!(error instanceof TidingsApiError)) {
        throw error;
      }
      const status: number = error.status;
      const code: string = error.code;
      check(status === 401 && code === "unauthorized", `${status} ${code}`);
    }
    // No answer at all is a TidingsConnectionError.
    try {
      await new TidingsServerApi("http://127.0.0.1:9", { apiKey, timeoutMs: 2000 }).stats();
      throw new Error("port 9 answered");
    } catch (error) {
      if (!(error instanceof TidingsConnectionError)) {
        throw error;
      }
    }

    // Webhooks: what the server signs, this verifies (the real ones: server-api.test.mjs).
    const body = JSON.stringify({ id: "evt_1", type: "user.connected", created_at: Date.now(), data: { user_id: "shopper", session_id: "s1" } });
    const header = signWebhook("whsec_x", body);
    const timestamp: number = verifyWebhookSignature("whsec_x", header, body, { toleranceSeconds: 60 });
    check(timestamp > 0, "signed");
    const event: WebhookEvent = constructWebhookEvent("whsec_x", header, Buffer.from(body));
    check(event.type === "user.connected" && event.data.user_id === "shopper", "parsed");
    try {
      verifyWebhookSignature("whsec_other", header, body);
      throw new Error("a wrong secret verified");
    } catch (error) {
      if (!(error instanceof WebhookSignatureError) || error.reason !== "mismatch") {
        throw error;
      }
    }
  } finally {
    client.close();
  }
  console.log("backend ok");
}

// These must not type-check: the types bite.
export async function wrong(
  tidings: TidingsServerApi<ShopEvents>,
  untyped: TidingsServerApi<Record<string, unknown>>,
): Promise<void> {
  // @ts-expect-error: order is a number
  await tidings.publish("shop:7", "order_shipped", { order: "7", carrier: "post" });
  // @ts-expect-error: no such event type (a typo of order_shipped)
  await tidings.publish("shop:7", "order_shiped", { order: 7, carrier: "post" });
  // @ts-expect-error: a chat message's content is a string
  await tidings.publish("ticket:1", "chat_message", { id: "m1", content: 42 });
  // @ts-expect-error: augmented events are checked too: cents is a number
  await tidings.publish("shop:7", "invoice_paid", { invoice: 3, cents: "1200" });
  // @ts-expect-error: the carrier is missing
  await tidings.broadcast("order_shipped", { order: 7 });
  // @ts-expect-error: a notification needs its message
  await tidings.notifyUser("42", { title: "Shipped" });
  // @ts-expect-error: the level is info, success, warning or error
  await tidings.notifyUser("42", { message: "Shipped", level: "fatal" });
  // @ts-expect-error: delivery is reliable or ephemeral
  await tidings.publish("shop:7", "order_shipped", { order: 7, carrier: "post" }, { delivery: "sometimes" });
  // @ts-expect-error: publish needs the channel first
  await tidings.publish("order_shipped", { order: 7, carrier: "post" });
  // @ts-expect-error: history's limit is a number
  await tidings.history("shop:7", { limit: "10" });
  // @ts-expect-error: users are paged with after and limit
  await tidings.users({ page: 2 });
  // @ts-expect-error: connected is a boolean
  const connected: number = (await tidings.userStatus("42")).connected;
  // @ts-expect-error: the last page's next is null
  const next: string = (await tidings.users()).next;
  // @ts-expect-error: an ephemeral publication has no offset (number | null)
  const offset: number = (await tidings.publish("shop:7", "order_shipped", { order: 1, carrier: "x" })).offset;
  // @ts-expect-error: an unknown option
  new TidingsServerApi("http://127.0.0.1:8000", { apikey: "k" });
  // @ts-expect-error: channels is a list
  mintToken("secret", "42", { channels: "shop:*" });
  // @ts-expect-error: the tolerance is toleranceSeconds
  verifyWebhookSignature("secret", "t=1,v1=00", "{}", { tolerance: 5 });
  // @ts-expect-error: without a map the standard events are still checked (message, not text)
  await untyped.publish("user:42", "notification", { text: "hi" });
  // and any other event type goes.
  await untyped.publish("anything", "whatever_happened", { any: ["json", 1, null] });
}

// Nor these: webhook events narrow on their type.
export function wrongWebhook(event: WebhookEvent): void {
  if (event.type === "message.published") {
    const sender: string | null = event.data.sender;
    // @ts-expect-error: the sender may be null (a back end's publication)
    const text: string = event.data.sender;
  }
  if (event.type === "user.connected") {
    // @ts-expect-error: a user's connection has no channel
    const channel: string = event.data.channel;
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
