// A Node 20 program using @tidings/client with `ws`, set up as the README says, that must
// live through its server being killed and started again (typetest.test.mjs drives it).
//
// It subscribes to one channel and reports on stdout, one JSON object per line: `ready`,
// every connection change, every (re)subscription and every chat message with its offset.
// It runs until stdin ends, then closes the client and exits 0. Without an `error` listener
// on the WebSocket, the first reconnect that meets ECONNREFUSED would end it with
// "Unhandled 'error' event".
import WebSocket from "ws";
import { TidingsClient } from "@tidings/client";

const url = process.env.TIDINGS_URL;
const token = process.env.TIDINGS_TOKEN;
const channel = process.env.TIDINGS_CHANNEL;
const say = (line) => console.log(JSON.stringify(line));

const client = new TidingsClient(url, { token, WebSocket, backoff: { minMs: 50, maxMs: 400 } });
client.on("state", (state, change) => say({ state, change: change.type }));
const room = await client.subscribe(channel);
room.on("subscribed", (info) => say({ subscribed: info }));
room.on("chat_message", (message, meta) => say({ message: message.id, offset: meta.offset }));
say({ ready: true });

process.stdin.resume();
process.stdin.on("end", () => {
  client.close();
  say({ closed: client.state });
  process.exit(0);
});
