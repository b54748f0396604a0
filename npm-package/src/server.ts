/**
 * `@tidings/client/server`: the Tidings HTTP API for Node back ends, over the global
 * `fetch` of Node 20 (no dependency), with webhook signature checks and HS256 client tokens
 * made with `node:crypto`.
 *
 * A separate entry point: nothing here is imported by the browser entry, and nothing here
 * loads the WebAssembly client. Event names and payloads are checked against the same event
 * map as the browser client (`TidingsEvents` of `@tidings/client`, and the map given as the
 * type parameter).
 *
 * ```ts
 * import { TidingsServerApi, mintToken, verifyWebhookSignature } from "@tidings/client/server";
 *
 * const tidings = new TidingsServerApi<AppEvents>("http://127.0.0.1:8000", { apiKey });
 * await tidings.publish("ticket:42", "chat_message", { id: "m1", content: "Hello" }, { sender: "42" });
 * await tidings.notifyUser("42", { message: "Report ready", level: "success" });
 * const token = mintToken(jwtSecret, "42", { expiresIn: 3600, channels: ["ticket:*"] });
 * ```
 *
 * @packageDocumentation
 */

import { createHmac, timingSafeEqual } from "node:crypto";
import type { EventsOf, EventType } from "./index.js";
import type { Delivery, HistoryPage, Level, MessageBody, RawEvent } from "./wasm/tidings_client.js";

export type { Delivery, HistoryPage, Level, RawEvent } from "./wasm/tidings_client.js";
export type { EventsOf, EventType, TidingsEvents } from "./index.js";

// ---------------------------------------------------------------- answers

/** What a count in an answer covers: this node only, or every node of a cluster (with a
 * broker). */
export type Scope = "node" | "cluster";

/** A stored publication: an item of `history`, and what a subscriber's `message` carries. */
export type Publication = MessageBody;

/** The answer to `publish`. */
export interface PublishResult {
  /** The publication's offset in the channel; `null` for an ephemeral publication (not
   * stored). */
  offset: number | null;
  /** The channel's epoch (offsets compare only within one epoch). */
  epoch: string;
  /** Connections on the receiving node it was queued for (informational). */
  delivered: number;
  scope: Scope;
}

/** The answer to `notifyUser` and `broadcast`. */
export interface Delivered {
  /** Connections on the receiving node it was queued for. */
  delivered: number;
  scope: Scope;
}

/** The answer to `users`: a page of connected user ids, sorted. */
export interface UsersPage {
  users: string[];
  /** Pass it as `after` for the next page; `null` on the last page. */
  next: string | null;
  scope: Scope;
}

/** The answer to `userStatus`. */
export interface UserStatus {
  user_id: string;
  connected: boolean;
  connections: number;
  scope: Scope;
}

/** A member of a channel: one entry per user, with how many of its connections are
 * subscribed. */
export interface ChannelMember {
  user_id: string;
  connections: number;
}

/** The answer to `channelMembers`. */
export interface ChannelMembers {
  channel: string;
  members: ChannelMember[];
  scope: Scope;
}

/** The answer to `disconnectUser`. */
export interface Disconnected {
  /** Connections closed on the receiving node (close code 4006). */
  disconnected: number;
  scope: Scope;
}

/** The answer to `status` (`GET /api/status`, served only with `status_route = true`). */
export interface ServerStatus {
  /** `ok`, or `degraded` while a cluster's broker is disconnected. */
  status: string;
  connections: number;
  users: number;
}

/** The answer to `healthz` (a text body: `ok`, or `degraded: <why>`). */
export interface Health {
  /** `ok` or `degraded`. */
  status: string;
  /** The text after `degraded:`, if any. */
  detail: string;
  /** The body as the server sent it. */
  text: string;
  /** `status === "ok"`. */
  ok: boolean;
}

/** Another node's counters, as of its last heartbeat. */
export interface NodeLoad {
  connections: number;
  users: number;
  channels: number;
  publications: number;
  deliveries: number;
}

/** Another node of the cluster. */
export interface NodeStats {
  node: string;
  heard_ms_ago: number;
  load: NodeLoad | null;
}

