// @tidings/client/server, the Node back-end client, from the packed tarball installed into a
// fresh project (servertest/), against a real `tidings serve --dev` with webhooks and the
// status route on:
//   - the tarball ships the entry, and neither browser nor Node client entry imports it;
//   - `tsc --strict --noEmit` accepts servertest/backend.ts and every `@ts-expect-error` in it
//     is an error (exactly those lines fail without the directives), and the compiled
//     program runs (a typed back end and a @tidings/client user in Node);
//   - every HTTP API method against the binary, seen by raw WebSocket clients (`ws`):
//     publish (type, data, sender), notify, broadcast, history and users paging, status and
//     members, disconnect (4006), typed errors (401, 403, no answer, a proxy's page);
//   - a webhook the binary really sends verifies; tokens minted here are accepted (and
//     refused when expired, wrongly signed or outside their `channels`).
//
// Needs: target/npm/tidings-client-*.tgz (scripts/build-npm), target/release/tidings.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import WebSocket from "ws";
import { root, run, startTidings, tempDir } from "./lib.mjs";

const WEBHOOK_SECRET = "whsec_e2e_0123456789";
const tarball = join(
  root,
  "target",
  "npm",
  readdirSync(join(root, "target", "npm")).find((f) => /^tidings-client-.*\.tgz$/.test(f)),
);

let project;
let server;
let hooks;
/** `@tidings/client/server` and `@tidings/client` as the installed project resolves them. */
let sdk;
let client;
/** A TidingsServerApi with the right key. */
let api;

before(async () => {
  project = tempDir("tidings-servertest-project-");
  for (const file of ["package.json", "tsconfig.json", "backend.ts"]) {
    cpSync(join(root, "tests", "browser-e2e", "servertest", file), join(project, file));
  }
  const manifest = join(project, "package.json");
  writeFileSync(manifest, readFileSync(manifest, "utf8").replace("file:TARBALL", `file:${tarball}`));
  await run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"], { cwd: project });
  // Imported from inside the project, so that Node resolves the package's `exports` map.
  writeFileSync(
    join(project, "entries.mjs"),
    'export * as server from "@tidings/client/server";\nexport * as client from "@tidings/client";\n',
  );
  ({ server: sdk, client } = await import(pathToFileURL(join(project, "entries.mjs")).href));

  hooks = await startWebhookReceiver();
  server = await startTidings(undefined, {
    config:
      "status_route = true\n\n" +
      `[[webhooks]]\nurl = ${JSON.stringify(hooks.url)}\nsecret = ${JSON.stringify(WEBHOOK_SECRET)}\n\n` +
      '[webhook_delivery]\npoll_interval = "50ms"\nretry_min = "100ms"\nretry_max = "1s"\ntimeout = "5s"\n',
  });
  api = new sdk.TidingsServerApi(server.http, { apiKey: server.apiKey, timeoutMs: 5000 });
});

after(async () => {
  await server?.stop();
  await hooks?.stop();
  if (project) rmSync(project, { recursive: true, force: true });
});

// ---------------------------------------------------------------- helpers

let counter = 0;
const unique = (prefix) => `${prefix}-${process.pid}-${++counter}`;

