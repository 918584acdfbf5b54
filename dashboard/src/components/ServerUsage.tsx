import { useCallback, useEffect, useState } from "react";
import { ApiError, type Usage } from "../api";
import { useApp } from "../context";

const MINUTES = 60;

/** Tokens per minute over the last hour, from `GET /usage`, oldest on the left. */
export function perMinute(usage: Usage, now: Date): number[] {
  const end = Math.floor(now.getTime() / 60_000);
  const bars = new Array<number>(MINUTES).fill(0);
  for (const row of usage.rows) {
    const index = MINUTES - 1 - (end - Math.floor(Date.parse(row.minute) / 60_000));
    if (index >= 0 && index < MINUTES) bars[index] += row.prompt_tokens + row.completion_tokens;
  }
  return bars;
}

/** Per key (or "token" for JWTs): requests and tokens, most tokens first. */
export function perKey(usage: Usage): { key: string; requests: number; prompt: number; completion: number }[] {
  const sums = new Map<string, { key: string; requests: number; prompt: number; completion: number }>();
  for (const row of usage.rows) {
    const key = row.key_id || `token (${row.username})`;
    const sum = sums.get(key) ?? { key, requests: 0, prompt: 0, completion: 0 };
    sum.requests += row.requests;
    sum.prompt += row.prompt_tokens;
    sum.completion += row.completion_tokens;
    sums.set(key, sum);
  }
  return [...sums.values()].sort((a, b) => b.prompt + b.completion - (a.prompt + a.completion));
}

const realNow = () => new Date();

/** A server's token usage through the gateway over the last hour: a chart and a table per key. */
export function ServerUsage({ serverUuid, now = realNow }: { serverUuid: string; now?: () => Date }) {
  const { api } = useApp();
  const [usage, setUsage] = useState<Usage | null>(null);
  const [error, setError] = useState<string | null>(null);

  const load = useCallback(
    (signal?: AbortSignal) => {
      const since = new Date(now().getTime() - MINUTES * 60_000).toISOString();
      api
        .usage(serverUuid, since, signal)
        .then((u) => {
          setUsage(u);
          setError(null);
        })
        .catch((e: unknown) => {
          if ((e as Error).name !== "AbortError") setError(e instanceof ApiError ? e.message : String(e));
        });
    },
    [api, serverUuid, now],
  );

  useEffect(() => {
    const abort = new AbortController();
    load(abort.signal);
    return () => abort.abort();
  }, [load]);

  const bars = usage ? perMinute(usage, now()) : [];
  const top = Math.max(1, ...bars);
  return (
    <div className="card">
      <h3>
        Usage, last hour{" "}
        <button type="button" className="button button-small" onClick={() => load()}>
          Refresh
        </button>
      </h3>
      {error && (
        <p className="form-error" role="alert">
          {error}
        </p>
      )}
      {usage === null ? (
        <p className="muted">Loading usage…</p>
      ) : (
        <>
          <p>
            {usage.requests} request{usage.requests === 1 ? "" : "s"}, {usage.prompt_tokens} prompt and {usage.completion_tokens} completion tokens
          </p>
          <svg
            className="usage-chart"
            viewBox={`0 0 ${MINUTES * 4} 60`}
            preserveAspectRatio="none"
            role="img" aria-label="Tokens per minute">
            {bars.map((value, i) =>
              value > 0 ? (
                <rect key={i} x={i * 4} y={60 - (value / top) * 60} width={3} height={(value / top) * 60}>
                  <title>{`${value} tokens`}</title>
                </rect>
              ) : null,
            )}
          </svg>
          {usage.rows.length > 0 && (
            <table className="table" aria-label="Usage per key">
              <thead>
                <tr>
                  <th>Key</th>
                  <th>Requests</th>
                  <th>Prompt</th>
                  <th>Completion</th>
                </tr>
              </thead>
              <tbody>
                {perKey(usage).map((k) => (
                  <tr key={k.key}>
                    <td className="mono">{k.key}</td>
                    <td>{k.requests}</td>
                    <td>{k.prompt}</td>
                    <td>{k.completion}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
    </div>
  );
}