/** The cluster as the receiving node sees it (only with a broker). */
export interface ClusterStats {
  node: string;
  nodes: number;
  connections: number;
  users: number;
  publications: number;
  deliveries: number;
  others: NodeStats[];
}

/** The answer to `stats`: the receiving node's counters, and with a broker the cluster's. */
export interface Stats {
  connections: number;
  users: number;
  channels: number;
  publications: number;
  deliveries: number;
  dropped: number;
  slow_consumers: number;
  queued_frames: number;
  queued_bytes: number;
  peak_queue_bytes: number;
  cluster?: ClusterStats;
}

// ---------------------------------------------------------------- options

/** Options of `new TidingsServerApi(url, options)`. */
export interface TidingsServerApiOptions {
  /** The server's API key (`Authorization: Bearer <key>`); default `process.env.TIDINGS_API_KEY`. */
  apiKey?: string;
  /** Milliseconds a request may take before it fails with a `TidingsConnectionError`;
   * default 10 000. */
  timeoutMs?: number;
  /** Headers sent with every request. */
  headers?: Record<string, string>;
  /** The `fetch` to use; default the global one. */
  fetch?: typeof globalThis.fetch;
}

/** Options of `publish`. */
export interface ServerPublishOptions {
  /** Override the event type's default delivery class: `reliable` (stored, with an offset)
   * or `ephemeral` (not stored, may be coalesced or dropped under pressure). */
  delivery?: Delivery;
  /** The user the back end publishes for (a message it checked): subscribers see it as the
   * publication's `sender`. Absent: a back-end publication without a sender. */
  sender?: string;
}

/** What `notifyUser` sends: a `notification` event, and who it is from. */
export interface NotifyOptions {
  message: string;
  title?: string;
  /** `info` (the default), `success`, `warning` or `error`. */
  level?: Level;
  /** Anything the front end needs with it (any JSON). */
  data?: unknown;
  /** The user it comes from, shown to the recipient as the publication's `sender`. */
  sender?: string;
}

/** Options of `broadcast`. */
export interface BroadcastOptions {
  /** The user it comes from, shown as the publication's `sender`. */
  sender?: string;
}

/** Which page of a channel's stored history `history` reads. */
export interface ServerHistoryOptions {
  /** The oldest publications after this offset (paging forward). */
  since?: number;
  /** Without `since`: the newest publications before this offset (paging back); without
   * either, the newest. */
  before?: number;
  /** At most this many (default 100, at most 1000). */
  limit?: number;
  /** A user's token: read as that user (the server checks they may subscribe to the
   * channel) instead of with the API key. */
  token?: string;
}

/** Options of `iterHistory`. */
export interface IterHistoryOptions {
  /** Start after this offset (default 0: from the oldest stored). */
  since?: number;
  /** Publications per request (default 100, at most 1000). */
  pageSize?: number;
  /** A user's token, as in `history`. */
  token?: string;
}

/** Options of `users`. */
export interface UsersOptions {
  /** Only user ids after this one (the previous page's `next`). */
  after?: string;
  /** Page size, default 100, at most 1000. */
  limit?: number;
}

/** Options of `iterUsers`. */
export interface IterUsersOptions {
  /** Start after this user id. */
  after?: string;
  /** User ids per request (default 100, at most 1000). */
  pageSize?: number;
}

// ---------------------------------------------------------------- errors

/**
 * The server answered with an error status (`status`), or with a success whose body is not
 * what the API documents (`code: "unexpected_response"`).
 *
 * `code` is the server's machine-readable name from `{"error": {"code", "message"}}`:
 * `unauthorized` (401: missing or wrong API key, or a user token that does not verify),
 * `bad_request` / `bad_frame` (400), `forbidden` (403: a reserved channel, or a user who
 * may not read it), `not_found` (404, also a route this server does not have, such as
 * `/api/status` without `status_route`), `frame_too_large` (413), `rate_limited` (429),
 * `unavailable` (503: retry later), `internal_error`; or `http_<status>` when the body was
 * not the server's typed error (a proxy's page). `message` is for people and logs.
 */
export class TidingsApiError extends Error {
  override readonly name = "TidingsApiError";
  /** The HTTP status. */
  readonly status: number;
  /** The server's error code (see above). */
  readonly code: string;
  /** The body as received: the parsed JSON, or the text when it was not JSON. */
  readonly body: unknown;
  /** The request's method. */
  readonly method: string;
  /** The request's URL. */
  readonly url: string;

