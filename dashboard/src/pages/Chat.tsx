import { useEffect, useRef, useState, type FormEvent } from "react";
import { ApiError, type ChatMessage } from "../api";
import { StatusBadge } from "../components/StatusBadge";
import { ErrorBox, Loading } from "../components/States";
import { useApp } from "../context";
import { href } from "../route";

export function ChatPage({ uuid }: { uuid: string }) {
  const { api, servers } = useApp();
  const [messages, setMessages] = useState<ChatMessage[]>([]);
  const [draft, setDraft] = useState("");
  const [maxTokens, setMaxTokens] = useState(64);
  const [error, setError] = useState<string | null>(null);
  const [streaming, setStreaming] = useState(false);
  const abort = useRef<AbortController | null>(null);

  useEffect(() => () => abort.current?.abort(), []);

  if (servers === null) return <Loading what="the server" />;
  const server = servers.get(uuid);
  if (!server) return <ErrorBox title="No such server" message={`There is no server ${uuid}.`} />;

  const send = async (event: FormEvent) => {
    event.preventDefault();
    const text = draft.trim();
    if (!text || streaming) return;
    const history: ChatMessage[] = [...messages, { role: "user", content: text }];
    setMessages([...history, { role: "assistant", content: "" }]);
    setDraft("");
    setError(null);
    setStreaming(true);
    const controller = new AbortController();
    abort.current = controller;
    try {
      await api.chat(
        uuid,
        server.model_name,
        history,
        (piece) =>
          setMessages((current) => {
            const next = [...current];
            const last = next[next.length - 1];
            next[next.length - 1] = { ...last, content: last.content + piece };
            return next;
          }),
        controller.signal,
        maxTokens,
      );
    } catch (e) {
      setError(e instanceof ApiError ? `${e.status || ""} ${e.message}`.trim() : String(e));
    } finally {
      setStreaming(false);
    }
  };

  return (
    <section aria-labelledby="chat-title" className="chat">
      <p className="crumbs">
        <a href={href({ page: "servers" })}>Servers</a> /{" "}
        <a className="mono" href={href({ page: "server", uuid })}>
          {uuid}
        </a>{" "}
        / chat
      </p>
      <div className="page-head">
        <h2 id="chat-title">
          Chat with {server.model_name} <StatusBadge status={server.status} progress={server.progress} />
        </h2>
        <div className="page-actions">
          <label className="inline">
            Max tokens
            <input type="number" min={1} max={2048} value={maxTokens} onChange={(e) => setMaxTokens(Number(e.target.value))} />
          </label>
          <button type="button" className="button" onClick={() => setMessages([])} disabled={streaming || !messages.length}>
            Clear
          </button>
        </div>
      </div>
      {server.status !== "ready" && server.status !== "idle" && (
        <p className="notice" role="status">
          This server is {server.status}
          {server.status_message ? `: ${server.status_message}` : ""}. Messages are answered once it is ready.
        </p>
      )}
      {server.status === "idle" && <p className="notice">The server is idle; the first message wakes it (a few seconds).</p>}
      <div className="messages card" aria-live="polite" aria-label="Conversation">
        {messages.length === 0 && <p className="muted">Say something: the answer streams in token by token.</p>}
        {messages.map((m, i) => (
          <div key={i} className={`message message-${m.role}`} data-role={m.role}>
            <span className="message-role">{m.role === "user" ? "You" : server.model_name}</span>
            <p>{m.content || (streaming && i === messages.length - 1 ? "…" : "")}</p>
          </div>
        ))}
      </div>
      {error && (
        <p className="form-error" role="alert">
          {error}
        </p>
      )}
      <form className="chat-input" onSubmit={send} aria-label="Message">
        <input
          value={draft}
          onChange={(e) => setDraft(e.target.value)}
          placeholder="Message"
          aria-label="Message text"
          disabled={server.status === "failed" || server.status === "deleted"}
        />
        {streaming ? (
          <button type="button" className="button" onClick={() => abort.current?.abort()}>
            Stop
          </button>
        ) : (
          <button type="submit" className="button button-primary" disabled={!draft.trim()}>
            Send
          </button>
        )}
      </form>
    </section>
  );
}
