import { defineConfig } from "vite";

// `vite build` writes dist/, which the demo server (../server) serves. For `vite` (the dev
// server, port 5173), run the demo server on 8080 too: /ws and /demo are proxied to it.
export default defineConfig({
  build: { target: "es2022", outDir: "dist", emptyOutDir: true },
  // The package's glue finds its .wasm next to itself (new URL(..., import.meta.url));
  // pre-bundling would move the glue away from it.
  optimizeDeps: { exclude: ["@tidings/client"] },
  server: {
    proxy: {
      "/ws": { target: "ws://127.0.0.1:8080", ws: true },
      "/demo": "http://127.0.0.1:8080",
    },
  },
});