/** An HTTP server that answers every POST with 204 and keeps its headers and raw body. */
async function startWebhookReceiver() {
  const received = [];
  const waiting = new Set();
  const http = createServer(async (request, response) => {
    const chunks = [];
    for await (const chunk of request) chunks.push(chunk);
    const hook = { headers: request.headers, body: Buffer.concat(chunks) };
    received.push(hook);
    for (const check of waiting) check();
    response.writeHead(204).end();
  });
  await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${http.address().port}/hooks`,
    received,
    /** The first webhook (past or future) whose parsed body matches. */
    waitFor(match, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hook = received.find((h) => match(JSON.parse(h.body.toString("utf8"))));
          if (hook) {
            waiting.delete(check);
            clearTimeout(timer);
            resolve(hook);
          }
        };
        const timer = setTimeout(() => {
          waiting.delete(check);
          const kinds = received.map((h) => h.headers["x-tidings-event"]);
          reject(new Error(`no matching webhook in ${timeoutMs} ms; got ${kinds.join(", ")}`));
        }, timeoutMs);
        waiting.add(check);
        check();
      });
    },
    stop: () => new Promise((resolve) => http.close(resolve)),
  };
}

/**
 * A raw WebSocket client of the protocol (docs/protocol.md) with `token`: resolves once
 * `connected` arrived. `next(match)` waits for a frame (frames are kept until taken),
 * `request(type, data)` sends one with an id and resolves with its reply or error frame,
 * `closed` resolves with the close code and reason.
 */
function connect(token, wsUrl = server.ws) {
  const ws = new WebSocket(`${wsUrl}?token=${encodeURIComponent(token)}`);
  const backlog = [];
  const waiters = new Set();
  let ids = 0;
  const closed = new Promise((resolve) => ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
  ws.on("error", () => {});
  ws.on("message", (raw) => {
    backlog.push(JSON.parse(raw.toString()));
    for (const waiter of waiters) waiter();
  });
  const next = (match, what = "a frame", timeoutMs = 5000) =>
    new Promise((resolve, reject) => {
      const check = () => {
        const index = backlog.findIndex(match);
        if (index >= 0) {
          waiters.delete(check);
          clearTimeout(timer);
          resolve(backlog.splice(index, 1)[0]);
        }
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`timed out waiting for ${what}; frames: ${JSON.stringify(backlog)}`));
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  const socket = {
    ws,
    closed,
    next,
    /** The next `message` frame of `channel`. */
    message: (channel) => next((f) => f.type === "message" && f.data.channel === channel, `a message on ${channel}`),
    request(type, data) {
      const id = ++ids;
      ws.send(JSON.stringify({ type, id, data }));
      return next((f) => (f.type === "reply" || f.type === "error") && f.id === id, `the answer to ${type} ${id}`);
    },
    async subscribe(channel) {
      const answer = await socket.request("subscribe", { channel });
      assert.equal(answer.type, "reply", JSON.stringify(answer));
      return answer;
    },
    close() {
      ws.close(1000);
      return closed;
    },
  };
  return Promise.race([
    next((f) => f.type === "connected", "connected").then((frame) => Object.assign(socket, { connected: frame.data })),
    closed.then(({ code, reason }) => {
      const error = new Error(`closed with ${code} before connected: ${reason}`);
      error.code = code;
      throw error;
    }),
  ]);
}

const token = (userId, options) => sdk.mintToken(server.jwtSecret, userId, options);

async function eventually(what, check, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) assert.fail(`timed out: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** The error `promise` rejects with (fails when it resolves). */
async function rejection(promise) {
  return promise.then(
    (value) => assert.fail(`resolved with ${JSON.stringify(value)}`),
    (error) => error,
  );
}

// ---------------------------------------------------------------- the package

test("the tarball ships the server entry, and the client entries never import it", () => {
  const installed = join(project, "node_modules", "@tidings", "client");
  const manifest = JSON.parse(readFileSync(join(installed, "package.json"), "utf8"));
  assert.deepEqual(manifest.exports["./server"], { types: "./dist/server.d.ts", default: "./dist/server.js" });
  assert.deepEqual(Object.keys(manifest.exports["."]), ["types", "node", "default"]);
  assert.equal(manifest.dependencies, undefined, "no runtime dependency");
  for (const file of ["server.js", "server.d.ts"]) assert.ok(existsSync(join(installed, "dist", file)), file);
  const imports = (file) =>
    [...readFileSync(join(installed, "dist", file), "utf8").matchAll(/^\s*(?:import|export)\b[^;]*?from\s+"([^"]+)"/gm)].map(
      (m) => m[1],
    );
  // The server entry: node:crypto only (types from the client entry are erased).
  assert.deepEqual(imports("server.js"), ["node:crypto"]);
  // The client entries' import graph never reaches it.
  const seen = new Set();
  const walk = (file) => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const target of imports(file)) if (target.startsWith("./")) walk(join(file, "..", target).replace(/^\.\//, ""));
  };
  walk("index.js");
  walk("node.js");
  assert.ok(!seen.has("server.js"), [...seen].join(", "));
  assert.ok(seen.has("wasm/tidings_client.js"), [...seen].join(", "));
  // And the dashboard's Vite bundle (a browser build of @tidings/client) has none of it.
  const assets = join(root, "examples", "browser-dashboard", "web", "dist", "assets");
  if (existsSync(assets)) {
    for (const file of readdirSync(assets).filter((f) => f.endsWith(".js"))) {
      const text = readFileSync(join(assets, file), "utf8");
      assert.ok(!/TidingsServerApi|node:crypto|verifyWebhookSignature/.test(text), file);
    }
  }
  // Both entries from one program: the server one has no WebSocket client, the client one no API.
  assert.equal(typeof sdk.TidingsServerApi, "function");
  assert.equal(sdk.TidingsClient, undefined);
  assert.equal(typeof client.TidingsClient, "function");
  assert.equal(client.TidingsServerApi, undefined);
});

