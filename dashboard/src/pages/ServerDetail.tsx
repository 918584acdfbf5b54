import { useState } from "react";
import { ApiError } from "../api";
import { CopyBlock } from "../components/CopyBlock";
import { ServerCharts } from "../components/ServerCharts";
import { ServerKeys } from "../components/ServerKeys";
import { ServerLog } from "../components/ServerLog";
import { ServerUsage } from "../components/ServerUsage";
import { StatusBadge } from "../components/StatusBadge";
import { ErrorBox, Loading } from "../components/States";
import { useApp } from "../context";
import { megabytes, percent, time } from "../format";
import { href } from "../route";
import { curlSnippet, openaiSnippet } from "../snippets";

export function ServerDetail({ uuid }: { uuid: string }) {
  const { api, servers, upsert, session } = useApp();
  const [confirming, setConfirming] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  if (servers === null) return <Loading what="the server" />;
  const server = servers.get(uuid);
  if (!server) {
    return <ErrorBox title="No such server" message={`There is no server ${uuid}. It may belong to another installation.`} />;
  }
  const gone = server.status === "deleted" || server.status === "deleting";
  const mayDelete = session.role === "admin" || (session.role === "operator" && server.owner === session.subject);

  const remove = async () => {
    setBusy(true);
    setError(null);
    try {
      upsert(await api.remove(uuid));
      setConfirming(false);
    } catch (e) {
      setError(e instanceof ApiError ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };

  const facts: [string, string][] = [
    ["Model", server.model_name],
    ["Model UUID", server.model_uuid ?? "–"],
    ["Server UUID", server.server_uuid],
    ["Owner", server.owner ?? "–"],
    ["Replicas", String(server.replicas)],
    ["Runtime parameters", Object.keys(server.runtime_params).length ? JSON.stringify(server.runtime_params) : "defaults"],
    ["Created", `${time(server.created_at)} (${server.created_at})`],
    ["Started", server.started_at ? `${time(server.started_at)} (${server.started_at})` : "–"],
    ["Updated", `${time(server.updated_at)} (${server.updated_at})`],
    ["Memory now / max", `${megabytes(server.memory_current_mb)} / ${megabytes(server.memory_max_mb)}`],
    ["CPU", percent(server.cpu_usage_percent)],
  ];
  if (server.namespace) facts.push(["Namespace", server.namespace]);
  if (server.inference_service) facts.push(["InferenceService", server.inference_service]);

  return (
    <section aria-labelledby="server-title">
      <p className="crumbs">
        <a href={href({ page: "servers" })}>Servers</a> / <span className="mono">{uuid}</span>
      </p>
      <div className="page-head">
        <h2 id="server-title">
          {server.model_name} <StatusBadge status={server.status} progress={server.progress} />
        </h2>
        <div className="page-actions">
          {server.status === "ready" && (
            <a className="button button-primary" href={href({ page: "chat", uuid })}>
              Chat
            </a>
          )}
          {!gone && mayDelete && !confirming && (
            <button type="button" className="button button-danger" onClick={() => setConfirming(true)}>
              Stop and delete
            </button>
          )}
        </div>
      </div>
      {confirming && (
        <div className="confirm card" role="alertdialog" aria-label="Confirm deletion">
          <p>
            Stop <strong>{server.model_name}</strong> and delete server <span className="mono">{uuid}</span>? Its endpoint
            stops answering; the model stays mirrored.
          </p>
          <button type="button" className="button button-danger" onClick={remove} disabled={busy}>
            {busy ? "Deleting…" : "Delete"}
          </button>{" "}
          <button type="button" className="button" onClick={() => setConfirming(false)}>
            Cancel
          </button>
        </div>
      )}
      {error && <ErrorBox title="Could not delete" message={error} />}
      {server.status_message && server.status !== "ready" && (
        <p className={server.status === "failed" ? "form-error" : "notice"} role="status">
          {server.status_message}
        </p>
      )}
      {server.violations.length > 0 && (
        <ul className="violations" aria-label="Contract violations">
          {server.violations.map((v) => (
            <li key={v}>{v}</li>
          ))}
        </ul>
      )}
      {server.progress !== null && server.progress < 100 && !gone && server.status !== "failed" && (
        <progress className="progress" max={100} value={server.progress} aria-label="Progress" />
      )}
      <div className="grid-2">
        <dl className="facts card">
          {facts.map(([k, v]) => (
            <div key={k}>
              <dt>{k}</dt>
              <dd className={k.includes("UUID") ? "mono" : undefined}>{v}</dd>
            </div>
          ))}
        </dl>
        <div className="card">
          <h3>Endpoint</h3>
          {server.gateway_url ? (
            <>
              <p>
                <a className="mono gateway-link" href={server.gateway_url} target="_blank" rel="noreferrer">
                  {server.gateway_url}
                </a>
              </p>
              <p className="muted">Any OpenAI client works with this base URL and an API key (below) or your token.</p>
              <CopyBlock label="OpenAI base_url" text={`${server.gateway_url}/v1`} />
              <CopyBlock label="Python (openai)" text={openaiSnippet(server.gateway_url, server.model_name)} />
              <CopyBlock label="curl" text={curlSnippet(server.gateway_url, server.model_name)} />
            </>
          ) : (
            <p className="muted">No endpoint yet.</p>
          )}
        </div>
      </div>
      {!gone && server.status !== "failed" && <ServerKeys serverUuid={uuid} />}
      {!gone && server.status !== "failed" && <ServerCharts serverUuid={uuid} />}
      {!gone && server.status !== "failed" && <ServerUsage serverUuid={uuid} />}
      {session.role === "admin" && <ServerLog serverUuid={uuid} />}
    </section>
  );
}
