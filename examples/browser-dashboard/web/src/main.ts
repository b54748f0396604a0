// The dashboard: one TidingsClient for the page; the user's own channel brings job progress
// and notifications, a ticket's channel brings its chat, presence and typing.
import "./style.css";
import {
  TidingsClient,
  type AnalysisStatus,
  type ChatMessage,
  type ConnectionChange,
  type ConnectionState,
  type Notification,
  type PublicationMeta,
  type Subscription,
  type UploadProgress,
} from "@tidings/client";

/** What the end-to-end tests read (tests/browser-e2e). */
interface Probe {
  /** Every badge the page showed, in order. */
  badge: string[];
  /** Offsets of chat messages as the client delivered them, per channel. */
  received: Record<string, number[]>;
  /** The current ticket's subscription is ready (history loaded). */
  room: string | null;
}
declare global {
  interface Window {
    tidings: Probe;
  }
}
const probe: Probe = { badge: [], received: {}, room: null };
window.tidings = probe;

function $<T extends HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (element === null) {
    throw new Error(`#${id} is missing`);
  }
  return element as T;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
}

// Who and where: ?user=alice&ticket=42 (made up and kept in the URL when missing).
const params = new URLSearchParams(location.search);
const user = (params.get("user") ?? ["alice", "bob", "carol", "dave"][Math.floor(Math.random() * 4)]!).toLowerCase();
const tickets = ["42", "43", "1001"];
let ticket = params.get("ticket") ?? tickets[0]!;
function keepInUrl(): void {
  const url = new URL(location.href);
  url.searchParams.set("user", user);
  url.searchParams.set("ticket", ticket);
  history.replaceState(null, "", url);
}
keepInUrl();
$("user").textContent = user;
$("user-channel").textContent = `user:${user}`;

// ---------------------------------------------------------------- the client
const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const client = new TidingsClient(wsUrl, {
  // A fresh token before every connection attempt.
  getToken: async () => {
    const response = await fetch(`/demo/token?user=${encodeURIComponent(user)}`);
    if (!response.ok) throw new Error(`token: ${response.status}`);
    return ((await response.json()) as { token: string }).token;
  },
  backoff: { minMs: 500, maxMs: 10_000 },
});

// ---------------------------------------------------------------- connection badge
const badge = $("badge");
let countdown: number | undefined;
function showBadge(kind: string, text: string): void {
  badge.dataset.state = kind;
  badge.textContent = text;
  if (probe.badge[probe.badge.length - 1] !== kind) probe.badge.push(kind);
}
function onState(state: ConnectionState, change: ConnectionChange): void {
  window.clearInterval(countdown);
  countdown = undefined;
  switch (state) {
    case "connected":
      showBadge("connected", "connected");
      break;
    case "reconnecting": {
      if (change.type !== "reconnecting") break;
      if (change.delay_ms === undefined) {
        showBadge("offline", "offline");
        break;
      }
      const at = performance.now() + change.delay_ms;
      const tick = () => {
        const seconds = Math.max(0, Math.ceil((at - performance.now()) / 1000));
        showBadge("reconnecting", seconds > 0 ? `reconnecting in ${seconds} s` : "reconnecting…");
      };
      tick();
      countdown = window.setInterval(tick, 250);
      break;
    }
    case "connecting":
      // A reconnect attempt under way still reads "reconnecting".
      if (probe.badge.length > 0 && probe.badge[probe.badge.length - 1] !== "connecting") {
        showBadge("reconnecting", "reconnecting…");
      } else {
        showBadge("connecting", "connecting…");
      }
      break;
    case "closed":
      showBadge("closed", change.type === "closed" ? `closed (${change.code})` : "closed");
      break;
    case "idle":
      break;
  }
}
client.on("state", onState);

// ---------------------------------------------------------------- notifications
function toast(n: Notification): void {
  const level = n.level ?? "info";
  const item = el("div", `toast toast-${level}`);
  item.dataset.level = level;
  item.setAttribute("role", level === "error" ? "alert" : "status");
  if (n.title) item.append(el("strong", undefined, n.title));
  item.append(el("span", undefined, n.message));
  $("toasts").append(item);
  window.setTimeout(() => item.remove(), level === "error" ? 10_000 : 6000);
}
client.on("notification", (n) => toast(n));

