/**
 * `@tidings/client`: a typed TypeScript layer over the Tidings client compiled to
 * WebAssembly (crates/client-wasm). The WebAssembly core does the protocol: one
 * WebSocket, reconnection with full-jitter backoff, recovery of missed publications,
 * de-duplication, the offline publish queue, heartbeats. This layer adds what a
 * TypeScript developer expects: a synchronous constructor (the module is instantiated
 * behind the scenes), event names and payloads checked against an event map the
 * application declares once, listeners that return their own `off` function.
 *
 * ```ts
 * const client = new TidingsClient<MyEvents>(url, { getToken });
 * client.on("state", (state) => badge(state));
 * client.on("notification", (n) => toast(n.level, n.message));
 * const room = await client.subscribe("ticket:42");
 * room.on("chat_message", (m, meta) => show(meta.sender, m.content));
 * await room.publish({ type: "chat_message", data: { id: "m1", content: "Hello" } });
 * const { message } = await client.rpc("motivation_requested", { mood: "tired" });
 * ```
 *
 * @packageDocumentation
 */

import initWasm, {
  TidingsClient as WasmClient,
  type Subscription as WasmSubscription,
} from "./wasm/tidings_client.js";
import type {
  ClientOptions as WasmClientOptions,
  ConnectionChange,
  ConnectionState,
  HistoryResult,
  InitInput,
  Member,
  PresenceEvent,
  PublicationMeta,
  PublishOptions,
  PublishReply,
  RawEvent,
  StandardEvents,
  SubscribeOptions,
  Subscribed,
  TypingNotice,
  Unsubscribed,
} from "./wasm/tidings_client.js";
import { wasmState } from "./state.js";

export type {
  AnalysisStatus,
  BackoffSettings,
  ChannelPosition,
  ChatMessage,
  Code,
  Connected,
  ConnectionChange,
  ConnectionState,
  Delivery,
  ErrorInfo,
  ErrorKind,
  HistoryResult,
  Level,
  Member,
  Notification,
  PresenceChange,
  PresenceEvent,
  PublicationMeta,
  PublishOptions,
  PublishReply,
  RawEvent,
  StandardEvents,
  SubscribeOptions,
  Subscribed,
  TidingsError,
  TypingNotice,
  Unsubscribed,
  UploadProgress,
} from "./wasm/tidings_client.js";

/**
 * Every event type the application knows, with its payload. Holds the standard events
 * (`notification`, `upload_progress`, `analysis_status`, `chat_message`); add your own
 * either per client (`new TidingsClient<MyEvents>(...)`) or once for the whole program by
 * module augmentation:
 *
 * ```ts
 * declare module "@tidings/client" {
 *   interface TidingsEvents { invoice_paid: { invoice: number; cents: number } }
 * }
 * ```
 */
// eslint-disable-next-line @typescript-eslint/no-empty-interface
export interface TidingsEvents extends StandardEvents {}

/** The events of a client whose application events are `E`: the standard ones, those
 * added to `TidingsEvents`, and `E`. */
export type EventsOf<E extends object> = TidingsEvents & E;

/** The listener arguments of the events that are not publications. */
export interface SubscriptionEvents {
  /** Every publication of the channel, whatever its type (`data` as it came). */
  publication: [event: RawEvent, meta: PublicationMeta];
  /** The subscription started or was restored after a reconnect (`recovered` tells whether
   * every missed publication follows). */
  subscribed: [info: Subscribed];
  /** The server refused to restore the subscription; the client forgot the channel. */
  unsubscribed: [info: Unsubscribed];
  /** A user joined or left the channel. */
  presence: [change: PresenceEvent];
  /** A member of the channel is typing. */
  typing: [notice: TypingNotice];
}

/** The listener arguments of the client's own events (`state` and every channel event). */
export interface ClientEvents extends SubscriptionEvents {
  /** The connection changed: the state after the change, then the change itself. */
  state: [state: ConnectionState, change: ConnectionChange];
}

/** The event type names of `E` a listener or a publish may use (the reserved names of
 * `ClientEvents` excluded). */
export type EventType<E extends object> = Exclude<Extract<keyof EventsOf<E>, string>, keyof ClientEvents>;

/** An event as published: `{ type, data }`, the payload checked against its type. */
export type OutgoingEvent<E extends object = object, K extends EventType<E> = EventType<E>> = K extends EventType<E>
  ? { type: K; data: EventsOf<E>[K] }
  : never;