  constructor(status: number, code: string, message: string, details: { body?: unknown; method: string; url: string }) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = details.body;
    this.method = details.method;
    this.url = details.url;
  }
}

/** The request got no answer: connection refused, DNS, TLS, or `timeoutMs` passed
 * (`timedOut`). The underlying error is the `cause`. */
export class TidingsConnectionError extends Error {
  override readonly name = "TidingsConnectionError";
  /** The request's method. */
  readonly method: string;
  /** The request's URL. */
  readonly url: string;
  /** Whether `timeoutMs` passed. */
  readonly timedOut: boolean;

  constructor(message: string, details: { method: string; url: string; timedOut: boolean; cause: unknown }) {
    super(message, { cause: details.cause });
    this.method = details.method;
    this.url = details.url;
    this.timedOut = details.timedOut;
  }
}

// ---------------------------------------------------------------- the client

const DEFAULT_TIMEOUT_MS = 10_000;

/** One request of the API. */
interface Call {
  method: "GET" | "POST";
  path: string;
  query?: Record<string, string | number | undefined>;
  body?: unknown;
  /** Send the API key (default), or nothing (`false`), or this user token. */
  auth?: boolean | string;
}

/** A path segment, percent-encoded (`user:42` → `user%3A42`, `a/b` → `a%2Fb`). */
function segment(value: string): string {
  return encodeURIComponent(String(value));
}

/** The JSON body without its unset fields. */
function defined(fields: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(fields)) {
    if (value !== undefined) {
      out[key] = value;
    }
  }
  return out;
}

/**
 * The HTTP API of a Tidings server, for a Node back end: publish, notify users, broadcast,
 * read history, list users and channel members, disconnect, stats and health.
 *
 * `E` is the application's event map (event type → payload), added to the standard events
 * and to those declared for the whole program on `TidingsEvents` of `@tidings/client`, the
 * same as for `TidingsClient<E>`. `TidingsServerApi<Record<string, unknown>>` accepts any
 * event type (the standard ones stay checked).
 *
 * Every method resolves with the server's answer, typed, or rejects with a
 * `TidingsApiError` (the server refused: `status`, `code`, `message`) or a
 * `TidingsConnectionError` (no answer).
 */
export class TidingsServerApi<E extends object = Record<never, never>> {
  /** The server's base URL (`http://` or `https://`, without a trailing slash). */
  readonly url: string;
  readonly #apiKey: string | undefined;
  readonly #timeoutMs: number;
  readonly #headers: Record<string, string>;
  readonly #fetch: typeof globalThis.fetch;

