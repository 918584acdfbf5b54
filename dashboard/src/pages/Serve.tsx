import { useState, type FormEvent } from "react";
import { ApiError, type ServeRequest } from "../api";
import { StatusBadge } from "../components/StatusBadge";
import { ErrorBox, Loading } from "../components/States";
import { useApp } from "../context";
import { bytes } from "../format";
import { href } from "../route";
import { useModels } from "../useModels";

/** Which form field a contract violation ("field: reason") belongs to. */
export function violationsByField(violations: string[]): Record<string, string[]> {
  const fieldOf: Record<string, string> = {
    replicas: "replicas",
    max_replicas: "max_replicas",
    cpu: "cpu",
    memory: "memory",
    context_length: "n_ctx",
    model: "model",
    namespace: "model",
  };
  const grouped: Record<string, string[]> = {};
  for (const v of violations) {
    const [field, ...rest] = v.split(": ");
    const key = fieldOf[field] ?? "model";
    (grouped[key] ??= []).push(rest.length ? rest.join(": ") : v);
  }
  return grouped;
}

const STEPS = ["requested", "checking", "mirroring", "validating", "applying", "pending", "loading", "ready"];

function FieldErrors({ errors }: { errors?: string[] }) {
  if (!errors?.length) return null;
  return (
    <ul className="field-errors" role="alert">
      {errors.map((e) => (
        <li key={e}>{e}</li>
      ))}
    </ul>
  );
}