/** The listener of `type`: the reserved events take their `Reserved` arguments, every event
 * type of `E` takes its payload and where it came from. */
export type Listener<Reserved, E extends object, K> = K extends keyof Reserved
  ? Reserved[K] extends unknown[]
    ? (...args: Reserved[K]) => void
    : never
  : K extends EventType<E>
    ? (data: EventsOf<E>[K], meta: PublicationMeta) => void
    : never;

/** Which page of a channel's stored history `history` reads. */
export interface HistoryOptions {
  /** The oldest publications after this offset (paging forward). */
  since?: number;
  /** Without `since`: the newest publications before this offset (paging back); without
   * either, the newest. */
  before?: number;
  /** At most this many (default 100, at most 1000). */
  limit?: number;
}

/**
 * The RPC methods of a client that declares none (the default of `TidingsClient`'s second
 * type parameter): any method name, any request, and an answer of type `unknown`.
 *
 * Declare your back end's methods instead as a map from method name to its `request` and
 * `response` types (a method without `request` is called without data):
 *
 * ```ts
 * interface AppRpc {
 *   motivation_requested: { request: { mood: string }; response: { message: string } };
 *   ping: { response: "pong" };
 * }
 * const client = new TidingsClient<AppEvents, AppRpc>(url, { token });
 * const { message } = await client.rpc("motivation_requested", { mood: "tired" });
 * ```
 *
 * The types describe what the back end answers; nothing validates it at run time.
 */
export type AnyRpc = Record<string, { request: unknown; response: unknown }>;

/** The method names of the RPC map `R`. */
export type RpcMethod<R extends object> = Extract<keyof R, string>;

/** What method `K` of the RPC map `R` takes (`undefined` when it declares no `request`). */
export type RpcRequest<R extends object, K extends RpcMethod<R>> = R[K] extends { request: infer Q } ? Q : undefined;

/** What method `K` of the RPC map `R` answers (`unknown` when it declares no `response`). */
export type RpcResponse<R extends object, K extends RpcMethod<R>> = R[K] extends { response: infer P } ? P : unknown;

/** The arguments of `rpc` after the method: its request, optional when it may be `undefined`. */
export type RpcArgs<R extends object, K extends RpcMethod<R>> =
  undefined extends RpcRequest<R, K> ? [data?: RpcRequest<R, K>] : [data: RpcRequest<R, K>];

/** Removes the listener `on` added. */
export type Off = () => void;

/** A WebSocket constructor, such as the `ws` package's default export. */
export type WebSocketConstructor = abstract new (url: string, protocols?: string | string[]) => object;

/** Options of `new TidingsClient(url, options)`. */
export interface TidingsClientOptions extends WasmClientOptions {
  /**
   * The WebSocket implementation, for runtimes without a global `WebSocket` (Node 20:
   * `import WebSocket from "ws"`). It is installed as `globalThis.WebSocket`, which the
   * client uses.
   */
  WebSocket?: WebSocketConstructor;
}

/**
 * Where the WebAssembly module comes from, for `init(source)`: a URL (a string or a
 * `URL`), its bytes (`ArrayBuffer`, `Uint8Array`), a compiled `WebAssembly.Module`, a
 * fetch `Response`, or a promise of one of these. (Spelled without DOM types, so that
 * projects without the `dom` lib type-check.)
 */
export type WasmSource = string | object;

/** What the wasm-bindgen classes are underneath their overloaded declarations. The
 * registry of listeners is theirs: `onListener` registers a wrapper under the application's
 * listener, which `offListener` then finds. */
interface RawTarget {
  onListener(type: string, handler: (first: unknown, second: unknown) => void, listener: unknown): number;
  off(id: number): void;
  offListener(type: string, listener: unknown): void;
}
interface RawClient extends RawTarget {
  publish(channel: string, event: { type: string; data: unknown }, options?: PublishOptions): Promise<PublishReply>;
}
interface RawSubscription extends RawTarget {
  publish(event: { type: string; data: unknown }, options?: PublishOptions): Promise<PublishReply>;
}

let initializing: Promise<void> | undefined;

