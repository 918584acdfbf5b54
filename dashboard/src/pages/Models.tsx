import { Empty, ErrorBox, Loading } from "../components/States";
import { useApp } from "../context";
import { bytes, count, time } from "../format";
import { href } from "../route";
import { useModels } from "../useModels";

export function ModelsPage() {
  const { api } = useApp();
  const { models, error, retry } = useModels(api);

  if (error) return <ErrorBox title="Cannot load models" message={error} retry={retry} />;
  if (models === null) return <Loading what="models" />;
  const catalogOnly = models.catalog.filter((c) => !c.mirrored);
  return (
    <section aria-labelledby="models-title">
      <div className="page-head">
        <h2 id="models-title">Models</h2>
      </div>
      <h3>Mirrored</h3>
      {models.mirrored.length === 0 ? (
        <Empty title="No mirrored models yet">
          <p>
            A catalog model is mirrored (downloaded, verified, stored) the first time it is served. Upload your own with{" "}
            <code>modelserve models push FILE.gguf</code>.
          </p>
        </Empty>
      ) : (
        <div className="table-wrap">
          <table className="table models-table">
            <thead>
              <tr>
                <th>Name</th>
                <th>Size</th>
                <th>Quantisation</th>
                <th>Architecture</th>
                <th>Context</th>
                <th>Parameters</th>
                <th>SHA-256</th>
                <th>Source</th>
                <th>Mirrored</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {models.mirrored.map((m) => (
                <tr key={m.model_uuid} data-model={m.model_name}>
                  <td data-label="Name" className="strong">
                    {m.model_name}
                  </td>
                  <td data-label="Size">{bytes(m.size_bytes)}</td>
                  <td data-label="Quantisation">{m.file_type ?? "–"}</td>
                  <td data-label="Architecture">{m.architecture ?? "–"}</td>
                  <td data-label="Context">{m.context_length ?? "–"}</td>
                  <td data-label="Parameters">{count(m.parameter_count)}</td>
                  <td data-label="SHA-256" className="mono sha" title={m.sha256}>
                    {m.sha256}
                  </td>
                  <td data-label="Source">{m.source ?? "–"}</td>
                  <td data-label="Mirrored" title={m.created_at}>
                    {time(m.created_at)}
                  </td>
                  <td>
                    <a className="button button-small" href={href({ page: "serve", model: m.model_name })}>
                      Serve
                    </a>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <h3>In the catalog</h3>
      {catalogOnly.length === 0 ? (
        <Empty title={models.catalog.length ? "Every catalog model is mirrored" : "The catalog is empty or unreachable"} />
      ) : (
        <ul className="catalog-list">
          {catalogOnly.map((c) => (
            <li key={c.name} className="card">
              <span className="strong">{c.name}</span> <span className="muted">{bytes(c.size_bytes)}</span>{" "}
              <a className="button button-small" href={href({ page: "serve", model: c.name })}>
                Serve
              </a>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
