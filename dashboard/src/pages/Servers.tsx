import { useEffect, useState } from "react";
import type { Server } from "../api";
import { Sparkline } from "../components/ServerCharts";
import { StatusBadge } from "../components/StatusBadge";
import { Empty, ErrorBox, Loading } from "../components/States";
import { useApp } from "../context";
import { megabytes, percent, shortId, time } from "../format";
import { go, href } from "../route";

export function sortServers(servers: Iterable<Server>): Server[] {
  return [...servers].sort((a, b) => b.created_at.localeCompare(a.created_at));
}

/** Re-render now and then, so "2 min ago" does not stand still. */
function useTick(ms: number): void {
  const [, setTick] = useState(0);
  useEffect(() => {
    const timer = setInterval(() => setTick((t) => t + 1), ms);
    return () => clearInterval(timer);
  }, [ms]);
}

export function ServersPage() {
  const { servers, serversError } = useApp();
  const [showDeleted, setShowDeleted] = useState(false);
  useTick(15_000);
  if (servers === null) {
    return serversError ? <ErrorBox title="Cannot load servers" message={serversError} /> : <Loading what="servers" />;
  }
  const all = sortServers(servers.values());
  const shown = showDeleted ? all : all.filter((s) => s.status !== "deleted");
  return (
    <section aria-labelledby="servers-title">
      <div className="page-head">
        <h2 id="servers-title">Servers</h2>
        <div className="page-actions">
          <label className="checkbox">
            <input type="checkbox" checked={showDeleted} onChange={(e) => setShowDeleted(e.target.checked)} />
            Show deleted
          </label>
          <a className="button button-primary" href={href({ page: "serve" })}>
            Serve a model
          </a>
        </div>
      </div>
      {shown.length === 0 ? (
        <Empty title="No servers yet">
          <p>
            Serve a model to get an OpenAI-compatible endpoint with its own UUID.{" "}
            <a href={href({ page: "serve", model: "demo" })}>Serve the demo model</a>.
          </p>
        </Empty>
      ) : (
        <div className="table-wrap">
          <table className="table servers-table">
            <thead>
              <tr>
                <th>Status</th>
                <th>Model</th>
                <th>Model UUID</th>
                <th>Server UUID</th>
                <th>Created</th>
                <th>Started</th>
                <th>Updated</th>
                <th>Memory (now / max)</th>
                <th>CPU</th>
                <th>Tokens/s</th>
                <th>Gateway URL</th>
              </tr>
            </thead>
            <tbody>
              {shown.map((s) => (
                <tr
                  key={s.server_uuid}
                  className="clickable"
                  data-server={s.server_uuid}
                  onClick={() => go({ page: "server", uuid: s.server_uuid })}
                >
                  <td data-label="Status">
                    <StatusBadge status={s.status} progress={s.progress} />
                  </td>
                  <td data-label="Model" className="strong">
                    {s.model_name}
                  </td>
                  <td data-label="Model UUID" className="mono" title={s.model_uuid ?? ""}>
                    {shortId(s.model_uuid)}
                  </td>
                  <td data-label="Server UUID" className="mono" title={s.server_uuid}>
                    <a href={href({ page: "server", uuid: s.server_uuid })} onClick={(e) => e.stopPropagation()}>
                      {shortId(s.server_uuid)}
                    </a>
                  </td>
                  <td data-label="Created" title={s.created_at}>
                    {time(s.created_at)}
                  </td>
                  <td data-label="Started" title={s.started_at ?? ""}>
                    {time(s.started_at)}
                  </td>
                  <td data-label="Updated" title={s.updated_at}>
                    {time(s.updated_at)}
                  </td>
                  <td data-label="Memory">
                    {megabytes(s.memory_current_mb)} / {megabytes(s.memory_max_mb)}
                  </td>
                  <td data-label="CPU">{percent(s.cpu_usage_percent)}</td>
                  <td data-label="Tokens/s">
                    {s.status === "deleted" || s.status === "failed" ? "–" : <Sparkline serverUuid={s.server_uuid} />}
                  </td>
                  <td data-label="Gateway URL" className="mono url-cell">
                    {s.gateway_url ? (
                      <a href={s.gateway_url} target="_blank" rel="noreferrer" onClick={(e) => e.stopPropagation()}>
                        {s.gateway_url}
                      </a>
                    ) : (
                      "–"
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