/**
 * Instantiates the WebAssembly module. Optional: the first client does it on its own, from
 * `tidings_client_bg.wasm` next to the package's JavaScript (bundlers such as Vite and
 * webpack copy it). Call it first to load the module from elsewhere (a CDN, your own
 * route) or earlier; in Node the module is read from disk on import.
 */
export function init(source?: WasmSource): Promise<void> {
  if (wasmState.ready) {
    return Promise.resolve();
  }
  if (initializing === undefined) {
    const input = source === undefined ? undefined : { module_or_path: source as InitInput | Promise<InitInput> };
    const started = initWasm(input).then(() => {
      wasmState.ready = true;
    });
    initializing = started;
    // A failure (a 404, say) may be retried with another call.
    started.catch(() => {
      initializing = undefined;
    });
  }
  return initializing;
}

/** A `TidingsError` for an operation that cannot happen. */
function tidingsError(kind: "closed" | "transport", message: string, code?: number): Error {
  const error = new Error(message) as Error & { kind: string; code?: number };
  error.name = "TidingsError";
  error.kind = kind;
  if (code !== undefined) {
    error.code = code;
  }
  return error;
}

/** `run`, at most once. */
function runOnce(run: () => void): Off {
  let done = false;
  return () => {
    if (!done) {
      done = true;
      run();
    }
  };
}

/** Calls `listener` with the arguments the wasm handler gets, reordered for `state`. */
function adapt(type: string, listener: (...args: never[]) => void): (first: unknown, second: unknown) => void {
  const call = listener as (...args: unknown[]) => void;
  if (type === "state") {
    return (change, state) => call(state, change);
  }
  return (first, second) => call(first, second);
}

/**
 * A Tidings client: one WebSocket to the server, reconnecting with backoff, restoring its
 * subscriptions with recovery of what was missed, queueing publishes while offline.
 *
 * `E` is the application's event map (event type name → payload type), added to the
 * standard events; see `TidingsEvents`. `R` is its back end's RPC map (method name →
 * `{ request, response }`); by default any method, with an `unknown` answer (see `AnyRpc`).
 */
export class TidingsClient<E extends object = Record<never, never>, R extends object = AnyRpc> {
  /** The WebSocket endpoint. */
  readonly url: string;
  #raw: WasmClient | undefined;
  #closed = false;
  /** Work waiting for the WebAssembly module (first use in a browser), in order. */
  #waiting: Array<(raw: WasmClient | Error) => void> = [];

  /**
   * Starts a client of `url` (`ws://` or `wss://`). It connects in the background; every
   * method may be called at once (operations wait for the connection, publishes are
   * queued). Throws a `TypeError` when there is no WebSocket implementation.
   */
  constructor(url: string, options: TidingsClientOptions = {}) {
    this.url = url;
    const { WebSocket: implementation, ...settings } = options;
    const scope = globalThis as { WebSocket?: unknown };
    if (implementation !== undefined) {
      scope.WebSocket = implementation;
    }
    if (typeof scope.WebSocket !== "function") {
      throw new TypeError(
        "@tidings/client: no WebSocket implementation. In Node 20, `npm install ws` and pass " +
          "`{ WebSocket }` (import WebSocket from \"ws\") in the options.",
      );
    }
    if (wasmState.ready) {
      this.#raw = new WasmClient(url, settings);
      return;
    }
    init().then(
      () => {
        if (!this.#closed) {
          this.#raw = new WasmClient(url, settings);
        }
        this.#flush(this.#raw ?? tidingsError("closed", "the client is closed", 1000));
      },
      (error: unknown) => {
        const message = `cannot load the Tidings WebAssembly module: ${error instanceof Error ? error.message : String(error)}`;
        console.error("@tidings/client:", error);
        this.#closed = true;
        this.#flush(tidingsError("transport", message));
      },
    );
  }