const tsc = () => join(project, "node_modules", ".bin", "tsc");

test("tsc --strict --noEmit accepts the back end, and every @ts-expect-error is an error", async () => {
  await run(tsc(), ["--strict", "--noEmit", "-p", project]);
});

test("without the directives, exactly the marked lines of the back end fail to type-check", async () => {
  const source = readFileSync(join(project, "backend.ts"), "utf8").split("\n");
  const expected = [];
  const stripped = source.map((line, index) => {
    if (/^\s*\/\/ @ts-expect-error/.test(line)) {
      expected.push(index + 2); // the line after the directive, 1-based
      return "";
    }
    return line;
  });
  assert.ok(expected.length >= 15, `only ${expected.length} @ts-expect-error lines`);
  writeFileSync(join(project, "stripped.ts"), stripped.join("\n"));
  writeFileSync(
    join(project, "tsconfig.stripped.json"),
    JSON.stringify({ extends: "./tsconfig.json", files: ["stripped.ts"] }),
  );
  const failure = await run(tsc(), ["--noEmit", "--pretty", "false", "-p", "tsconfig.stripped.json"], { cwd: project }).then(
    () => assert.fail("the stripped program type-checked"),
    (error) => error,
  );
  const lines = [...failure.output.matchAll(/^stripped\.ts\((\d+),\d+\): error TS\d+/gm)].map((m) => Number(m[1]));
  assert.deepEqual([...new Set(lines)].sort((a, b) => a - b), expected, failure.output);
});

test("the compiled back end runs in Node 20 against the real server", async () => {
  await run(tsc(), ["-p", project]);
  const output = await run(process.execPath, [join(project, "out", "backend.js")], {
    cwd: project,
    env: {
      ...process.env,
      TIDINGS_URL: server.ws,
      TIDINGS_API: server.http,
      TIDINGS_API_KEY: server.apiKey,
      TIDINGS_JWT_SECRET: server.jwtSecret,
    },
  });
  assert.match(output, /backend ok/);
});

// ---------------------------------------------------------------- the HTTP API

test("publish reaches a WebSocket subscriber with its type, data and sender", async () => {
  const channel = unique("ticket");
  const alice = await connect(token(unique("subscriber")));
  try {
    await alice.subscribe(channel);
    const data = { id: "m1", content: "Hello from the back end", metadata: { n: [1, 2] } };
    const result = await api.publish(channel, "chat_message", data, { sender: "agent-7" });
    assert.equal(typeof result.offset, "number");
    assert.equal(typeof result.epoch, "string");
    assert.equal(result.delivered, 1);
    assert.equal(result.scope, "node");
    const { data: message } = await alice.message(channel);
    assert.equal(message.offset, result.offset);
    assert.equal(message.epoch, result.epoch);
    assert.equal(message.sender, "agent-7");
    assert.deepEqual(message.event, { type: "chat_message", data });

    // Without a sender: a back end's own publication. Ephemeral: no offset, not stored.
    const plain = await api.publish(channel, "order_shipped", { order: 7, carrier: "post" });
    const { data: second } = await alice.message(channel);
    assert.equal(second.sender, undefined);
    assert.equal(second.offset, plain.offset);
    assert.deepEqual(second.event, { type: "order_shipped", data: { order: 7, carrier: "post" } });
    const ephemeral = await api.publish(channel, "upload_progress", { id: "u1", progress: 50, status: "uploading" }, { delivery: "ephemeral" });
    assert.equal(ephemeral.offset, null);
    const { data: third } = await alice.message(channel);
    assert.equal(third.event.type, "upload_progress");
    assert.equal(third.offset, undefined);
    const page = await api.history(channel);
    assert.deepEqual(page.publications.map((p) => p.event.type), ["chat_message", "order_shipped"]);
  } finally {
    await alice.close();
  }
});