  /**
   * A client of the server at `url` (its HTTP base, e.g. `http://127.0.0.1:8000`, or with a
   * path prefix behind a reverse proxy). The API key defaults to
   * `process.env.TIDINGS_API_KEY`. Throws a `TypeError` for a URL that is not http(s).
   */
  constructor(url: string, options: TidingsServerApiOptions = {}) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new TypeError(`@tidings/client/server: not a URL: ${JSON.stringify(url)}`);
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
      throw new TypeError(
        `@tidings/client/server: the HTTP API needs an http:// or https:// URL, not ${parsed.protocol}// ` +
          "(the server's base URL, not its WebSocket endpoint)",
      );
    }
    this.url = url.replace(/\/+$/, "");
    const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
    this.#apiKey = options.apiKey ?? env?.TIDINGS_API_KEY;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#headers = { ...(options.headers ?? {}) };
    const fetchImplementation = options.fetch ?? globalThis.fetch;
    if (typeof fetchImplementation !== "function") {
      throw new TypeError("@tidings/client/server: no fetch: Node 20 or later has one, or pass `{ fetch }`");
    }
    this.#fetch = fetchImplementation;
  }

  /** Sends `call`, resolves with the response's text, or rejects with a typed error. */
  async #send(call: Call): Promise<{ status: number; text: string; url: string }> {
    let url = this.url + call.path;
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(call.query ?? {})) {
      if (value !== undefined) {
        query.set(key, String(value));
      }
    }
    if ([...query.keys()].length > 0) {
      url += `?${query.toString()}`;
    }
    const headers: Record<string, string> = { accept: "application/json", ...this.#headers };
    const bearer = typeof call.auth === "string" ? call.auth : call.auth === false ? undefined : this.#apiKey;
    if (bearer) {
      headers.authorization = `Bearer ${bearer}`;
    }
    let body: string | undefined;
    if (call.body !== undefined) {
      body = JSON.stringify(call.body);
      headers["content-type"] = "application/json";
    }
    let response: Response;
    let text: string;
    try {
      response = await this.#fetch(url, {
        method: call.method,
        headers,
        body,
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
      text = await response.text();
    } catch (error) {
      const timedOut = error instanceof Error && (error.name === "TimeoutError" || error.name === "AbortError");
      const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
      const why = timedOut
        ? `no answer within ${this.#timeoutMs} ms`
        : cause instanceof Error
          ? cause.message
          : String(cause);
      throw new TidingsConnectionError(`${call.method} ${url}: ${why}`, {
        method: call.method,
        url,
        timedOut,
        cause: error,
      });
    }
    if (response.status < 200 || response.status > 299) {
      throw apiError(response.status, response.statusText, text, call.method, url);
    }
    return { status: response.status, text, url };
  }

  /** Sends `call` and reads its JSON answer. */
  async #json<T>(call: Call): Promise<T> {
    const { status, text, url } = await this.#send(call);
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new TidingsApiError(status, "unexpected_response", `${call.method} ${url}: the answer is not JSON`, {
        body: text,
        method: call.method,
        url,
      });
    }
  }

  // -- publishing

  /**
   * Publishes the event `{ type, data }` to `channel`; `data` is checked against the event
   * map. `delivery` overrides the event type's delivery class; `sender` names the user the
   * back end publishes for (subscribers see it as the publication's `sender`).
   */
  publish<K extends EventType<E>>(
    channel: string,
    type: K,
    data: EventsOf<E>[K],
    options: ServerPublishOptions = {},
  ): Promise<PublishResult> {
    const body = defined({
      channel,
      event: { type, data: data === undefined ? null : data },
      delivery: options.delivery,
      sender: options.sender,
    });
    return this.#json({ method: "POST", path: "/api/publish", body });
  }

  /** Sends a `notification` to every connection of a user (its `user:{id}` channel; kept
   * for its devices that are offline). */
  notifyUser(userId: string, notification: NotifyOptions): Promise<Delivered> {
    const { message, title, level, data, sender } = notification;
    const body = defined({ message, title, level, data, sender });
    return this.#json({ method: "POST", path: `/api/notify/user/${segment(userId)}`, body });
  }

  /** Sends an event to every connection of the server (channel `broadcast`, not stored). */
  broadcast<K extends EventType<E>>(type: K, data: EventsOf<E>[K], options: BroadcastOptions = {}): Promise<Delivered> {
    const body = defined({ event: { type, data: data === undefined ? null : data }, sender: options.sender });
    return this.#json({ method: "POST", path: "/api/broadcast", body });
  }

  // -- reading

  /**
   * A page of `channel`'s stored publications, oldest first. With `since`: the oldest after
   * that offset (paging forward); without: the newest before `before` (or the end). The
   * answer's `offset` is the channel's latest, not the page's; a page of large publications
   * may hold fewer than `limit`: page on from the last offset received.
   */
  history(channel: string, options: ServerHistoryOptions = {}): Promise<HistoryPage> {
    const { since, before, limit, token } = options;
    return this.#json({
      method: "GET",
      path: `/api/channels/${segment(channel)}/history`,
      query: { since, before, limit },
      auth: token ?? true,
    });
  }

  /** Every stored publication of `channel` after offset `since`, oldest first, page by
   * page (`for await`). */
  async *iterHistory(channel: string, options: IterHistoryOptions = {}): AsyncGenerator<Publication, void, undefined> {
    let since = options.since ?? 0;
    for (;;) {
      const page = await this.history(channel, { since, limit: options.pageSize, token: options.token });
      yield* page.publications;
      const offsets = page.publications.map((p) => p.offset).filter((o): o is number => typeof o === "number");
      const last = offsets.length > 0 ? Math.max(...offsets) : undefined;
      if (last === undefined || last <= since || last >= page.offset) {
        return;
      }
      since = last;
    }
  }

  /** A page of connected user ids, sorted; pass `next` as `after` for the next page. */
  users(options: UsersOptions = {}): Promise<UsersPage> {
    return this.#json({ method: "GET", path: "/api/users", query: { after: options.after, limit: options.limit } });
  }

  /** Every connected user id, sorted, following `next` from page to page (`for await`). */
  async *iterUsers(options: IterUsersOptions = {}): AsyncGenerator<string, void, undefined> {
    let after = options.after;
    for (;;) {
      const page = await this.users({ after, limit: options.pageSize });
      yield* page.users;
      if (page.next === null || page.users.length === 0 || page.next === after) {
        return;
      }
      after = page.next;
    }
  }

  /** Whether a user is connected, and with how many connections. */
  userStatus(userId: string): Promise<UserStatus> {
    return this.#json({ method: "GET", path: `/api/users/${segment(userId)}/status` });
  }

  /** Whether a user has at least one open connection. */
  async isUserConnected(userId: string): Promise<boolean> {
    return (await this.userStatus(userId)).connected;
  }

  /** The members of `channel`, one entry per user with its connection count. */
  channelMembers(channel: string): Promise<ChannelMembers> {
    return this.#json({ method: "GET", path: `/api/channels/${segment(channel)}/members` });
  }

  /** Counts of connections, users, channels and deliveries. */
  stats(): Promise<Stats> {
    return this.#json({ method: "GET", path: "/api/stats" });
  }

  /** `GET /api/status` (no API key): health, connections and users. Served only with the
   * server's `status_route = true`; a `TidingsApiError` 404 (`not_found`) otherwise. */
  status(): Promise<ServerStatus> {
    return this.#json({ method: "GET", path: "/api/status", auth: false });
  }

  /** `GET /healthz` (no API key): `ok`, or `degraded` while a cluster's broker is away. */
  async healthz(): Promise<Health> {
    const { text: body } = await this.#send({ method: "GET", path: "/healthz", auth: false });
    const text = body.trim();
    const colon = text.indexOf(":");
    const status = (colon < 0 ? text : text.slice(0, colon)).trim() || text;
    const detail = colon < 0 ? "" : text.slice(colon + 1).trim();
    return { status, detail, text, ok: status === "ok" };
  }

  /** The server's OpenAPI document (`GET /api/openapi.json`). */
  openapi(): Promise<Record<string, unknown>> {
    return this.#json({ method: "GET", path: "/api/openapi.json", auth: false });
  }

  // -- acting

  /** Closes every connection of a user with 4006 (its clients do not reconnect). */
  disconnectUser(userId: string): Promise<Disconnected> {
    return this.#json({ method: "POST", path: `/api/users/${segment(userId)}/disconnect` });
  }
}