// ---------------------------------------------------------------- jobs
const jobs = new Map<string, HTMLElement>();
function jobCard(id: string, file?: string): HTMLElement {
  let card = jobs.get(id);
  if (card === undefined) {
    card = el("div", "job");
    card.dataset.job = id;
    const title = el("div", "job-title");
    title.append(el("span", "job-file", file ?? id), el("span", "job-status", "queued"));
    card.append(title);
    for (const [kind, label] of [["upload", "Upload"], ["analysis", "Analysis"]] as const) {
      const row = el("div", "bar-row");
      const bar = el("div", "bar");
      bar.dataset.kind = kind;
      bar.dataset.progress = "0";
      bar.append(el("div", "fill"));
      row.append(el("span", undefined, label), bar, el("span", "pct", "0 %"));
      row.dataset.kind = kind;
      card.append(row);
    }
    $("jobs").prepend(card);
    jobs.set(id, card);
  }
  return card;
}
function setBar(card: HTMLElement, kind: "upload" | "analysis", progress: number): void {
  const row = card.querySelector<HTMLElement>(`.bar-row[data-kind="${kind}"]`);
  const bar = row?.querySelector<HTMLElement>(".bar");
  if (!row || !bar) return;
  const value = Math.max(0, Math.min(100, Math.round(progress)));
  bar.dataset.progress = String(value);
  bar.querySelector<HTMLElement>(".fill")!.style.width = `${value}%`;
  row.querySelector(".pct")!.textContent = `${value} %`;
}
function setStatus(card: HTMLElement, text: string): void {
  card.querySelector(".job-status")!.textContent = text;
}
client.on("upload_progress", (p: UploadProgress) => {
  const card = jobCard(p.id);
  setBar(card, "upload", p.progress);
  setStatus(card, p.status === "done" ? "uploaded" : "uploading");
});
client.on("analysis_status", (s: AnalysisStatus) => {
  const card = jobCard(s.id);
  setBar(card, "analysis", s.progress);
  setStatus(card, s.error ? `${s.status}: ${s.error}` : s.status);
  if (s.status === "completed" || s.status === "failed") card.dataset.outcome = s.status;
});
async function startJob(file: string, fail: boolean): Promise<void> {
  const response = await fetch("/demo/jobs", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user, file, fail }),
  });
  if (!response.ok) {
    toast({ level: "error", title: "Could not start the job", message: await response.text() });
    return;
  }
  const { id } = (await response.json()) as { id: string };
  const card = jobCard(id, file);
  card.querySelector(".job-file")!.textContent = file;
}
$("start-job").addEventListener("click", () => void startJob("report.pdf", false));
$("start-failing-job").addEventListener("click", () => void startJob("broken.pdf", true));

// ---------------------------------------------------------------- chat
interface Line {
  offset: number;
  sender: string | undefined;
  message: ChatMessage;
  ts: number;
}
const select = $<HTMLSelectElement>("ticket");
for (const t of tickets.includes(ticket) ? tickets : [...tickets, ticket]) {
  select.append(new Option(`#${t}`, t));
}
select.value = ticket;

let room: Subscription | null = null;
let generation = 0;
const lines = new Map<number, Line>();
const members = new Set<string>();
const typers = new Map<string, number>();

