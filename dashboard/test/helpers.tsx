// A fake API server for component tests: routes by method + path, records calls.
import { render } from "@testing-library/react";
import { useState, type ReactNode } from "react";
import { Api, type Server } from "../src/api";
import { AppContext, type AppState } from "../src/context";
import type { Session } from "../src/session";

export type Handler = (init: RequestInit, url: string) => Response | Promise<Response>;

export function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

export function sse(chunks: string[], delayMs = 0): Response {
  const encoder = new TextEncoder();
  const stream = new ReadableStream<Uint8Array>({
    async start(controller) {
      for (const chunk of chunks) {
        if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
        controller.enqueue(encoder.encode(chunk));
      }
      controller.close();
    },
  });
  return new Response(stream, { headers: { "Content-Type": "text/event-stream" } });
}

export function fakeFetch(routes: Record<string, Handler>) {
  const calls: { method: string; url: string; body: unknown; headers: Record<string, string> }[] = [];
  const fetcher = async (input: RequestInfo | URL, init: RequestInit = {}) => {
    const url = String(input);
    const method = init.method ?? "GET";
    const body = typeof init.body === "string" ? safeJson(init.body) : init.body;
    calls.push({ method, url, body, headers: (init.headers as Record<string, string>) ?? {} });
    // An exact route, else one ending in "*" that the request starts with.
    const wanted = `${method} ${url}`;
    const handler =
      routes[wanted] ??
      Object.entries(routes).find(([route]) => route.endsWith("*") && wanted.startsWith(route.slice(0, -1)))?.[1];
    if (!handler) return json({ detail: `no route ${method} ${url}` }, 404);
    return handler(init, url);
  };
  return { fetcher: fetcher as typeof fetch, calls };
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

export function makeToken(claims: Record<string, unknown>): string {
  const enc = (o: unknown) => btoa(JSON.stringify(o)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
  return `${enc({ alg: "HS256", typ: "JWT" })}.${enc(claims)}.signature`;
}

export const SESSION: Session = {
  token: makeToken({ sub: "alice", role: "operator", exp: 4102444800 }),
  subject: "alice",
  role: "operator",
  expiresAt: 4102444800000,
};

export function server(overrides: Partial<Server> = {}): Server {
  return {
    server_uuid: "11111111-2222-4333-8444-555555555555",
    model_uuid: "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee",
    model_name: "demo",
    owner: "alice",
    status: "ready",
    status_message: "ready",
    violations: [],
    progress: 100,
    replicas: 1,
    runtime_params: {},
    memory_current_mb: 120.4,
    memory_max_mb: 180.9,
    cpu_usage_percent: 12,
    created_at: "2026-11-22T10:00:00Z",
    started_at: "2026-11-22T10:00:05Z",
    updated_at: "2026-11-22T10:00:06Z",
    namespace: null,
    inference_service: null,
    gateway_url: "http://127.0.0.1:8080/11111111-2222-4333-8444-555555555555",
    ...overrides,
  };
}

export function renderWith(ui: ReactNode, state: Partial<AppState> & { fetcher?: typeof fetch } = {}) {
  const { fetcher, ...rest } = state;
  const value: AppState = {
    api: new Api("", SESSION.token, () => {}, fetcher),
    session: SESSION,
    servers: new Map(),
    serversError: null,
    live: true,
    upsert: () => {},
    signOut: () => {},
    ...rest,
  };
  return render(<AppContext.Provider value={value}>{ui}</AppContext.Provider>);
}

/** Like the App: a live servers map that upsert() updates. */
export function LiveServers({ fetcher, children }: { fetcher: typeof fetch; children: ReactNode }) {
  const [servers, setServers] = useState(new Map<string, Server>());
  const value: AppState = {
    api: new Api("", SESSION.token, () => {}, fetcher),
    session: SESSION,
    servers,
    serversError: null,
    live: true,
    upsert: (s) => setServers((m) => new Map(m).set(s.server_uuid, s)),
    signOut: () => {},
  };
  return <AppContext.Provider value={value}>{children}</AppContext.Provider>;
}
