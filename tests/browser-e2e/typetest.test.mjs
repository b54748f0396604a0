// The packed @tidings/client in a fresh TypeScript project (typetest/): npm installs the
// tarball, `tsc --strict --noEmit` accepts the program and every `@ts-expect-error` line
// (so each of those lines is an error), without the directives exactly those lines fail,
// and the compiled program runs in Node 20 with `ws` against a real `tidings serve --dev`.
//
// Needs: target/npm/tidings-client-*.tgz (scripts/build-npm), target/release/tidings.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { root, run, startTidings, tempDir } from "./lib.mjs";

const tarball = join(
  root,
  "target",
  "npm",
  readdirSync(join(root, "target", "npm")).find((f) => /^tidings-client-.*\.tgz$/.test(f)),
);
let project;
let server;

before(async () => {
  project = tempDir("tidings-typetest-project-");
  for (const file of ["package.json", "tsconfig.json", "main.ts"]) {
    cpSync(join(root, "tests", "browser-e2e", "typetest", file), join(project, file));
  }
  const manifest = join(project, "package.json");
  writeFileSync(manifest, readFileSync(manifest, "utf8").replace("file:TARBALL", `file:${tarball}`));
  // The same pinned versions as tests/browser-e2e's lock file: the npm cache has them.
  await run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"], { cwd: project });
  server = await startTidings();
});

after(async () => {
  await server?.stop();
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
  assert.match(output, /typetest ok/);
});
