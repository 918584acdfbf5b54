import { useState, type FormEvent } from "react";
import { Api, ApiError } from "../api";
import { isExpired, readToken, type Session } from "../session";

export function SignIn({ api, notice, onSignedIn }: { api: Api; notice: string | null; onSignedIn: (s: Session) => void }) {
  const [username, setUsername] = useState("admin");
  const [password, setPassword] = useState("");
  const [token, setToken] = useState("");
  const [useToken, setUseToken] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    if (useToken) {
      const session = readToken(token.trim());
      if (!session) return setError("That is not a JWT: paste the output of `modelserve token`.");
      if (isExpired(session)) return setError("That token has expired: mint a new one.");
      try {
        await new Api(api.base, session.token).servers();
      } catch (e) {
        return setError(e instanceof ApiError ? e.message : String(e));
      }
      return onSignedIn(session);
    }
    setBusy(true);
    try {
      const answer = await api.signIn(username, password);
      const session = readToken(answer.access_token);
      if (!session) throw new ApiError(500, "the API returned something that is not a JWT");
      onSignedIn(session);
    } catch (e) {
      setError(e instanceof ApiError && e.status === 401 ? "Wrong username or password." : String((e as Error).message));
    } finally {
      setBusy(false);
    }
  };

  return (
    <main className="signin">
      <form className="card signin-card" onSubmit={submit} aria-label="Sign in">
        <h1>
          <span className="logo" aria-hidden="true">◆</span> modelserve
        </h1>
        <p className="muted">Serverless GGUF models with OpenAI-compatible endpoints.</p>
        {notice && <p className="notice" role="status">{notice}</p>}
        {useToken ? (
          <label>
            Access token
            <textarea value={token} onChange={(e) => setToken(e.target.value)} rows={4} required placeholder="eyJ…" />
          </label>
        ) : (
          <>
            <label>
              Username
              <input value={username} onChange={(e) => setUsername(e.target.value)} autoComplete="username" required />
            </label>
            <label>
              Password
              <input
                type="password"
                value={password}
                onChange={(e) => setPassword(e.target.value)}
                autoComplete="current-password"
                required
              />
            </label>
          </>
        )}
        {error && (
          <p className="form-error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="button button-primary" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        <button type="button" className="link-button" onClick={() => setUseToken(!useToken)}>
          {useToken ? "Sign in with a password instead" : "Use an access token instead"}
        </button>
      </form>
    </main>
  );
}
