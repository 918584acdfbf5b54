import { useCallback, useEffect, useRef, useState } from "react";
import { ApiError } from "../api";
import { useApp } from "../context";

export const LOG_LINES = 200;

/**
 * The last lines of a server's runtime output (admins only: a log can show prompts
 * and paths). Read on opening and on Refresh, not polled: it is for looking into a
 * failure, and a failed server's log is what explains it. Where the API keeps no
 * logs (Kubernetes: 501) its message says which `kubectl logs` to run instead.
 */
export function ServerLog({ serverUuid }: { serverUuid: string }) {
  const { api } = useApp();
  const [lines, setLines] = useState<string[] | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const view = useRef<HTMLPreElement>(null);

  const load = useCallback(
    (signal?: AbortSignal) => {
      api
        .logs(serverUuid, LOG_LINES, signal)
        .then((answer) => {
          setLines(answer.lines);
          setError(null);
        })
        .catch((e: unknown) => {
          if ((e as Error).name === "AbortError") return;
          if (e instanceof ApiError && e.status === 501) setNotice(e.message);
          else setError(e instanceof ApiError ? e.message : String(e));
        });
    },
    [api, serverUuid],
  );

  useEffect(() => {
    const abort = new AbortController();
    load(abort.signal);
    return () => abort.abort();
  }, [load]);

  useEffect(() => {
    if (view.current) view.current.scrollTop = view.current.scrollHeight; // the newest in sight
  }, [lines]);

  return (
    <div className="card">
      <h3>
        Runtime log{" "}
        {notice === null && (
          <button type="button" className="button button-small" onClick={() => load()}>
            Refresh
          </button>
        )}
      </h3>
      {error && (
        <p className="form-error" role="alert">
          {error}
        </p>
      )}
      {notice !== null ? (
        <p className="notice">{notice}</p>
      ) : lines === null ? (
        <p className="muted">Loading the log…</p>
      ) : lines.length === 0 ? (
        <p className="muted">The runtime has written nothing yet.</p>
      ) : (
        <>
          <p className="muted">The last {lines.length} lines, newest at the bottom.</p>
          <pre className="runtime-log" aria-label="Runtime log" ref={view}>
            {lines.join("\n")}
          </pre>
        </>
      )}
    </div>
  );
}
