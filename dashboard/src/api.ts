// The modelserve API as the dashboard uses it: plain fetch with a bearer token.
// Shapes mirror functions/api/schemas.py.
import { parseSse, type SseEvent } from "./sse";

export interface Server {
  server_uuid: string;
  model_uuid: string | null;
  model_name: string;
  owner: string | null;
  status: string;
  status_message: string | null;
  violations: string[];
  progress: number | null;
  replicas: number;
  runtime_params: Record<string, unknown>;
  memory_current_mb: number | null;
  memory_max_mb: number | null;
  cpu_usage_percent: number | null;
  created_at: string;
  started_at: string | null;
  updated_at: string;
  namespace: string | null;
  inference_service: string | null;
  gateway_url: string | null;
}

export interface Model {
  model_uuid: string;
  model_name: string;
  object_path: string;
  sha256: string;
  size_bytes: number;
  architecture: string | null;
  file_type: string | null;
  parameter_count: number | null;
  context_length: number | null;
  source: string | null;
  created_at: string;
}

export interface CatalogModel {
  name: string;
  size_bytes: number | null;
  file_type: string | null;
  mirrored: boolean;
}

export interface Models {
  mirrored: Model[];
  catalog: CatalogModel[];
}

export interface ServeRequest {
  model: string;
  replicas: number;
  max_replicas?: number;
  cpu?: string;
  memory?: string;
  runtime_params: Record<string, number | string | boolean>;
}

export interface ServeAccepted {
  server_uuid: string;
  status: string;
  status_url: string;
  gateway_url: string;
}

export interface ApiKey {
  key_id: string;
  name: string;
  owner: string;
  server_uuid: string | null;
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
  revoked_at: string | null;
}

/** The answer to creating a key: the only time its plaintext `key` is ever shown. */
export interface NewApiKey extends ApiKey {
  key: string;
}

export interface UsageRow {
  minute: string;
  server_uuid: string;
  username: string;
  key_id: string; // "" for a JWT
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
}

export interface Usage {
  rows: UsageRow[];
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
}

/** A server's charts (`GET /servers/{uuid}/series`): `t` in Unix seconds, oldest first. */
export interface ServerSeries {
  step_seconds: number;
  t: number[];
  series: Record<string, (number | null)[]>;
}

