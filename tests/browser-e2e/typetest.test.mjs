// The packed @tidings/client in a fresh TypeScript project (typetest/): npm installs the
// tarball, `tsc --strict --noEmit` accepts the program and every `@ts-expect-error` line
// (so each of those lines is an error), without the directives exactly those lines fail,
// and the compiled program runs in Node 20 with `ws` against a real `tidings serve --dev`
// whose `rpc` calls go to a back end in this process (lib.mjs, startRpcBackend);
// another program (typetest/restart.mjs) lives through its server being SIGKILLed and
// started again on the same port.
//
// Needs: target/npm/tidings-client-*.tgz (scripts/build-npm), target/release/tidings.
import { spawn } from "node:child_process";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { publish, root, run, startRpcBackend, startTidings, tempDir } from "./lib.mjs";

const tarball = join(
  root,
  "target",
  "npm",
  readdirSync(join(root, "target", "npm")).find((f) => /^tidings-client-.*\.tgz$/.test(f)),
);
let project;
let server;
let backend;

before(async () => {
  project = tempDir("tidings-typetest-project-");
  for (const file of ["package.json", "tsconfig.json", "main.ts", "restart.mjs"]) {
    cpSync(join(root, "tests", "browser-e2e", "typetest", file), join(project, file));
  }
  const manifest = join(project, "package.json");
  writeFileSync(manifest, readFileSync(manifest, "utf8").replace("file:TARBALL", `file:${tarball}`));
  // The same pinned versions as tests/browser-e2e's lock file: the npm cache has them.
  await run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"], { cwd: project });
  backend = await startRpcBackend();
  server = await startTidings(undefined, { rpc: backend.url });
});

after(async () => {
  await server?.stop();
  await backend?.stop();
  if (project) rmSync(project, { recursive: true, force: true });
});

const tsc = () => join(project, "node_modules", ".bin", "tsc");

test("the package installed from the tarball ships only what it should", () => {
  const installed = join(project, "node_modules", "@tidings", "client");
  const manifest = JSON.parse(readFileSync(join(installed, "package.json"), "utf8"));
  assert.equal(manifest.name, "@tidings/client");
  assert.deepEqual(Object.keys(manifest.exports["."]), ["types", "node", "default"]);
  assert.deepEqual(readdirSync(join(installed, "dist", "wasm")).sort(), [
    "tidings_client.d.ts",
    "tidings_client.js",
    "tidings_client_bg.wasm",
  ]);
});

test("tsc --strict --noEmit accepts the program, and every @ts-expect-error is an error", async () => {
  await run(tsc(), ["--strict", "--noEmit", "-p", project]);
});

test("without the directives, exactly the marked lines fail to type-check", async () => {
  const source = readFileSync(join(project, "main.ts"), "utf8").split("\n");
  const expected = [];
  const stripped = source.map((line, index) => {
    if (/^\s*\/\/ @ts-expect-error/.test(line)) {
      expected.push(index + 2); // the line after the directive, 1-based
      return "";
    }
    return line;
  });
  assert.ok(expected.length >= 8, `only ${expected.length} @ts-expect-error lines`);
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

test("the compiled program runs in Node 20 with ws against a real server", async () => {
  await run(tsc(), ["-p", project]);
  const output = await run(process.execPath, [join(project, "out", "main.js")], {
    cwd: project,
    env: {
      ...process.env,
      TIDINGS_URL: server.ws,
      TIDINGS_TOKEN: server.token,
      TIDINGS_API: server.http,
      TIDINGS_API_KEY: server.apiKey,
    },
  });
  assert.match(output, /notification on user:dev \(success\): Report ready/);
  assert.match(output, /rpc: Keep going, dev! \(tired\)/);
  assert.match(output, /typetest ok/);
  // Each call reached the back end once (the invalid method name never left the server).
  assert.deepEqual(backend.calls, ["motivation_requested", "retired_method", "refuse", "anything"]);
});

/** A running Node program whose stdout lines are JSON objects, collected as they come. */
function startProgram(file, env) {
  const child = spawn(process.execPath, [file], { cwd: project, env: { ...process.env, ...env } });
  const lines = [];
  let pending = "";
  let errors = "";
  child.stdout.on("data", (chunk) => {
    pending += chunk;
    const complete = pending.split("\n");
    pending = complete.pop();
    for (const line of complete) if (line.trim()) lines.push(JSON.parse(line));
  });
  child.stderr.on("data", (chunk) => (errors += chunk));
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  /** Resolves with the lines once `check(lines)` holds; fails if the program exits first. */
  const until = async (what, check) => {
    for (let i = 0; i < 1000; i++) {
      if (check(lines)) return lines;
      assert.equal(child.exitCode, null, `the program exited while waiting for ${what}:\n${errors}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.fail(`timed out waiting for ${what}: ${JSON.stringify(lines)}\n${errors}`);
  };
  return { child, lines, until, exited, errors: () => errors };
}

test("a Node program lives through a server restart: reconnects, recovers, nothing twice", async () => {
  let node = await startTidings();
  const channel = "restart:room";
  const program = startProgram("restart.mjs", {
    TIDINGS_URL: node.ws,
    TIDINGS_TOKEN: node.token,
    TIDINGS_CHANNEL: channel,
  });
  const chat = (n) => ({ type: "chat_message", data: { id: `m${n}`, content: `message ${n}` } });
  const messages = (lines) => lines.filter((l) => l.message !== undefined);
  try {
    await program.until("ready", (lines) => lines.some((l) => l.ready));
    for (const n of [1, 2, 3]) await publish(node.http, node.apiKey, channel, chat(n));
    await program.until("the first three messages", (lines) => messages(lines).length === 3);

    await node.kill();
    // The drop, then at least one reconnect refused (ECONNREFUSED): `ws` reports it as an
    // `error` event, which ends a program that has no listener for it.
    const dropped = program.lines.length;
    await program.until("a refused reconnect", (lines) =>
      lines.slice(dropped).filter((l) => l.change === "disconnected").length >= 2,
    );

    node = await startTidings(node);
    // Published while the program may still be away: recovered on resubscribe, or live.
    for (const n of [4, 5, 6]) await publish(node.http, node.apiKey, channel, chat(n));
    const lines = await program.until(
      "six messages and the recovered subscription",
      (all) => messages(all).length >= 6 && all.some((l) => l.subscribed?.recovered === true),
    );
    assert.equal(program.child.exitCode, null, "the program keeps running");
    assert.deepEqual(
      messages(lines).map((l) => [l.message, l.offset]),
      [1, 2, 3, 4, 5, 6].map((n) => [`m${n}`, n]),
      "every message once, in order",
    );
    const restored = lines.find((l) => l.subscribed !== undefined);
    assert.equal(restored.subscribed.channel, channel);
    assert.equal(restored.subscribed.recovered, true);
    assert.ok(lines.filter((l) => l.state === "connected").length >= 1, JSON.stringify(lines));

    program.child.stdin.end();
    const { code } = await program.exited;
    assert.equal(code, 0, program.errors());
    assert.deepEqual(program.lines.at(-1), { closed: "closed" });
  } finally {
    program.child.kill("SIGKILL");
    await node.stop();
  }
});
