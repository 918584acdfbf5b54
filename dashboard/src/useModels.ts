import { useEffect, useState } from "react";
import type { Api, Models } from "./api";

/** GET /models once per `retry()`: the models page and the serve form's picker. */
export function useModels(api: Api): { models: Models | null; error: string | null; retry: () => void } {
  const [models, setModels] = useState<Models | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    const abort = new AbortController();
    setError(null);
    api
      .models(abort.signal)
      .then(setModels)
      .catch((e: Error) => {
        if (e.name !== "AbortError") setError(e.message);
      });
    return () => abort.abort();
  }, [api, attempt]);

  return { models, error, retry: () => setAttempt((n) => n + 1) };
}