/** The end of a server's runtime output (`GET /servers/{uuid}/logs`, admins only). */
export interface ServerLogs {
  server_uuid: string;
  lines: string[];
}

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/** A refusal from the API: `status` 0 means the network failed. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

async function errorOf(response: Response): Promise<ApiError> {
  let message = response.statusText || `HTTP ${response.status}`;
  try {
    const body = (await response.json()) as { detail?: unknown; error?: { message?: string } };
    if (typeof body.detail === "string") message = body.detail;
    else if (Array.isArray(body.detail))
      message = body.detail
        .map((d: { loc?: unknown[]; msg?: string }) => `${(d.loc ?? []).slice(1).join(".")}: ${d.msg}`)
        .join("; ");
    else if (body.error?.message) message = body.error.message;
  } catch {
    // not JSON: keep the status text
  }
  return new ApiError(response.status, message);
}

export type Fetch = typeof fetch;

export class Api {
  constructor(
    readonly base: string,
    private readonly token: string | null,
    private readonly onUnauthorized: () => void = () => {},
    private readonly fetcher: Fetch = (...args) => fetch(...args),
  ) {}

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return this.token ? { Authorization: `Bearer ${this.token}`, ...extra } : extra;
  }

  async request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    let response: Response;
    try {
      response = await this.fetcher(this.base + path, {
        method,
        headers: this.headers(body === undefined ? {} : { "Content-Type": "application/json" }),
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      });
    } catch (error) {
      if ((error as Error).name === "AbortError") throw error;
      throw new ApiError(0, `cannot reach modelserve: ${(error as Error).message}`);
    }
    if (!response.ok) {
      if (response.status === 401) this.onUnauthorized();
      throw await errorOf(response);
    }
    return (await response.json()) as T;
  }

  async signIn(username: string, password: string): Promise<{ access_token: string; expires_in: number }> {
    const form = new URLSearchParams({ username, password });
    let response: Response;
    try {
      response = await this.fetcher(this.base + "/auth/token", { method: "POST", body: form });
    } catch (error) {
      throw new ApiError(0, `cannot reach modelserve: ${(error as Error).message}`);
    }
    if (!response.ok) throw await errorOf(response);
    return (await response.json()) as { access_token: string; expires_in: number };
  }

  servers(signal?: AbortSignal): Promise<Server[]> {
    return this.request("GET", "/servers", undefined, signal);
  }

  server(uuid: string, signal?: AbortSignal): Promise<Server> {
    return this.request("GET", `/servers/${uuid}`, undefined, signal);
  }

  models(signal?: AbortSignal): Promise<Models> {
    return this.request("GET", "/models", undefined, signal);
  }

  serve(body: ServeRequest): Promise<ServeAccepted> {
    return this.request("POST", "/serve", body);
  }

  remove(uuid: string): Promise<Server> {
    return this.request("DELETE", `/servers/${uuid}`);
  }

  keys(serverUuid: string, signal?: AbortSignal): Promise<ApiKey[]> {
    return this.request("GET", `/keys?server_uuid=${encodeURIComponent(serverUuid)}`, undefined, signal);
  }

  createKey(body: { name: string; server_uuid: string; expires_in_seconds?: number }): Promise<NewApiKey> {
    return this.request("POST", "/keys", body);
  }

  revokeKey(keyId: string): Promise<ApiKey> {
    return this.request("DELETE", `/keys/${encodeURIComponent(keyId)}`);
  }

  usage(serverUuid: string, since: string, signal?: AbortSignal): Promise<Usage> {
    const query = `server_uuid=${encodeURIComponent(serverUuid)}&since=${encodeURIComponent(since)}`;
    return this.request("GET", `/usage?${query}`, undefined, signal);
  }

  series(serverUuid: string, minutes: number, signal?: AbortSignal): Promise<ServerSeries> {
    return this.request("GET", `/servers/${encodeURIComponent(serverUuid)}/series?minutes=${minutes}`, undefined, signal);
  }

  logs(serverUuid: string, lines: number, signal?: AbortSignal): Promise<ServerLogs> {
    return this.request("GET", `/servers/${encodeURIComponent(serverUuid)}/logs?lines=${lines}`, undefined, signal);
  }

  /** Status changes as they happen (`GET /events`), until `signal` aborts. */
  async watch(onServer: (server: Server) => void, signal: AbortSignal): Promise<void> {
    await this.stream("/events", { method: "GET" }, signal, (event) => {
      if (event.event === "server") onServer(JSON.parse(event.data) as Server);
    });
  }

  /**
   * A streamed chat completion through the gateway; `onToken` gets each piece.
   * The gateway answers `/<server-uuid>/v1/...` on the API's own origin (one port
   * in the embedded stack, one ingress host on Kubernetes), so no CORS is needed.
   */
  async chat(
    serverUuid: string,
    model: string,
    messages: ChatMessage[],
    onToken: (text: string) => void,
    signal: AbortSignal,
    maxTokens = 128,
  ): Promise<void> {
    const init: RequestInit = {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model, messages, stream: true, max_tokens: maxTokens }),
    };
    await this.stream(`/${serverUuid}/v1/chat/completions`, init, signal, (event) => {
      if (event.data === "[DONE]") return;
      const chunk = JSON.parse(event.data) as { choices?: { delta?: { content?: string } }[] };
      const text = chunk.choices?.[0]?.delta?.content;
      if (text) onToken(text);
    });
  }

  private async stream(
    path: string,
    init: RequestInit,
    signal: AbortSignal,
    onEvent: (event: SseEvent) => void,
  ): Promise<void> {
    const url = this.base + path;
    let response: Response;
    try {
      response = await this.fetcher(url, {
        ...init,
        headers: this.headers((init.headers as Record<string, string>) ?? {}),
        signal,
      });
    } catch (error) {
      if ((error as Error).name === "AbortError") return;
      throw new ApiError(0, `cannot reach modelserve: ${(error as Error).message}`);
    }
    if (!response.ok || !response.body) {
      if (response.status === 401) this.onUnauthorized();
      throw await errorOf(response);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const { events, rest } = parseSse(buffer + value);
        buffer = rest;
        events.forEach(onEvent);
      }
    } catch (error) {
      if ((error as Error).name !== "AbortError") throw error;
    }
  }
}
