// Helpers of the end-to-end tests: servers in temporary directories, headless Chromium.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const root = resolve(fileURLToPath(new URL("../..", import.meta.url)));
export const artifacts = join(root, "target", "e2e");

/** A temporary directory, removed by `cleanup()`. */
export function tempDir(prefix) {
  return mkdtempSync(join(tmpdir(), prefix));
}

/**
 * Starts `command` and resolves once its stdout matched every regexp of `wanted` (with the
 * first group of each), or rejects when it exits or 30 s pass. stderr goes to `log`.
 */
export function startProcess(command, args, { cwd, wanted, logFile }) {
  const child = spawn(command, args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let errors = "";
  child.stderr.on("data", (chunk) => {
    errors += chunk;
    if (logFile) writeFileSync(logFile, errors);
  });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${command} printed no banner in 30 s:\n${out}\n${errors}`));
    }, 30_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${command} exited with ${code}:\n${out}\n${errors}`));
    });
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const found = wanted.map((re) => re.exec(out)?.[1]);
      if (found.every((v) => v !== undefined)) {
        clearTimeout(timer);
        child.removeAllListeners("exit");
        child.stdout.removeAllListeners("data");
        child.stdout.resume();
        resolvePromise({ child, found });
      }
    });
  });
}

/** Stops a child with SIGTERM (SIGKILL after 10 s) and waits for it. */
export function stopProcess(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolvePromise) => {
    const kill = setTimeout(() => child.kill("SIGKILL"), 10_000);
    child.once("exit", () => {
      clearTimeout(kill);
      resolvePromise();
    });
    child.kill("SIGTERM");
  });
}

/**
 * `tidings serve --dev` on a free port in a temporary directory; or, with `again` (a server
 * this returned and `kill`ed), the same server started anew on its port and directory: the
 * same data and dev secrets, so its tokens stay valid. With `rpc` (a URL, such as
 * `startRpcBackend().url`), clients' `rpc` calls go there (`[proxy] rpc`). `config` is more
 * of its TOML file (top-level keys first, then tables). The result has the dev JWT secret
 * (`jwtSecret`) for minting tokens.
 */
export async function startTidings(again, { rpc = again?.rpc, config = again?.config ?? "" } = {}) {
  const dir = again?.dir ?? tempDir("tidings-typetest-");
  const proxy = rpc === undefined ? "" : `[proxy]\nrpc = ${JSON.stringify(rpc)}\ntimeout = 5000\n`;
  writeFileSync(join(dir, "tidings.toml"), `shutdown_deadline = 1000\n${config}\n${proxy}`);
  const binary = join(root, "target", "release", "tidings");
  const { child, found } = await startProcess(
    binary,
    ["serve", "--dev", "--bind", `127.0.0.1:${again?.port ?? 0}`, "--config", join(dir, "tidings.toml")],
    {
      cwd: dir,
      wanted: [
        /dev server on (http:\/\/127\.0\.0\.1:\d+)/,
        /\/ws\?token=(\S+)/,
        /HTTP API key: (\S+)/,
        /TIDINGS_JWT_SECRET=(\S+)/,
      ],
      logFile: join(dir, `tidings-${Date.now()}.log`),
    },
  );
  const [http, token, apiKey, jwtSecret] = found;
  return {
    dir,
    rpc,
    config,
    jwtSecret,
    port: Number(new URL(http).port),
    http,
    ws: `${http.replace("http:", "ws:")}/ws`,
    token,
    apiKey,
    /** SIGKILL: no shutdown frame, no close, nothing flushed that was not committed. */
    kill() {
      if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
      return new Promise((resolvePromise) => {
        child.once("exit", () => resolvePromise());
        child.kill("SIGKILL");
      });
    },
    async stop() {
      await stopProcess(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The dashboard demo server (examples/browser-dashboard/server) with its data in `dataDir`,
 * on `port` (0: any free port). Jobs step every 60 ms.
 */
export async function startDashboard(dataDir, port = 0) {
  const binary = join(root, "target", "release", "browser-dashboard");
  const { child, found } = await startProcess(
    binary,
    ["--bind", `127.0.0.1:${port}`, "--data-dir", dataDir, "--job-step-ms", "60"],
    {
      cwd: dataDir,
      wanted: [/dashboard demo on (http:\/\/127\.0\.0\.1:\d+)/, /HTTP API key: (\S+)/],
      logFile: join(dataDir, `server-${Date.now()}.log`),
    },
  );
  const [url, apiKey] = found;
  return { url, apiKey, port: Number(new URL(url).port), child, stop: () => stopProcess(child) };
}

/**
 * An application back end for clients' `rpc` calls, on a free port: the server POSTs
 * `{user_id, method, data, claims}` to `url` (unsigned: no `proxy.secret`). Methods:
 * `motivation_requested` answers `{message}`, `refuse` refuses (4003, "members only"),
 * any other is unknown (4004). `calls` lists the methods called, in order.
 */
export async function startRpcBackend() {
  const calls = [];
  const server = createServer(async (request, response) => {
    let body = "";
    for await (const chunk of request) body += chunk;
    const { user_id: user, method, data } = JSON.parse(body);
    calls.push(method);
    let answer;
    if (method === "motivation_requested") {
      answer = { data: { message: `Keep going, ${user}! (${data?.mood})` } };
    } else if (method === "refuse") {
      answer = { error: { code: "forbidden", message: "members only" } };
    } else {
      answer = { error: { code: "not_found", message: `no method ${method}` } };
    }
    response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(answer));
  });
  await new Promise((resolvePromise) => server.listen(0, "127.0.0.1", resolvePromise));
  return {
    url: `http://127.0.0.1:${server.address().port}/rpc`,
    calls,
    stop: () => new Promise((resolvePromise) => server.close(resolvePromise)),
  };
}

/** `POST /api/publish` with the API key. */
export async function publish(base, apiKey, channel, event) {
  const response = await fetch(`${base}/api/publish`, {
    method: "POST",
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
    body: JSON.stringify({ channel, event }),
  });
  if (!response.ok) throw new Error(`publish: ${response.status} ${await response.text()}`);
  return response.json();
}

/** Headless Chromium: Debian's, never a downloaded one. */
export async function launchChromium() {
  const { chromium } = await import("playwright-core");
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
}

/** Runs a command to completion; rejects with its output when it fails. */
export function run(command, args, options = {}) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, { ...options, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (c) => (output += c));
    child.stderr.on("data", (c) => (output += c));
    child.on("error", reject);
    child.on("exit", (code) => {
      if (code === 0) resolvePromise(output);
      else {
        const error = new Error(`${command} ${args.join(" ")} exited with ${code}:\n${output}`);
        error.output = output;
        error.code = code;
        reject(error);
      }
    });
  });
}