/** The error for a non-2xx answer: the server's `{"error": {code, message}}` when the body
 * is one, else `http_<status>` with the body's text. */
function apiError(status: number, statusText: string, text: string, method: string, url: string): TidingsApiError {
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON: kept as text.
  }
  const error = typeof body === "object" && body !== null ? (body as { error?: unknown }).error : undefined;
  if (typeof error === "object" && error !== null && typeof (error as { code?: unknown }).code === "string") {
    const { code, message } = error as { code: string; message?: unknown };
    return new TidingsApiError(status, code, typeof message === "string" ? message : String(message ?? ""), {
      body,
      method,
      url,
    });
  }
  const trimmed = text.trim();
  return new TidingsApiError(status, `http_${status}`, trimmed ? trimmed.slice(0, 500) : statusText, {
    body,
    method,
    url,
  });
}

// ---------------------------------------------------------------- webhooks

/** The header holding a webhook's signature: `t=<unix seconds>,v1=<hex HMAC-SHA256>`. */
export const SIGNATURE_HEADER = "X-Tidings-Signature";
/** The header holding a webhook's kind, e.g. `message.published`. */
export const EVENT_HEADER = "X-Tidings-Event";
/** The header holding a webhook's event id (`evt_…`), the same on every retry. */
export const EVENT_ID_HEADER = "X-Tidings-Event-Id";
/** Seconds a signature's timestamp may be away from now, either way, by default. */
export const DEFAULT_TOLERANCE_SECONDS = 300;

