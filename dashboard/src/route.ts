// Hash routes: the API serves one static index.html, so no server-side routing.
import { useEffect, useState } from "react";

export type Route =
  | { page: "servers" }
  | { page: "server"; uuid: string }
  | { page: "chat"; uuid: string }
  | { page: "serve"; model?: string }
  | { page: "models" };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function parseRoute(hash: string): Route {
  const [path, query = ""] = hash.replace(/^#\/?/, "").split("?");
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "servers" && parts[1] && UUID.test(parts[1])) {
    return parts[2] === "chat" ? { page: "chat", uuid: parts[1] } : { page: "server", uuid: parts[1] };
  }
  if (parts[0] === "serve") {
    const model = new URLSearchParams(query).get("model") ?? undefined;
    return { page: "serve", model };
  }
  if (parts[0] === "models") return { page: "models" };
  return { page: "servers" };
}

export function href(route: Route): string {
  switch (route.page) {
    case "server":
      return `#/servers/${route.uuid}`;
    case "chat":
      return `#/servers/${route.uuid}/chat`;
    case "serve":
      return route.model ? `#/serve?model=${encodeURIComponent(route.model)}` : "#/serve";
    default:
      return `#/${route.page}`;
  }
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(window.location.hash));
  useEffect(() => {
    const update = () => setRoute(parseRoute(window.location.hash));
    window.addEventListener("hashchange", update);
    return () => window.removeEventListener("hashchange", update);
  }, []);
  return route;
}

export function go(route: Route): void {
  window.location.hash = href(route);
}