  #flush(outcome: WasmClient | Error): void {
    const waiting = this.#waiting;
    this.#waiting = [];
    for (const run of waiting) {
      run(outcome);
    }
  }

  /** Runs `run` with the wasm client as soon as there is one. */
  #with(run: (raw: WasmClient | Error) => void): void {
    if (this.#raw !== undefined) {
      run(this.#raw);
    } else if (this.#closed) {
      run(tidingsError("closed", "the client is closed", 1000));
    } else {
      this.#waiting.push(run);
    }
  }

  /** The wasm client, once it exists. */
  #client(): Promise<WasmClient> {
    return new Promise((resolve, reject) => {
      this.#with((raw) => (raw instanceof Error ? reject(raw) : resolve(raw)));
    });
  }

  /** The connection state now. */
  get state(): ConnectionState {
    if (this.#raw !== undefined) {
      return this.#raw.state;
    }
    return this.#closed ? "closed" : "connecting";
  }

  /** How many publishes wait for a connection. */
  get queuedPublishes(): number {
    return this.#raw?.queuedPublishes ?? 0;
  }

  /**
   * Calls `listener` for every event of this kind: a client event (`state`, and the
   * channel events `publication`, `subscribed`, `unsubscribed`, `presence`, `typing` of
   * every channel) or every publication of an event type of `E` on any channel (for
   * example `notification`s on the user's own `user:{id}` channel). Returns its `off`.
   */
  on<K extends keyof ClientEvents | EventType<E>>(type: K, listener: Listener<ClientEvents, E, K>): Off {
    let id: number | undefined;
    this.#with((raw) => {
      if (!(raw instanceof Error)) {
        id = (raw as unknown as RawTarget).onListener(type, adapt(type, listener), listener);
      }
    });
    // Queued behind the registration when the module is still loading.
    return runOnce(() =>
      this.#with((raw) => {
        if (!(raw instanceof Error) && id !== undefined) {
          raw.off(id);
        }
      }),
    );
  }

  /** Calls `listener` for the next event of this kind only. */
  once<K extends keyof ClientEvents | EventType<E>>(type: K, listener: Listener<ClientEvents, E, K>): Off {
    const call = listener as (...args: unknown[]) => void;
    const off = this.on(type, ((...args: unknown[]) => {
      off();
      call(...args);
    }) as Listener<ClientEvents, E, K>);
    return off;
  }

  /** Removes a listener `on` added (its earliest registration for `type`). */
  off<K extends keyof ClientEvents | EventType<E>>(type: K, listener: Listener<ClientEvents, E, K>): void {
    this.#with((raw) => {
      if (!(raw instanceof Error)) {
        (raw as unknown as RawTarget).offListener(type, listener);
      }
    });
  }

  /**
   * Resolves when the client is connected (at once if it is), rejects with a
   * `TidingsError` if it closes for good first.
   */
  ready(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.state === "connected") {
        resolve();
        return;
      }
      if (this.state === "closed") {
        reject(tidingsError("closed", "the client is closed", 1000));
        return;
      }
      const off = this.on("state", (state, change) => {
        if (state === "connected") {
          off();
          resolve();
        } else if (state === "closed") {
          off();
          const code = change.type === "closed" ? change.code : 1000;
          const reason = change.type === "closed" ? change.reason : "closed";
          reject(tidingsError("closed", `the client closed: ${reason}`, code));
        }
      });
    });
  }

  /**
   * Subscribes to `channel` and resolves once the server confirmed it (however many
   * reconnects that takes). The subscription is restored, with recovery of what was
   * missed, after every reconnect until `unsubscribe`.
   */
  async subscribe(channel: string, options?: SubscribeOptions): Promise<Subscription<E, R>> {
    const raw = await this.#client();
    const subscription = await raw.subscribe(channel, undefined, options);
    return new Subscription<E, R>(subscription, this);
  }

  /**
   * Publishes `event` to `channel`. Queued while disconnected (up to `publishQueue`) and
   * resent after a reconnect when the connection dropped before the reply: give events an
   * `id` so a duplicate can be recognised.
   */
  async publish(channel: string, event: OutgoingEvent<E>, options?: PublishOptions): Promise<PublishReply> {
    const raw = await this.#client();
    return (raw as unknown as RawClient).publish(channel, event, options);
  }

  /** The members of `channel` (needs a live connection). */
  async presence(channel: string): Promise<Member[]> {
    return (await this.#client()).presence(channel);
  }

  /**
   * A page of `channel`'s stored history, oldest first (needs a live connection): for
   * "history on join", or to reload a channel whose recovery said `recovered: false`.
   */
  async history(channel: string, options: HistoryOptions = {}): Promise<HistoryResult> {
    const raw = await this.#client();
    return raw.history(channel, options.since, options.before, options.limit);
  }

  /**
   * Calls `method` of the application's back end (the server's `[proxy] rpc` URL, or an
   * embedding server's `on_rpc` hook) with `data`, any JSON, and resolves with its answer
   * (needs a live connection). With an RPC map `R` the method name, the request and the
   * answer are typed.
   *
   * The call is sent once and never again: when the connection drops before the answer it
   * rejects with a `disconnected` `TidingsError` (the back end may have run it already, so
   * retrying is your decision), and with `timeout` after `requestTimeoutMs`. The server's
   * refusals reject with kind `server` and its code: 4004 (no back end answers the method),
   * 4003 (the back end refused, with its message), 4503 (the back end is down or too slow:
   * retry later), 4500 (it failed), 4400 (a method name that is empty, over 128 bytes or has
   * control characters).
   */
  async rpc<K extends RpcMethod<R>>(method: K, ...args: RpcArgs<R, K>): Promise<RpcResponse<R, K>> {
    const raw = await this.#client();
    return raw.rpc(method, args[0]) as Promise<RpcResponse<R, K>>;
  }

  /** Tells the other members of `channel` the user is typing (dropped while disconnected). */
  typing(channel: string): void {
    this.#raw?.typing(channel);
  }

  /** Leaves `channel` and removes the listeners of its `Subscription`s. */
  async unsubscribe(channel: string): Promise<void> {
    return (await this.#client()).unsubscribe(channel);
  }

  /**
   * Closes the connection with 1000 and stops reconnecting; operations still waiting
   * reject with a `closed` `TidingsError`.
   */
  close(): void {
    this.#closed = true;
    this.#raw?.close();
  }
}

/** A channel the client is subscribed to: its events, publish, presence and typing. `E`
 * and `R` are its client's event and RPC maps. */
export class Subscription<E extends object = Record<never, never>, R extends object = AnyRpc> {
  readonly #raw: WasmSubscription;
  readonly #client: TidingsClient<E, R>;

  /** Made by `TidingsClient.subscribe`. */
  constructor(raw: WasmSubscription, client: TidingsClient<E, R>) {
    this.#raw = raw;
    this.#client = client;
  }

  /** The client this subscription belongs to. */
  get client(): TidingsClient<E, R> {
    return this.#client;
  }

  /** The channel. */
  get channel(): string {
    return this.#raw.channel;
  }

  /**
   * Calls `listener` for every publication of an event type of `E` on this channel (with
   * its payload and where it came from), or for this channel's `publication`,
   * `subscribed`, `unsubscribed`, `presence` and `typing` events. Returns its `off`.
   */
  on<K extends keyof SubscriptionEvents | EventType<E>>(type: K, listener: Listener<SubscriptionEvents, E, K>): Off {
    const id = (this.#raw as unknown as RawTarget).onListener(type, adapt(type, listener), listener);
    return runOnce(() => this.#raw.off(id));
  }

  /** Calls `listener` for the next event of this kind only. */
  once<K extends keyof SubscriptionEvents | EventType<E>>(type: K, listener: Listener<SubscriptionEvents, E, K>): Off {
    const call = listener as (...args: unknown[]) => void;
    const off = this.on(type, ((...args: unknown[]) => {
      off();
      call(...args);
    }) as Listener<SubscriptionEvents, E, K>);
    return off;
  }

  /** Removes a listener `on` added (its earliest registration for `type`). */
  off<K extends keyof SubscriptionEvents | EventType<E>>(type: K, listener: Listener<SubscriptionEvents, E, K>): void {
    (this.#raw as unknown as RawTarget).offListener(type, listener);
  }

  /** Publishes `event` on this channel (queued while disconnected). */
  publish(event: OutgoingEvent<E>, options?: PublishOptions): Promise<PublishReply> {
    return (this.#raw as unknown as RawSubscription).publish(event, options);
  }

  /** The members of this channel, one entry per user (needs a live connection). */
  presence(): Promise<Member[]> {
    return this.#raw.presence();
  }

  /** A page of this channel's stored history, oldest first (see `TidingsClient.history`). */
  history(options?: HistoryOptions): Promise<HistoryResult> {
    return this.#client.history(this.channel, options);
  }

  /** Tells the other members the user is typing; send it at most every few seconds. */
  typing(): void {
    this.#raw.typing();
  }

  /** Leaves the channel and removes its listeners. */
  unsubscribe(): Promise<void> {
    return this.#raw.unsubscribe();
  }
}