/** A secret, or several while rotating (any of them may match). */
export type WebhookSecret = string | Uint8Array | ReadonlyArray<string | Uint8Array>;

/** Options of `verifyWebhookSignature` and `constructWebhookEvent`. */
export interface VerifyWebhookOptions {
  /** Seconds the timestamp may be away from now (default 300); `null` skips the check. */
  toleranceSeconds?: number | null;
  /** The time to check against (default: now). */
  now?: Date;
}

/** Why a webhook signature does not verify: `format` (the header is missing or not
 * `t=…,v1=…`), `mismatch` (no signature matches the body with the secret: a wrong secret,
 * or a body changed or re-encoded on the way), `timestamp` (too old, or too far ahead). */
export type WebhookSignatureFailure = "format" | "mismatch" | "timestamp";

/** A webhook whose `X-Tidings-Signature` does not verify; answer it with 400. */
export class WebhookSignatureError extends Error {
  override readonly name = "WebhookSignatureError";
  readonly reason: WebhookSignatureFailure;
  /** The signature's timestamp (Unix seconds), when the header had one. */
  readonly timestamp: number | undefined;

  constructor(reason: WebhookSignatureFailure, message: string, timestamp?: number) {
    super(message);
    this.reason = reason;
    this.timestamp = timestamp;
  }
}

function bytes(value: string | Uint8Array): Uint8Array {
  return typeof value === "string" ? Buffer.from(value, "utf8") : value;
}

function webhookHmac(secret: string | Uint8Array, timestamp: number, body: Uint8Array): string {
  return createHmac("sha256", bytes(secret)).update(`${timestamp}.`).update(body).digest("hex");
}

/** The `X-Tidings-Signature` value the server would send for `body` (for tests, or to
 * relay a webhook onwards). `timestamp` is Unix seconds, default now. */
export function signWebhook(secret: string | Uint8Array, body: string | Uint8Array, options: { timestamp?: number } = {}): string {
  const t = Math.floor(options.timestamp ?? Date.now() / 1000);
  return `t=${t},v1=${webhookHmac(secret, t, bytes(body))}`;
}

function parseSignatureHeader(header: string | readonly string[] | null | undefined): { timestamp: number; signatures: string[] } {
  const value = Array.isArray(header) ? header.join(",") : (header as string | null | undefined);
  if (typeof value !== "string" || value.trim() === "") {
    throw new WebhookSignatureError("format", `missing ${SIGNATURE_HEADER} header`);
  }
  let timestamp: number | undefined;
  const signatures: string[] = [];
  for (const raw of value.split(",")) {
    const item = raw.trim();
    const equals = item.indexOf("=");
    if (equals < 0) {
      throw new WebhookSignatureError("format", `malformed ${SIGNATURE_HEADER} item ${JSON.stringify(item)}`);
    }
    const key = item.slice(0, equals);
    const part = item.slice(equals + 1);
    if (key === "t") {
      if (!/^\d+$/.test(part)) {
        throw new WebhookSignatureError("format", `${SIGNATURE_HEADER} timestamp ${JSON.stringify(part)} is not Unix seconds`);
      }
      timestamp = Number(part);
    } else if (key === "v1") {
      signatures.push(part.toLowerCase());
    }
    // Other schemes (a future v2) are skipped, so that a server can add one.
  }
  if (timestamp === undefined) {
    throw new WebhookSignatureError("format", `${SIGNATURE_HEADER} has no t=<timestamp>`);
  }
  if (signatures.length === 0) {
    throw new WebhookSignatureError("format", `${SIGNATURE_HEADER} has no v1=<signature>`, timestamp);
  }
  return { timestamp, signatures };
}

/**
 * Checks a webhook's `X-Tidings-Signature` header against its **raw** body (the bytes as
 * received: JSON parsed and encoded again does not verify) and returns the signature's
 * timestamp (Unix seconds). Throws a `WebhookSignatureError` whose `reason` is `format`,
 * `mismatch` or `timestamp` (more than `toleranceSeconds` from now). `secret` may be a
 * list, to accept the old and the new secret while rotating.
 */
