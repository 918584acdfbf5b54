import { createContext, useContext } from "react";
import type { Api, Server } from "./api";
import type { Session } from "./session";

export interface AppState {
  api: Api;
  session: Session;
  /** Every server, kept live from GET /events; null until the first load. */
  servers: Map<string, Server> | null;
  serversError: string | null;
  live: boolean;
  upsert: (server: Server) => void;
  signOut: (reason?: string) => void;
}

export const AppContext = createContext<AppState | null>(null);

export function useApp(): AppState {
  const state = useContext(AppContext);
  if (!state) throw new Error("useApp outside <AppContext.Provider>");
  return state;
}
