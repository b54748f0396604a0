// Whether the WebAssembly module is instantiated. Shared by the browser entry (index.ts,
// which instantiates it on first use) and the Node entry (node.ts, which instantiates it
// synchronously from disk when imported). Not part of the public API.
export const wasmState = { ready: false };