function renderMessages(): void {
  const list = $("messages");
  const sorted = [...lines.values()].sort((a, b) => a.offset - b.offset);
  list.replaceChildren();
  if (sorted.length === 0) {
    list.append(el("li", "empty", "No messages yet. Say hello!"));
  }
  for (const line of sorted) {
    const item = el("li", line.sender === user ? "msg mine" : "msg");
    item.dataset.offset = String(line.offset);
    item.dataset.id = line.message.id;
    item.dataset.sender = line.sender ?? "";
    const time = el("time", undefined, new Date(line.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    item.append(el("span", "sender", line.sender ?? "system"), el("span", "text", line.message.content), time);
    list.append(item);
  }
  list.scrollTop = list.scrollHeight;
}
function renderMembers(): void {
  const list = $("members");
  list.replaceChildren(
    ...[...members].sort().map((m) => {
      const item = el("li", undefined, m === user ? `${m} (you)` : m);
      item.dataset.user = m;
      return item;
    }),
  );
}
function renderTyping(): void {
  const names = [...typers.keys()].sort();
  $("typing").textContent =
    names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(" and ")} are typing…`;
}
function stopTyping(name: string): void {
  window.clearTimeout(typers.get(name));
  typers.delete(name);
  renderTyping();
}

function addLine(message: ChatMessage, meta: { offset?: number; sender?: string; ts: number }): void {
  if (meta.offset === undefined) return;
  lines.set(meta.offset, { offset: meta.offset, sender: meta.sender, message, ts: meta.ts });
}

async function refreshPresence(sub: Subscription, mine: number): Promise<void> {
  try {
    const list = await sub.presence();
    if (mine !== generation) return;
    members.clear();
    for (const m of list) members.add(m.user_id);
    renderMembers();
  } catch {
    // Not connected right now: the next `subscribed` asks again.
  }
}

async function join(next: string): Promise<void> {
  const mine = ++generation;
  probe.room = null;
  const previous = room;
  room = null;
  lines.clear();
  members.clear();
  for (const name of [...typers.keys()]) stopTyping(name);
  renderMessages();
  renderMembers();
  if (previous) await previous.unsubscribe().catch(() => {});
  const channel = `ticket:${next}`;
  const sub = await client.subscribe(channel);
  if (mine !== generation) {
    await sub.unsubscribe().catch(() => {});
    return;
  }
  room = sub;
  const received = (probe.received[channel] ??= []);
  sub.on("chat_message", (message: ChatMessage, meta: PublicationMeta) => {
    if (meta.offset !== undefined) received.push(meta.offset);
    addLine(message, meta);
    if (meta.sender) stopTyping(meta.sender);
    renderMessages();
  });
  sub.on("typing", (notice) => {
    window.clearTimeout(typers.get(notice.user_id));
    typers.set(notice.user_id, window.setTimeout(() => stopTyping(notice.user_id), 3500));
    renderTyping();
  });
  sub.on("presence", (change) => {
    if (change.type === "user_joined") members.add(change.user_id);
    else {
      members.delete(change.user_id);
      stopTyping(change.user_id);
    }
    renderMembers();
  });
  // Restored after a reconnect: who is here may have changed meanwhile.
  sub.on("subscribed", () => void refreshPresence(sub, mine));

  // History on join: the latest messages, read from the server's store over the socket.
  // Subscribed first, so nothing falls between; messages are keyed by offset, so nothing
  // shows twice.
  try {
    const page = await sub.history({ limit: 100 });
    if (mine !== generation) return;
    for (const { event, meta } of page.publications) {
      if (event.type === "chat_message") addLine(event.data as ChatMessage, meta);
    }
  } catch (error) {
    toast({ level: "warning", title: "No history", message: (error as Error).message });
  }
  renderMessages();
  await refreshPresence(sub, mine);
  probe.room = channel;
}

select.addEventListener("change", () => {
  ticket = select.value;
  keepInUrl();
  void join(ticket);
});

const input = $<HTMLInputElement>("message-input");
let lastTyping = Number.NEGATIVE_INFINITY;
input.addEventListener("input", () => {
  const now = performance.now();
  if (room && input.value.trim() !== "" && now - lastTyping > 2000) {
    lastTyping = now;
    room.typing();
  }
});
$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const content = input.value.trim();
  if (!room || content === "") return;
  input.value = "";
  lastTyping = Number.NEGATIVE_INFINITY;
  const id = typeof crypto.randomUUID === "function" ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
  room.publish({ type: "chat_message", data: { id, content } }).catch((error: Error) => {
    toast({ level: "error", title: "Not sent", message: error.message });
  });
});

void join(ticket);