test("notifyUser reaches every connection of the user, with its fields and sender", async () => {
  const user = unique("notified");
  const phone = await connect(token(user));
  const laptop = await connect(token(user));
  try {
    const delivered = await api.notifyUser(user, {
      message: "Your report is ready",
      title: "Analysis done",
      level: "success",
      data: { report: 42 },
      sender: "reporter",
    });
    assert.deepEqual(delivered, { delivered: 2, scope: "node" });
    for (const socket of [phone, laptop]) {
      const { data: message } = await socket.message(`user:${user}`);
      assert.equal(message.sender, "reporter");
      assert.deepEqual(message.event, {
        type: "notification",
        data: { title: "Analysis done", message: "Your report is ready", level: "success", data: { report: 42 } },
      });
    }
    // The level defaults to info; nobody connected is no error (kept for the inbox).
    await api.notifyUser(user, { message: "plain" });
    const { data: plain } = await phone.message(`user:${user}`);
    assert.equal(plain.event.data.level, "info");
    assert.equal(plain.sender, undefined);
    assert.equal((await api.notifyUser(unique("nobody"), { message: "later" })).delivered, 0);
  } finally {
    await phone.close();
    await laptop.close();
  }
});

test("broadcast reaches every connection, on the broadcast channel, with its sender", async () => {
  const one = await connect(token(unique("everyone")));
  const two = await connect(token(unique("everyone")));
  try {
    const delivered = await api.broadcast("maintenance", { minutes: 15 }, { sender: "ops" });
    assert.ok(delivered.delivered >= 2, JSON.stringify(delivered));
    for (const socket of [one, two]) {
      const { data: message } = await socket.message("broadcast");
      assert.equal(message.sender, "ops");
      assert.deepEqual(message.event, { type: "maintenance", data: { minutes: 15 } });
    }
  } finally {
    await one.close();
    await two.close();
  }
});

test("history pages forward and back, and iterHistory walks every page", async () => {
  const channel = unique("paged");
  const offsets = [];
  for (let n = 1; n <= 7; n++) offsets.push((await api.publish(channel, "step", { n })).offset);
  const first = offsets[0];
  const ns = (page) => page.publications.map((p) => p.event.data.n);

  const newest = await api.history(channel, { limit: 3 });
  assert.equal(newest.channel, channel);
  assert.equal(newest.offset, offsets[6]);
  assert.deepEqual(ns(newest), [5, 6, 7]);
  assert.deepEqual(ns(await api.history(channel, { since: first - 1, limit: 3 })), [1, 2, 3]);
  assert.deepEqual(ns(await api.history(channel, { since: offsets[2], limit: 3 })), [4, 5, 6]);
  assert.deepEqual(ns(await api.history(channel, { before: offsets[4], limit: 2 })), [3, 4]);
  const page = await api.history(channel, { since: offsets[5] });
  assert.deepEqual(ns(page), [7]);
  assert.ok(page.publications.every((p) => p.channel === channel && typeof p.ts === "number" && p.epoch === newest.epoch));

  const walked = [];
  for await (const publication of api.iterHistory(channel, { pageSize: 2 })) walked.push(publication.event.data.n);
  assert.deepEqual(walked, [1, 2, 3, 4, 5, 6, 7]);
  const rest = [];
  for await (const publication of api.iterHistory(channel, { since: offsets[3], pageSize: 2 })) rest.push(publication.offset);
  assert.deepEqual(rest, offsets.slice(4));
  const none = [];
  for await (const publication of api.iterHistory(unique("empty"))) none.push(publication);
  assert.deepEqual(none, []);
});