export function verifyWebhookSignature(
  secret: WebhookSecret,
  header: string | readonly string[] | null | undefined,
  body: string | Uint8Array,
  options: VerifyWebhookOptions = {},
): number {
  const { timestamp, signatures } = parseSignatureHeader(header);
  const secrets: ReadonlyArray<string | Uint8Array> =
    typeof secret === "string" || secret instanceof Uint8Array ? [secret] : secret;
  if (secrets.length === 0) {
    throw new TypeError("verifyWebhookSignature: no webhook secret given");
  }
  const raw = bytes(body);
  const matched = secrets.some((s) => {
    const expected = Buffer.from(webhookHmac(s, timestamp, raw), "utf8");
    return signatures.some((candidate) => {
      const given = Buffer.from(candidate, "utf8");
      return given.length === expected.length && timingSafeEqual(given, expected);
    });
  });
  if (!matched) {
    throw new WebhookSignatureError("mismatch", "no signature matches the body with this secret", timestamp);
  }
  const tolerance = options.toleranceSeconds === undefined ? DEFAULT_TOLERANCE_SECONDS : options.toleranceSeconds;
  if (tolerance !== null) {
    const now = Math.floor((options.now ?? new Date()).getTime() / 1000);
    if (Math.abs(now - timestamp) > tolerance) {
      const which = timestamp < now ? "too old" : "too far in the future";
      throw new WebhookSignatureError(
        "timestamp",
        `signature timestamp ${timestamp} is ${which} (now ${now}, tolerance ${tolerance} s)`,
        timestamp,
      );
    }
  }
  return timestamp;
}

/** Every webhook's envelope: `X-Tidings-Event-Id` is its `id`, `X-Tidings-Event` its `type`. */
export interface WebhookEnvelope<T extends string, D> {
  /** The event id (`evt_…`), the same on every retry: the idempotency key. */
  id: string;
  type: T;
  /** When it happened, milliseconds since the Unix epoch. */
  created_at: number;
  data: D;
}

/** `message.published`: a stored publication. */
export type MessagePublishedEvent = WebhookEnvelope<
  "message.published",
  {
    channel: string;
    offset: number | null;
    epoch: string;
    /** Server time of publication, milliseconds since the Unix epoch. */
    ts: number;
    /** The publishing user; `null` for a back end's publication without a sender. */
    sender: string | null;
    event: RawEvent;
  }
>;
/** `user.connected`: a connection of a user opened. */
export type UserConnectedEvent = WebhookEnvelope<"user.connected", { user_id: string; session_id: string }>;
/** `user.disconnected`: a connection of a user closed. */
export type UserDisconnectedEvent = WebhookEnvelope<"user.disconnected", { user_id: string; session_id: string }>;
/** `channel.joined`: a user's first connection joined a channel. */
export type ChannelJoinedEvent = WebhookEnvelope<"channel.joined", { channel: string; user_id: string }>;
/** `channel.left`: a user's last connection left a channel. */
export type ChannelLeftEvent = WebhookEnvelope<"channel.left", { channel: string; user_id: string }>;

/** A webhook's body, by kind (narrow on `type`). A newer server may send kinds not listed
 * here: check `type` before reading `data`. */
export type WebhookEvent =
  | MessagePublishedEvent
  | UserConnectedEvent
  | UserDisconnectedEvent
  | ChannelJoinedEvent
  | ChannelLeftEvent;

/** Every kind the server sends. */
export const WEBHOOK_EVENT_KINDS: readonly WebhookEvent["type"][] = [
  "message.published",
  "user.connected",
  "user.disconnected",
  "channel.joined",
  "channel.left",
];

/**
 * `verifyWebhookSignature`, then the body parsed: the typed event of a request whose
 * signature is valid. Throws a `WebhookSignatureError` for a bad signature and a
 * `SyntaxError` for a signed body that is not a webhook event.
 */
export function constructWebhookEvent(
  secret: WebhookSecret,
  header: string | readonly string[] | null | undefined,
  body: string | Uint8Array,
  options: VerifyWebhookOptions = {},
): WebhookEvent {
  verifyWebhookSignature(secret, header, body, options);
  const text = typeof body === "string" ? body : Buffer.from(body).toString("utf8");
  const event: unknown = JSON.parse(text);
  if (typeof event !== "object" || event === null || typeof (event as { type?: unknown }).type !== "string") {
    throw new SyntaxError("the webhook body is not an event: expected an object with a string `type`");
  }
  return event as WebhookEvent;
}

