/// <reference types="vitest/config" />
// Built into dist/, which the API serves at "/". Everything is bundled: no CDN,
// no external fonts or scripts at run time.
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

export default defineConfig({
  plugins: [react()],
  base: "./",
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false },
  server: {
    // `npm run dev` against a running `modelserve up` on :8080.
    proxy: { "^/(serve|servers|models|events|auth|healthz)": "http://127.0.0.1:8080" },
  },
  test: {
    environment: "jsdom",
    globals: true,
    setupFiles: ["./test/setup.ts"],
    include: ["test/**/*.test.{ts,tsx}"],
  },
});