test("history with a user's token: the user's own channel, not another's", async () => {
  const alice = unique("reader");
  await api.notifyUser(alice, { message: "for alice" });
  const mine = await api.history(`user:${alice}`, { token: token(alice) });
  assert.deepEqual(mine.publications.map((p) => p.event.data.message), ["for alice"]);
  const error = await rejection(api.history(`user:${alice}`, { token: token(unique("mallory")) }));
  assert.ok(error instanceof sdk.TidingsApiError, String(error));
  assert.equal(error.status, 403);
  assert.equal(error.code, "forbidden");
  const bad = await rejection(api.history(`user:${alice}`, { token: "not-a-jwt" }));
  assert.equal(bad.status, 401);
  assert.equal(bad.code, "unauthorized");
});

test("users pages through the connected users with after and next; iterUsers gets them all", async () => {
  const prefix = `pager${process.pid}-`;
  const names = ["a", "b", "c", "d", "e"].map((s) => prefix + s);
  const sockets = await Promise.all(names.map((name) => connect(token(name))));
  try {
    const first = await api.users({ after: prefix, limit: 2 });
    assert.deepEqual(first.users, names.slice(0, 2));
    assert.equal(first.next, names[1]);
    assert.equal(first.scope, "node");
    const second = await api.users({ after: first.next, limit: 2 });
    assert.deepEqual(second.users, names.slice(2, 4));
    const last = await api.users({ after: names[4] });
    assert.ok(!last.users.some((u) => u.startsWith(prefix)));

    const everyone = [];
    for await (const id of api.iterUsers({ pageSize: 2 })) everyone.push(id);
    assert.deepEqual(everyone.filter((u) => u.startsWith(prefix)), names);
    assert.deepEqual(everyone, [...everyone].sort(), "sorted");
    assert.equal(new Set(everyone).size, everyone.length, "each once");
    const after = [];
    for await (const id of api.iterUsers({ after: names[2], pageSize: 1 })) after.push(id);
    assert.deepEqual(after.filter((u) => u.startsWith(prefix)), names.slice(3));
  } finally {
    await Promise.all(sockets.map((s) => s.close()));
  }
});

test("userStatus, isUserConnected, channelMembers, stats, status and healthz after a client connects", async () => {
  const user = unique("member");
  const channel = unique("room");
  assert.deepEqual(await api.userStatus(user), { user_id: user, connected: false, connections: 0, scope: "node" });
  assert.equal(await api.isUserConnected(user), false);
  const first = await connect(token(user));
  const second = await connect(token(user));
  try {
    await first.subscribe(channel);
    await second.subscribe(channel);
    assert.deepEqual(await api.userStatus(user), { user_id: user, connected: true, connections: 2, scope: "node" });
    assert.equal(await api.isUserConnected(user), true);
    assert.deepEqual(await api.channelMembers(channel), {
      channel,
      members: [{ user_id: user, connections: 2 }],
      scope: "node",
    });
    const stats = await api.stats();
    assert.ok(stats.connections >= 2 && stats.users >= 1 && stats.channels >= 1, JSON.stringify(stats));
    for (const key of ["publications", "deliveries", "dropped", "slow_consumers", "queued_frames", "queued_bytes", "peak_queue_bytes"]) {
      assert.equal(typeof stats[key], "number", key);
    }
    assert.equal(stats.cluster, undefined);
    // The open routes need no key.
    const open = new sdk.TidingsServerApi(server.http, { apiKey: "" });
    const status = await open.status();
    assert.equal(status.status, "ok");
    assert.ok(status.connections >= 2 && status.users >= 1, JSON.stringify(status));
    assert.deepEqual(await open.healthz(), { status: "ok", detail: "", text: "ok", ok: true });
    const document = await open.openapi();
    assert.ok(Object.keys(document.paths).includes("/api/publish"));
  } finally {
    await first.close();
    await second.close();
  }
  await eventually("the user is gone", async () => !(await api.isUserConnected(user)));
  assert.deepEqual((await api.channelMembers(channel)).members, []);
});

