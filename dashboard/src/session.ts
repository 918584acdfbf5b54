// The signed-in user's token: kept in sessionStorage (gone with the tab), never
// in localStorage or a cookie, and dropped as soon as it expires.

const KEY = "modelserve.token";

export interface Session {
  token: string;
  subject: string;
  role: string;
  expiresAt: number; // ms since the epoch
}

function decodePart(part: string): Record<string, unknown> {
  const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
  return JSON.parse(atob(padded)) as Record<string, unknown>;
}

/** What the dashboard shows of a token; null when it is not a JWT. The API verifies it. */
export function readToken(token: string): Session | null {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const claims = decodePart(parts[1]);
    const exp = typeof claims.exp === "number" ? claims.exp * 1000 : Number.POSITIVE_INFINITY;
    return {
      token,
      subject: String(claims.sub ?? "?"),
      role: String(claims.role ?? "viewer"),
      expiresAt: exp,
    };
  } catch {
    return null;
  }
}

export function isExpired(session: Session, now: number = Date.now()): boolean {
  return now >= session.expiresAt;
}

export function loadSession(storage: Storage = sessionStorage): Session | null {
  const token = storage.getItem(KEY);
  const session = token ? readToken(token) : null;
  if (!session || isExpired(session)) {
    storage.removeItem(KEY);
    return null;
  }
  return session;
}

export function saveSession(session: Session | null, storage: Storage = sessionStorage): void {
  if (session) storage.setItem(KEY, session.token);
  else storage.removeItem(KEY);
}