// ---------------------------------------------------------------- tokens

/** Seconds a minted token lives by default (the same as `tidings token`). */
export const DEFAULT_EXPIRES_IN_SECONDS = 3600;

/** Options of `mintToken`. */
export interface MintTokenOptions {
  /** Seconds from now until it expires (`exp`); default 3600. The server allows no leeway. */
  expiresIn?: number;
  /** The only channels the user may subscribe and publish to: exact names, or prefixes
   * ending in `*` (`["ticket:*", "lobby"]`). Absent: any the server allows. */
  channels?: readonly string[];
  /** `aud`, for a server with `jwt.audience`. */
  audience?: string;
  /** `iss`, for a server with `jwt.issuer`. */
  issuer?: string;
  /** Any other claims (for an authorizer hook or your proxy); they cannot set the user id
   * claim or `exp`: use the arguments. */
  claims?: Record<string, unknown>;
  /** The claim holding the user id, for a server with `jwt.user_id_claim` (default `sub`;
   * a numeric id then stays a JSON number, in `sub` it is always text). */
  userIdClaim?: string;
  /** The time it is issued (`iat`; default now). */
  now?: Date;
}

function base64url(value: string | Uint8Array): string {
  return Buffer.from(typeof value === "string" ? Buffer.from(value, "utf8") : value).toString("base64url");
}

/**
 * An HS256 JWT for `userId` that a server with the JWT secret `secret` accepts (its
 * `jwt.secret`, `TIDINGS_JWT_SECRET`): claims `sub` (or `userIdClaim`), `exp`, `iat`, and
 * `channels`, `aud`, `iss` and `claims` when given. Made with `node:crypto`; for a back end
 * that issues its users' tokens, and for tests.
 */
export function mintToken(secret: string | Uint8Array, userId: string | number, options: MintTokenOptions = {}): string {
  if (typeof userId !== "string" && typeof userId !== "number") {
    throw new TypeError("mintToken: the user id must be a string or a number");
  }
  if (String(userId) === "") {
    throw new RangeError("mintToken: the user id must not be empty (the server refuses an empty user id)");
  }
  if (typeof secret === "string" ? secret === "" : secret.length === 0) {
    throw new RangeError("mintToken: empty secret");
  }
  const userIdClaim = options.userIdClaim ?? "sub";
  if (userIdClaim === "") {
    throw new RangeError("mintToken: userIdClaim must name a claim");
  }
  const claims = { ...(options.claims ?? {}) };
  for (const reserved of [userIdClaim, "exp"]) {
    if (reserved in claims) {
      throw new RangeError(`mintToken: pass ${JSON.stringify(reserved)} as an argument, not in claims`);
    }
  }
  const expiresIn = options.expiresIn ?? DEFAULT_EXPIRES_IN_SECONDS;
  if (!Number.isFinite(expiresIn)) {
    throw new RangeError("mintToken: expiresIn must be a number of seconds");
  }
  const issued = Math.floor((options.now ?? new Date()).getTime() / 1000);
  const payload: Record<string, unknown> = { ...claims };
  payload[userIdClaim] = userIdClaim === "sub" ? String(userId) : userId;
  payload.exp = issued + Math.trunc(expiresIn);
  if (!("iat" in payload)) {
    payload.iat = issued;
  }
  if (options.channels !== undefined) {
    if (typeof options.channels === "string" || !Array.isArray(options.channels)) {
      throw new TypeError("mintToken: channels must be an array of channel names, not one string");
    }
    payload.channels = [...options.channels];
  }
  if (options.audience !== undefined) {
    payload.aud = options.audience;
  }
  if (options.issuer !== undefined) {
    payload.iss = options.issuer;
  }
  const signingInput = `${base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }))}.${base64url(JSON.stringify(payload))}`;
  const signature = createHmac("sha256", bytes(secret)).update(signingInput).digest("base64url");
  return `${signingInput}.${signature}`;
}