test("disconnectUser closes every connection of the user with 4006", async () => {
  const user = unique("kicked");
  const bystander = await connect(token(unique("bystander")));
  const sockets = [await connect(token(user)), await connect(token(user))];
  try {
    assert.deepEqual(await api.disconnectUser(user), { disconnected: 2, scope: "node" });
    for (const socket of sockets) assert.equal((await socket.closed).code, 4006);
    await eventually("the user is gone", async () => !(await api.isUserConnected(user)));
    assert.equal(bystander.ws.readyState, WebSocket.OPEN);
    assert.deepEqual(await api.disconnectUser(user), { disconnected: 0, scope: "node" });
  } finally {
    await bystander.close();
  }
});

test("refusals are typed TidingsApiErrors: 401 for a wrong or missing key, 403, 400", async () => {
  for (const apiKey of ["wrong-key", ""]) {
    const wrong = new sdk.TidingsServerApi(`${server.http}/`, { apiKey });
    const error = await rejection(wrong.publish("lobby", "chat_message", { id: "x", content: "x" }));
    assert.ok(error instanceof sdk.TidingsApiError, String(error));
    assert.ok(error instanceof Error);
    assert.equal(error.name, "TidingsApiError");
    assert.equal(error.status, 401);
    assert.equal(error.code, "unauthorized");
    assert.match(error.message, /API key/);
    assert.equal(error.method, "POST");
    assert.equal(error.url, `${server.http}/api/publish`);
    assert.deepEqual(error.body, { error: { code: "unauthorized", message: error.message } });
    assert.equal((await rejection(wrong.users())).status, 401);
  }
  const reserved = await rejection(api.publish("broadcast", "x", {}));
  assert.equal(reserved.status, 403);
  assert.equal(reserved.code, "forbidden");
  const empty = await rejection(api.publish("", "x", {}));
  assert.equal(empty.status, 400);
  assert.equal(typeof empty.code, "string");
  const sender = await rejection(api.publish("lobby", "x", {}, { sender: "" }));
  assert.equal(sender.status, 400);
});

