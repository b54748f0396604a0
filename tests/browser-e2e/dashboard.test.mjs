// The browser dashboard (examples/browser-dashboard) in headless Chromium, against its real
// server: chat, typing, presence, isolation between tickets, server-pushed jobs, a server
// restart, and a page taken offline while messages are published for it.
//
// Needs: examples/browser-dashboard/web/dist (examples/browser-dashboard/build.sh) and
// target/release/browser-dashboard. Screenshots go to target/e2e/*.png.
import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { artifacts, launchChromium, publish, startDashboard, tempDir } from "./lib.mjs";

let dataDir;
let server;
let browser;
const pages = new Set();

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  dataDir = tempDir("tidings-dashboard-");
  server = await startDashboard(dataDir);
  browser = await launchChromium();
});

// A failed test leaves its pages open: close them, so the next test starts alone.
afterEach(async () => {
  for (const handle of pages) await handle.context.close().catch(() => {});
  pages.clear();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

/** Problems a page reported that no test expects (a WebSocket failing while the server is
 * down or the page offline is expected). */
function watch(page, name) {
  const problems = [];
  page.on("pageerror", (error) => problems.push(`${name}: ${error.message}`));
  page.on("console", (message) => {
    const text = message.text();
    if (message.type() === "error" && !/WebSocket|ERR_INTERNET_DISCONNECTED|ERR_CONNECTION_REFUSED|Failed to load resource/.test(text)) {
      problems.push(`${name}: console: ${text}`);
    }
  });
  return problems;
}

/** A user's page on a ticket, in its own browser context (its own network switch), once
 * connected and in the room. */
async function open(user, ticket) {
  const context = await browser.newContext({ viewport: { width: 1180, height: 760 } });
  const page = await context.newPage();
  const problems = watch(page, user);
  await page.goto(`${server.url}/?user=${user}&ticket=${ticket}`);
  await connected(page);
  await page.waitForFunction((room) => window.tidings.room === room, `ticket:${ticket}`);
  const handle = { user, ticket, context, page, problems };
  pages.add(handle);
  return handle;
}

async function close(handle) {
  pages.delete(handle);
  assert.deepEqual(handle.problems, [], `${handle.user}'s page reported problems`);
  await handle.context.close();
}

const connected = (page, timeout = 15_000) =>
  page.waitForSelector('#badge[data-state="connected"]', { timeout });

const members = (page) => page.$$eval("#members li", (items) => items.map((li) => li.dataset.user));

const messages = (page) =>
  page.$$eval("#messages li.msg", (items) =>
    items.map((li) => ({ offset: Number(li.dataset.offset), sender: li.dataset.sender, text: li.querySelector(".text")?.textContent })),
  );

async function waitForMembers(page, expected) {
  await page.waitForFunction(
    (wanted) => JSON.stringify([...document.querySelectorAll("#members li")].map((li) => li.dataset.user)) === JSON.stringify(wanted),
    expected,
    { timeout: 10_000 },
  );
}

async function waitForMessage(page, text) {
  await page.waitForFunction(
    (wanted) => [...document.querySelectorAll("#messages li.msg .text")].some((e) => e.textContent === wanted),
    text,
    { timeout: 10_000 },
  );
}

async function say(handle, text) {
  await handle.page.fill("#message-input", text);
  await handle.page.press("#message-input", "Enter");
}

test("two users chat in one ticket, with typing and presence; another ticket sees none of it", async () => {
  const alice = await open("alice", "42");
  const carol = await open("carol", "43");
  const bob = await open("bob", "42");

  await waitForMembers(alice.page, ["alice", "bob"]);
  await waitForMembers(bob.page, ["alice", "bob"]);
  await waitForMembers(carol.page, ["carol"]);

  // Bob types: Alice sees it, Carol (another ticket) does not.
  await bob.page.locator("#message-input").pressSequentially("Hi Alice, the printer", { delay: 10 });
  await alice.page.waitForFunction(() => document.querySelector("#typing")?.textContent === "bob is typing…", null, { timeout: 5000 });
  await bob.page.press("#message-input", "Enter");
  await waitForMessage(alice.page, "Hi Alice, the printer");
  // His message clears his typing indicator.
  await alice.page.waitForFunction(() => document.querySelector("#typing")?.textContent === "", null, { timeout: 5000 });

  await say(alice, "On my way to ticket 42");
  await waitForMessage(bob.page, "On my way to ticket 42");
  await waitForMessage(alice.page, "On my way to ticket 42");
  const seenByBob = await messages(bob.page);
  assert.deepEqual(
    seenByBob.map((m) => [m.sender, m.text]),
    [["bob", "Hi Alice, the printer"], ["alice", "On my way to ticket 42"]],
  );
  await alice.page.screenshot({ path: join(artifacts, "chat-alice.png") });

  // Carol, in ticket 43, saw no message, no typing, nobody else.
  await say(carol, "Anyone in 43?");
  await waitForMessage(carol.page, "Anyone in 43?");
  assert.deepEqual((await messages(carol.page)).map((m) => m.text), ["Anyone in 43?"]);
  assert.equal(await carol.page.textContent("#typing"), "");
  assert.deepEqual(await members(carol.page), ["carol"]);
  assert.ok(!(await messages(alice.page)).some((m) => m.text === "Anyone in 43?"));

  // Bob leaves: Alice sees one member.
  await close(bob);
  await waitForMembers(alice.page, ["alice"]);
  await close(carol);
  await close(alice);
});

test("a server-side job drives the progress bars to 100 % and ends with a success toast", async () => {
  const alice = await open("alice", "42");
  await alice.page.click("#start-job");
  const job = alice.page.locator(".job").first();
  await job.locator('.bar[data-kind="upload"][data-progress="100"]').waitFor({ timeout: 15_000 });
  await job.locator('.bar[data-kind="analysis"][data-progress="100"]').waitFor({ timeout: 15_000 });
  const toast = alice.page.locator(".toast-success", { hasText: "Analysis complete" });
  await toast.waitFor({ timeout: 10_000 });
  assert.equal(await job.getAttribute("data-outcome"), "completed");
  assert.match(await job.locator(".pct").first().textContent(), /100 %/);

  // A failing job ends with an error toast, its analysis bar stopped.
  await alice.page.click("#start-failing-job");
  await alice.page.locator(".toast-error", { hasText: "Analysis failed" }).waitFor({ timeout: 15_000 });
  await alice.page.locator('.job[data-outcome="failed"]').waitFor();
  await alice.page.screenshot({ path: join(artifacts, "jobs.png") });
  await close(alice);
});

test("a server restart: the badge shows reconnecting, then connected, and the chat goes on", async () => {
  const alice = await open("alice", "42");
  const dave = await open("dave", "42");
  await say(dave, "Before the restart");
  await waitForMessage(alice.page, "Before the restart");
  const seen = await alice.page.evaluate(() => window.tidings.badge.length);

  await server.stop();
  await alice.page.waitForFunction((n) => window.tidings.badge.slice(n).includes("reconnecting"), seen, { timeout: 10_000 });
  await alice.page.screenshot({ path: join(artifacts, "reconnecting.png") });
  server = await startDashboard(dataDir, server.port);

  await connected(alice.page, 30_000);
  await connected(dave.page, 30_000);
  const badges = await alice.page.evaluate((n) => window.tidings.badge.slice(n), seen);
  assert.deepEqual(badges.slice(-1), ["connected"], badges.join(" → "));
  assert.ok(badges.indexOf("reconnecting") < badges.lastIndexOf("connected"), badges.join(" → "));

  await say(alice, "After the restart");
  await waitForMessage(dave.page, "After the restart");
  await waitForMembers(dave.page, ["alice", "dave"]);

  // History survived the restart (SQLite in the data directory): a new page loads it.
  const erin = await open("erin", "42");
  await waitForMessage(erin.page, "Before the restart");
  await waitForMessage(erin.page, "After the restart");
  await close(erin);
  await close(dave);
  await close(alice);
});

test("offline: messages published meanwhile all show once, in order, after reconnecting", async () => {
  const alice = await open("alice", "42");
  const before = (await messages(alice.page)).length;
  const seen = await alice.page.evaluate(() => window.tidings.badge.length);

  await alice.context.setOffline(true);
  await alice.page.waitForSelector('#badge[data-state="offline"]', { timeout: 5000 });
  const offsets = [];
  for (let i = 1; i <= 5; i++) {
    const reply = await publish(server.url, server.apiKey, "ticket:42", {
      type: "chat_message",
      data: { id: `missed-${i}`, content: `missed ${i}` },
    });
    offsets.push(reply.offset);
  }
  await alice.page.screenshot({ path: join(artifacts, "offline.png") });
  await alice.context.setOffline(false);

  await connected(alice.page);
  await waitForMessage(alice.page, "missed 5");
  const shown = await messages(alice.page);
  assert.equal(shown.length, before + 5);
  assert.deepEqual(
    shown.slice(-5).map((m) => m.text),
    ["missed 1", "missed 2", "missed 3", "missed 4", "missed 5"],
  );
  // The client delivered each missed publication exactly once, in offset order.
  const received = await alice.page.evaluate(() => window.tidings.received["ticket:42"]);
  const missed = received.filter((offset) => offsets.includes(offset));
  assert.deepEqual(missed, offsets, `received ${received.join(", ")}`);
  const badges = await alice.page.evaluate((n) => window.tidings.badge.slice(n), seen);
  assert.deepEqual(badges, ["offline", "reconnecting", "connected"], badges.join(" → "));
  await alice.page.screenshot({ path: join(artifacts, "back-online.png") });
  await close(alice);
});
