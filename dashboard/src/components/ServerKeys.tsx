import { useEffect, useState, type FormEvent } from "react";
import { ApiError, type ApiKey, type NewApiKey } from "../api";
import { useApp } from "../context";
import { time } from "../format";
import { CopyBlock } from "./CopyBlock";

function state(key: ApiKey): string {
  if (key.revoked_at) return "revoked";
  if (key.expires_at && Date.parse(key.expires_at) <= Date.now()) return "expired";
  return "active";
}

/**
 * API keys for one server: make one (its secret is shown once, in a dialog, and
 * dropped from memory when the dialog closes), list them, revoke one.
 */
export function ServerKeys({ serverUuid }: { serverUuid: string }) {
  const { api } = useApp();
  const [keys, setKeys] = useState<ApiKey[] | null>(null);
  const [name, setName] = useState("");
  const [made, setMade] = useState<NewApiKey | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    const abort = new AbortController();
    api
      .keys(serverUuid, abort.signal)
      .then(setKeys)
      .catch((e: unknown) => {
        if ((e as Error).name !== "AbortError") setError(e instanceof ApiError ? e.message : String(e));
      });
    return () => abort.abort();
  }, [api, serverUuid]);

  const fail = (e: unknown) => setError(e instanceof ApiError ? e.message : String(e));

  const create = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const key = await api.createKey({ name: name.trim(), server_uuid: serverUuid });
      const { key: _secret, ...listed } = key;
      setKeys((old) => [listed, ...(old ?? [])]);
      setMade(key);
      setName("");
    } catch (e) {
      fail(e);
    } finally {
      setBusy(false);
    }
  };

  const revoke = async (keyId: string) => {
    setError(null);
    try {
      const revoked = await api.revokeKey(keyId);
      setKeys((old) => (old ?? []).map((k) => (k.key_id === keyId ? revoked : k)));
    } catch (e) {
      fail(e);
    }
  };

  return (
    <div className="card">
      <h3>API keys</h3>
      <p className="muted">A key keeps working for an application until you revoke it.</p>
      <form onSubmit={create} className="key-form">
        <label>
          Name{" "}
          <input value={name} onChange={(e) => setName(e.target.value)} placeholder="chat front end" required maxLength={255} />
        </label>{" "}
        <button type="submit" className="button button-primary" disabled={busy || !name.trim()}>
          {busy ? "Creating…" : "Create key"}
        </button>
      </form>
      {error && (
        <p className="form-error" role="alert">
          {error}
        </p>
      )}
      {made && (
        <div className="confirm card" role="dialog" aria-label="New API key">
          <p>
            Key <strong>{made.name}</strong> is ready. Copy it now: it is <strong>shown only once</strong> and cannot be
            shown again.
          </p>
          <CopyBlock label="API key" text={made.key} />
          <button type="button" className="button" onClick={() => setMade(null)}>
            I have stored it
          </button>
        </div>
      )}
      {keys === null ? (
        <p className="muted">Loading keys…</p>
      ) : keys.length === 0 ? (
        <p className="muted">No keys for this server yet.</p>
      ) : (
        <table className="table" aria-label="API keys">
          <thead>
            <tr>
              <th>Key</th>
              <th>Name</th>
              <th>State</th>
              <th>Created</th>
              <th>Last used</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {keys.map((k) => (
              <tr key={k.key_id}>
                <td className="mono">{k.key_id}</td>
                <td>{k.name}</td>
                <td>{state(k)}</td>
                <td>{time(k.created_at)}</td>
                <td>{k.last_used_at ? time(k.last_used_at) : "–"}</td>
                <td>
                  {state(k) === "active" && (
                    <button
                      type="button"
                      className="button button-small button-danger"
                      onClick={() => revoke(k.key_id)}
                      aria-label={`Revoke ${k.name}`}
                    >
                      Revoke
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
