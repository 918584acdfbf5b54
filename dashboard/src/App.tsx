import { useCallback, useEffect, useMemo, useState } from "react";
import { Api, ApiError, type Server } from "./api";
import { AppContext, type AppState } from "./context";
import { ChatPage } from "./pages/Chat";
import { ModelsPage } from "./pages/Models";
import { ServePage } from "./pages/Serve";
import { ServerDetail } from "./pages/ServerDetail";
import { ServersPage } from "./pages/Servers";
import { SignIn } from "./pages/SignIn";
import { href, useRoute, type Route } from "./route";
import { loadSession, saveSession, type Session } from "./session";

const RECONNECT_MS = [1000, 2000, 5000, 10000];

/** The servers map, loaded once and then kept live from GET /events (reconnecting). */
function useLiveServers(api: Api | null) {
  const [servers, setServers] = useState<Map<string, Server> | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [live, setLive] = useState(false);

  const upsert = useCallback((server: Server) => {
    setServers((current) => new Map(current ?? []).set(server.server_uuid, server));
  }, []);

  useEffect(() => {
    if (!api) return;
    const abort = new AbortController();
    let failures = 0;
    const run = async () => {
      while (!abort.signal.aborted) {
        try {
          const list = await api.servers(abort.signal);
          setServers(new Map(list.map((s) => [s.server_uuid, s])));
          setError(null);
          setLive(true);
          failures = 0;
          await api.watch(upsert, abort.signal);
        } catch (e) {
          if ((e as Error).name === "AbortError") return;
          if (e instanceof ApiError && e.status === 401) return;
          setError((e as Error).message);
        }
        setLive(false);
        if (abort.signal.aborted) return;
        const wait = RECONNECT_MS[Math.min(failures, RECONNECT_MS.length - 1)];
        failures += 1;
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    };
    void run();
    return () => abort.abort();
  }, [api, upsert]);

  return { servers, error, live, upsert };
}

function Page({ route }: { route: Route }) {
  switch (route.page) {
    case "server":
      return <ServerDetail uuid={route.uuid} />;
    case "chat":
      return <ChatPage uuid={route.uuid} />;
    case "serve":
      return <ServePage key={route.model ?? ""} initialModel={route.model} />;
    case "models":
      return <ModelsPage />;
    default:
      return <ServersPage />;
  }
}

export function App({ base = "" }: { base?: string }) {
  const [session, setSession] = useState<Session | null>(() => loadSession());
  const [notice, setNotice] = useState<string | null>(null);
  const route = useRoute();

  const signOut = useCallback((reason?: string) => {
    saveSession(null);
    setSession(null);
    setNotice(reason ?? null);
  }, []);

  const api = useMemo(
    () => (session ? new Api(base, session.token, () => signOut("Your session is no longer valid: sign in again.")) : null),
    [base, session, signOut],
  );
  const anonymous = useMemo(() => new Api(base, null), [base]);
  const { servers, error, live, upsert } = useLiveServers(api);

  useEffect(() => {
    if (!session || !Number.isFinite(session.expiresAt)) return;
    const left = session.expiresAt - Date.now();
    const timer = setTimeout(() => signOut("Your session expired: sign in again."), Math.max(0, left));
    return () => clearTimeout(timer);
  }, [session, signOut]);

  if (!session || !api) {
    return (
      <SignIn
        api={anonymous}
        notice={notice}
        onSignedIn={(s) => {
          saveSession(s);
          setNotice(null);
          setSession(s);
        }}
      />
    );
  }

  const state: AppState = { api, session, servers, serversError: error, live, upsert, signOut };
  const current = route.page === "server" || route.page === "chat" ? "servers" : route.page;
  return (
    <AppContext.Provider value={state}>
      <header className="topbar">
        <a className="brand" href={href({ page: "servers" })}>
          <span className="logo" aria-hidden="true">◆</span> modelserve
        </a>
        <nav aria-label="Main">
          {(["servers", "serve", "models"] as const).map((page) => (
            <a key={page} href={href({ page } as Route)} aria-current={current === page ? "page" : undefined}>
              {page === "serve" ? "Serve" : page[0].toUpperCase() + page.slice(1)}
            </a>
          ))}
        </nav>
        <div className="who">
          <span className={live ? "live live-on" : "live"} title={live ? "live updates" : "reconnecting"}>
            {live ? "live" : "offline"}
          </span>
          <span className="user">
            {session.subject} <span className="muted">({session.role})</span>
          </span>
          <button type="button" className="button button-small" onClick={() => signOut("Signed out.")}>
            Sign out
          </button>
        </div>
      </header>
      <main className="content">
        <Page route={route} />
      </main>
    </AppContext.Provider>
  );
}
