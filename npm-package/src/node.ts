// The Node entry (the "node" condition of the package's exports): the same API as the
// browser entry, with the WebAssembly module read from disk and instantiated synchronously
// on import, so `new TidingsClient(...)` starts at once. Node 20 has no global WebSocket:
// pass `{ WebSocket }` from the `ws` package in the options (or set `globalThis.WebSocket`).
import { readFileSync } from "node:fs";
import { initSync } from "./wasm/tidings_client.js";
import { wasmState } from "./state.js";

if (!wasmState.ready) {
  initSync({ module: readFileSync(new URL("./wasm/tidings_client_bg.wasm", import.meta.url)) });
  wasmState.ready = true;
}

export * from "./index.js";