test("no answer is a TidingsConnectionError; a proxy's page or a non-JSON success a TidingsApiError", async () => {
  const refused = await rejection(new sdk.TidingsServerApi("http://127.0.0.1:9", { apiKey: "k" }).stats());
  assert.ok(refused instanceof sdk.TidingsConnectionError, String(refused));
  assert.equal(refused.timedOut, false);
  assert.equal(refused.method, "GET");
  assert.ok(refused.cause !== undefined);

  const sockets = new Set();
  const odd = createServer((request, response) => {
    if (request.url === "/hang/api/stats") return; // never answers
    if (request.url === "/proxy/api/stats") {
      response.writeHead(502, { "content-type": "text/html" }).end("<h1>502 Bad Gateway</h1>");
      return;
    }
    response.writeHead(200, { "content-type": "text/plain" }).end("not json");
  });
  odd.on("connection", (socket) => sockets.add(socket));
  await new Promise((resolve) => odd.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${odd.address().port}`;
  try {
    const started = Date.now();
    const slow = await rejection(new sdk.TidingsServerApi(`${base}/hang`, { apiKey: "k", timeoutMs: 300 }).stats());
    assert.ok(slow instanceof sdk.TidingsConnectionError, String(slow));
    assert.equal(slow.timedOut, true);
    assert.match(slow.message, /300 ms/);
    assert.ok(Date.now() - started < 3000);

    const page = await rejection(new sdk.TidingsServerApi(`${base}/proxy`, { apiKey: "k" }).stats());
    assert.ok(page instanceof sdk.TidingsApiError);
    assert.equal(page.status, 502);
    assert.equal(page.code, "http_502");
    assert.match(page.message, /Bad Gateway/);

    const text = await rejection(new sdk.TidingsServerApi(base, { apiKey: "k" }).stats());
    assert.ok(text instanceof sdk.TidingsApiError);
    assert.equal(text.status, 200);
    assert.equal(text.code, "unexpected_response");
  } finally {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => odd.close(resolve));
  }
  assert.throws(() => new sdk.TidingsServerApi(server.ws), TypeError);
  assert.throws(() => new sdk.TidingsServerApi("127.0.0.1:8000"), TypeError);
});

// ---------------------------------------------------------------- webhooks and tokens

test("a webhook the binary sends verifies, and parses into its typed event", async () => {
  const channel = unique("hooked");
  const result = await api.publish(channel, "chat_message", { id: "w1", content: "to the webhook" }, { sender: "alice" });
  const hook = await hooks.waitFor((b) => b.type === "message.published" && b.data.channel === channel);
  const header = hook.headers["x-tidings-signature"];
  assert.match(header, /^t=\d+,v1=[0-9a-f]{64}$/);

  const timestamp = sdk.verifyWebhookSignature(WEBHOOK_SECRET, header, hook.body);
  assert.ok(Math.abs(timestamp - Date.now() / 1000) < 60, String(timestamp));
  // The body as a string verifies too; while rotating, either secret does.
  assert.equal(sdk.verifyWebhookSignature(WEBHOOK_SECRET, header, hook.body.toString("utf8")), timestamp);
  assert.equal(sdk.verifyWebhookSignature(["whsec_old", WEBHOOK_SECRET], header, hook.body), timestamp);

  const event = sdk.constructWebhookEvent(WEBHOOK_SECRET, header, hook.body);
  assert.equal(event.type, "message.published");
  assert.equal(hook.headers["x-tidings-event"], event.type);
  assert.equal(hook.headers["x-tidings-event-id"], event.id);
  assert.match(event.id, /^evt_[0-9a-f]{32}$/);
  assert.ok(Math.abs(event.created_at - Date.now()) < 60_000);
  assert.deepEqual(event.data, {
    channel,
    offset: result.offset,
    epoch: result.epoch,
    ts: event.data.ts,
    sender: "alice",
    event: { type: "chat_message", data: { id: "w1", content: "to the webhook" } },
  });

  const failure = (run) => {
    try {
      run();
    } catch (error) {
      assert.ok(error instanceof sdk.WebhookSignatureError, String(error));
      return error.reason;
    }
    assert.fail("verified");
  };
  const tampered = Buffer.from(hook.body.toString("utf8").replace("to the webhook", "to the attacker"));
  assert.equal(failure(() => sdk.verifyWebhookSignature(WEBHOOK_SECRET, header, tampered)), "mismatch");
  assert.equal(failure(() => sdk.verifyWebhookSignature("whsec_someone_else", header, hook.body)), "mismatch");
  // Parsed and encoded again is not the raw body.
  const reencoded = JSON.stringify(JSON.parse(hook.body.toString("utf8")), null, 1);
  assert.equal(failure(() => sdk.verifyWebhookSignature(WEBHOOK_SECRET, header, reencoded)), "mismatch");
  const later = new Date((timestamp + 3600) * 1000);
  assert.equal(failure(() => sdk.verifyWebhookSignature(WEBHOOK_SECRET, header, hook.body, { now: later })), "timestamp");
  assert.equal(sdk.verifyWebhookSignature(WEBHOOK_SECRET, header, hook.body, { now: later, toleranceSeconds: null }), timestamp);
  assert.equal(failure(() => sdk.verifyWebhookSignature(WEBHOOK_SECRET, undefined, hook.body)), "format");
  assert.equal(failure(() => sdk.verifyWebhookSignature(WEBHOOK_SECRET, "v1=abc", hook.body)), "format");
  assert.equal(failure(() => sdk.verifyWebhookSignature(WEBHOOK_SECRET, `t=${timestamp}`, hook.body)), "format");
  // What the SDK signs is what the server signs.
  assert.equal(sdk.signWebhook(WEBHOOK_SECRET, hook.body, { timestamp }), header);
});

test("connection webhooks of a minted token's user verify", async () => {
  const user = unique("hooked-user");
  const channel = unique("hooked-room");
  const socket = await connect(token(user));
  await socket.subscribe(channel);
  await socket.close();
  for (const [kind, fields] of [
    ["user.connected", { user_id: user, session_id: socket.connected.session_id }],
    ["channel.joined", { user_id: user, channel }],
    ["channel.left", { user_id: user, channel }],
    ["user.disconnected", { user_id: user, session_id: socket.connected.session_id }],
  ]) {
    const hook = await hooks.waitFor((b) => b.type === kind && b.data.user_id === user && (b.data.channel ?? channel) === channel);
    const event = sdk.constructWebhookEvent(WEBHOOK_SECRET, hook.headers["x-tidings-signature"], hook.body);
    assert.equal(event.type, kind);
    assert.deepEqual(event.data, fields);
  }
});

test("tokens minted with node:crypto are accepted by the binary, and refused when they should be", async () => {
  // A string id, and a numeric one (its decimal text in `sub`).
  const alice = unique("minted");
  const socket = await connect(token(alice, { expiresIn: 60, claims: { role: "agent" } }));
  assert.equal(socket.connected.user_id, alice);
  await socket.close();
  const numeric = await connect(sdk.mintToken(server.jwtSecret, 4242));
  assert.equal(numeric.connected.user_id, "4242");
  await numeric.close();

  // `channels` restricts what the user may subscribe to.
  const limited = await connect(token(unique("limited"), { channels: ["ticket:*", "lobby"] }));
  try {
    assert.equal((await limited.request("subscribe", { channel: "ticket:9" })).type, "reply");
    assert.equal((await limited.request("subscribe", { channel: "lobby" })).type, "reply");
    const refused = await limited.request("subscribe", { channel: "admin" });
    assert.equal(refused.type, "error");
    assert.equal(refused.data.code, 4003);
  } finally {
    await limited.close();
  }

  // Expired, wrongly signed, not yet valid: closed with 4001.
  for (const bad of [
    token(unique("expired"), { expiresIn: -10 }),
    sdk.mintToken("not-the-secret", unique("forged")),
    token(unique("early"), { claims: { nbf: Math.floor(Date.now() / 1000) + 3600 } }),
  ]) {
    const error = await rejection(connect(bad));
    assert.equal(error.code, 4001, String(error));
  }

  // The token's shape: HS256, sub as text, exp = iat + expiresIn.
  const now = new Date("2030-01-01T00:00:00Z");
  const minted = sdk.mintToken("s", 7, { expiresIn: 90, channels: ["a"], audience: "app", issuer: "auth", now });
  const [head, body] = minted.split(".").slice(0, 2).map((part) => JSON.parse(Buffer.from(part, "base64url").toString("utf8")));
  assert.deepEqual(head, { alg: "HS256", typ: "JWT" });
  const iat = now.getTime() / 1000;
  assert.deepEqual(body, { sub: "7", exp: iat + 90, iat, channels: ["a"], aud: "app", iss: "auth" });
  const custom = sdk.mintToken("s", 7, { userIdClaim: "user_id", now });
  assert.equal(JSON.parse(Buffer.from(custom.split(".")[1], "base64url").toString("utf8")).user_id, 7);
  assert.throws(() => sdk.mintToken("s", ""), RangeError);
  assert.throws(() => sdk.mintToken("s", "u", { claims: { exp: 1 } }), RangeError);
  assert.throws(() => sdk.mintToken("s", "u", { claims: { sub: "other" } }), RangeError);
  assert.throws(() => sdk.mintToken("s", "u", { channels: "lobby" }), TypeError);
});

test("the package's own Node client connects with a minted token and receives what the API publishes", async () => {
  const user = unique("node-client");
  const channel = unique("node-room");
  const { default: ws } = await import("ws");
  const node = new client.TidingsClient(server.ws, { token: token(user), WebSocket: ws, requestTimeoutMs: 5000 });
  const states = [];
  node.on("state", (state, change) => states.push([state, change.type === "closed" ? change.code : undefined]));
  try {
    await node.ready();
    const room = await node.subscribe(channel);
    const received = new Promise((resolve) => room.once("chat_message", (m, meta) => resolve([m, meta])));
    const result = await api.publish(channel, "chat_message", { id: "n1", content: "hi node" }, { sender: "bot" });
    const [message, meta] = await received;
    assert.deepEqual(message, { id: "n1", content: "hi node" });
    assert.equal(meta.sender, "bot");
    assert.equal(meta.offset, result.offset);
    assert.deepEqual((await api.channelMembers(channel)).members, [{ user_id: user, connections: 1 }]);
    // Disconnected by the back end: the client stops (closed, 4006) and does not come back.
    await api.disconnectUser(user);
    await eventually("closed with 4006", () => node.state === "closed");
    assert.deepEqual(states.at(-1), ["closed", 4006]);
  } finally {
    node.close();
  }
});