export function ServePage({ initialModel }: { initialModel?: string }) {
  const { api, servers, upsert, session } = useApp();
  const { models, error: loadError, retry } = useModels(api);
  const [picked, setModel] = useState(initialModel ?? "");
  const [replicas, setReplicas] = useState("1");
  const [maxReplicas, setMaxReplicas] = useState("");
  const [cpu, setCpu] = useState("1");
  const [memory, setMemory] = useState("");
  const [nCtx, setNCtx] = useState("");
  const [nThreads, setNThreads] = useState("");
  const [seed, setSeed] = useState("");
  const [submitError, setSubmitError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [serverUuid, setServerUuid] = useState<string | null>(null);
  // Until the user picks one, the first mirrored (else catalog) model.
  const model = picked || models?.mirrored[0]?.model_name || models?.catalog[0]?.name || "";

  const server = serverUuid ? servers?.get(serverUuid) : undefined;
  const fieldErrors = violationsByField(server?.violations ?? []);
  const canServe = session.role === "admin" || session.role === "operator";

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setSubmitError(null);
    setServerUuid(null);
    const params: Record<string, number> = {};
    if (nCtx) params.n_ctx = Number(nCtx);
    if (nThreads) params.n_threads = Number(nThreads);
    if (seed) params.seed = Number(seed);
    const body: ServeRequest = { model, replicas: Number(replicas), runtime_params: params, cpu };
    if (maxReplicas) body.max_replicas = Number(maxReplicas);
    if (memory) body.memory = memory;
    setBusy(true);
    try {
      const accepted = await api.serve(body);
      setServerUuid(accepted.server_uuid);
      upsert(await api.server(accepted.server_uuid));
    } catch (e) {
      setSubmitError(e instanceof ApiError ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };

  if (loadError) return <ErrorBox title="Cannot load models" message={loadError} retry={retry} />;
  if (models === null) return <Loading what="models" />;
  const catalogOnly = models.catalog.filter((c) => !c.mirrored);
  const noModels = models.mirrored.length === 0 && catalogOnly.length === 0;
  const reached = server ? (server.status === "ready" ? STEPS.length : STEPS.indexOf(server.status)) : -1;

  return (
    <section aria-labelledby="serve-title">
      <div className="page-head">
        <h2 id="serve-title">Serve a model</h2>
      </div>
      {!canServe && <p className="notice">Your role ({session.role}) may look but not serve; ask an admin for operator rights.</p>}
      <div className="grid-2">
        <form className="card form" onSubmit={submit} aria-label="Serve a model">
          <label>
            Model
            <select value={model} onChange={(e) => setModel(e.target.value)} required disabled={noModels}>
              {noModels && <option value="">no models: push one with `modelserve models push`</option>}
              {models.mirrored.length > 0 && (
                <optgroup label="Mirrored (ready to load)">
                  {models.mirrored.map((m) => (
                    <option key={m.model_name} value={m.model_name}>
                      {m.model_name} · {bytes(m.size_bytes)} · {m.file_type ?? "?"}
                    </option>
                  ))}
                </optgroup>
              )}
              {catalogOnly.length > 0 && (
                <optgroup label="Catalog (mirrored on first use)">
                  {catalogOnly.map((c) => (
                    <option key={c.name} value={c.name}>
                      {c.name} · {bytes(c.size_bytes)}
                    </option>
                  ))}
                </optgroup>
              )}
            </select>
          </label>
          <FieldErrors errors={fieldErrors.model} />
          <div className="row">
            <div className="field">
              <label>
                Replicas
                <input type="number" min={0} max={100} value={replicas} onChange={(e) => setReplicas(e.target.value)} required />
              </label>
              <FieldErrors errors={fieldErrors.replicas} />
            </div>
            <div className="field">
              <label>
                Max replicas
                <input type="number" min={1} max={100} value={maxReplicas} placeholder="same" onChange={(e) => setMaxReplicas(e.target.value)} />
              </label>
              <FieldErrors errors={fieldErrors.max_replicas} />
            </div>
          </div>
          <div className="row">
            <div className="field">
              <label>
                CPU per replica
                <input value={cpu} onChange={(e) => setCpu(e.target.value)} pattern="[0-9]+(\.[0-9]+)?m?" required />
              </label>
              <FieldErrors errors={fieldErrors.cpu} />
            </div>
            <div className="field">
              <label>
                Memory per replica
                <input value={memory} placeholder="estimated" onChange={(e) => setMemory(e.target.value)} />
              </label>
              <FieldErrors errors={fieldErrors.memory} />
            </div>
          </div>
          <fieldset>
            <legend>Runtime parameters</legend>
            <div className="row">
              <div className="field">
                <label>
                  Context (n_ctx)
                  <input type="number" min={16} value={nCtx} placeholder="2048" onChange={(e) => setNCtx(e.target.value)} />
                </label>
                <FieldErrors errors={fieldErrors.n_ctx} />
              </div>
              <label>
                Threads
                <input type="number" min={1} value={nThreads} placeholder="auto" onChange={(e) => setNThreads(e.target.value)} />
              </label>
              <label>
                Seed
                <input type="number" min={0} value={seed} placeholder="random" onChange={(e) => setSeed(e.target.value)} />
              </label>
            </div>
          </fieldset>
          {submitError && (
            <p className="form-error" role="alert">
              {submitError}
            </p>
          )}
          <button type="submit" className="button button-primary" disabled={busy || !canServe || noModels || !model}>
            {busy ? "Requesting…" : "Serve"}
          </button>
        </form>
        <div className="card" aria-live="polite">
          <h3>Progress</h3>
          {!serverUuid && <p className="muted">Pick a model and press Serve: each step of the pipeline shows up here.</p>}
          {serverUuid && !server && <Loading what="the new server" />}
          {server && (
            <div className="serve-progress" data-status={server.status}>
              <p>
                Server <a className="mono" href={href({ page: "server", uuid: server.server_uuid })}>{server.server_uuid}</a>{" "}
                <StatusBadge status={server.status} progress={server.progress} />
              </p>
              <ol className="steps">
                {STEPS.map((step, i) => (
                  <li key={step} className={i < reached ? "done" : i === reached ? "current" : ""}>
                    {step}
                  </li>
                ))}
              </ol>
              {server.status === "mirroring" && server.progress !== null && (
                <progress className="progress" max={100} value={server.progress} aria-label="Mirror progress" />
              )}
              {server.status_message && server.status_message !== server.status && (
                <p className={server.status === "failed" ? "form-error" : "muted"}>{server.status_message}</p>
              )}
              {server.violations.length > 0 && (
                <ul className="violations" aria-label="Contract violations">
                  {server.violations.map((v) => (
                    <li key={v}>{v}</li>
                  ))}
                </ul>
              )}
              {server.status === "ready" && (
                <p>
                  <a className="button button-primary" href={href({ page: "chat", uuid: server.server_uuid })}>
                    Chat with it
                  </a>{" "}
                  <a className="button" href={href({ page: "server", uuid: server.server_uuid })}>
                    Snippets
                  </a>
                </p>
              )}
            </div>
          )}
        </div>
      </div>
    </section>
  );
}
