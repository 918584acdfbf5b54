import { render, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { App } from "../src/App";
import { json, makeToken, server, sse } from "./helpers";

function stubFetch(routes: Record<string, (init: RequestInit) => Response>) {
  const calls: string[] = [];
  vi.stubGlobal("fetch", async (input: RequestInfo | URL, init: RequestInit = {}) => {
    const key = `${init.method ?? "GET"} ${String(input)}`;
    calls.push(key);
    const handler = routes[key];
    return handler ? handler(init) : json({ detail: "not here" }, 404);
  });
  return calls;
}

afterEach(() => vi.unstubAllGlobals());

describe("App", () => {
  it("signs in with a password, keeps the token for the tab only, and signs out", async () => {
    const token = makeToken({ sub: "root", role: "admin", exp: Math.floor(Date.now() / 1000) + 3600 });
    stubFetch({
      "POST /auth/token": (init) => {
        const form = new URLSearchParams(String(init.body));
        return form.get("password") === "right-password"
          ? json({ access_token: token, token_type: "bearer", expires_in: 3600 })
          : json({ detail: "wrong username or password" }, 401);
      },
      "GET /servers": () => json([server()]),
      "GET /events": () => sse([]),
    });
    render(<App />);
    const user = userEvent.setup();
    await user.clear(screen.getByLabelText("Username"));
    await user.type(screen.getByLabelText("Username"), "root");
    await user.type(screen.getByLabelText("Password"), "nope");
    await user.click(screen.getByRole("button", { name: "Sign in" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("Wrong username or password.");
    expect(sessionStorage.length).toBe(0);

    await user.clear(screen.getByLabelText("Password"));
    await user.type(screen.getByLabelText("Password"), "right-password");
    await user.click(screen.getByRole("button", { name: "Sign in" }));
    expect(await screen.findByText("root")).toBeInTheDocument();
    expect(await screen.findByText("demo")).toBeInTheDocument();
    expect(sessionStorage.getItem("modelserve.token")).toBe(token);
    expect(localStorage.length).toBe(0);

    await user.click(screen.getByRole("button", { name: "Sign out" }));
    expect(await screen.findByText("Signed out.")).toBeInTheDocument();
    expect(sessionStorage.length).toBe(0);
  });

  it("signs out when the token expires, and when the API stops accepting it", async () => {
    const soon = makeToken({ sub: "root", role: "admin", exp: Math.floor(Date.now() / 1000) + 1 });
    sessionStorage.setItem("modelserve.token", soon);
    stubFetch({ "GET /servers": () => json([]), "GET /events": () => sse([]) });
    render(<App />);
    expect(await screen.findByText("No servers yet")).toBeInTheDocument();
    await waitFor(() => expect(screen.getByText("Your session expired: sign in again.")).toBeInTheDocument(), {
      timeout: 3000,
    });
    expect(sessionStorage.length).toBe(0);
  });

  it("signs out on a 401 from the API", async () => {
    const token = makeToken({ sub: "root", role: "admin", exp: Math.floor(Date.now() / 1000) + 3600 });
    sessionStorage.setItem("modelserve.token", token);
    stubFetch({ "GET /servers": () => json({ detail: "the token was revoked" }, 401) });
    render(<App />);
    expect(await screen.findByText("Your session is no longer valid: sign in again.")).toBeInTheDocument();
  });

  it("keeps the servers table live from the event stream", async () => {
    const token = makeToken({ sub: "root", role: "admin", exp: Math.floor(Date.now() / 1000) + 3600 });
    sessionStorage.setItem("modelserve.token", token);
    const loading = server({ status: "loading", progress: null });
    const ready = { ...loading, status: "ready" };
    stubFetch({
      "GET /servers": () => json([]),
      "GET /events": () =>
        sse([`event: server\ndata: ${JSON.stringify(loading)}\n\n`, `event: server\ndata: ${JSON.stringify(ready)}\n\n`], 50),
    });
    render(<App />);
    expect(await screen.findByText("loading")).toBeInTheDocument();
    expect(await screen.findByText("ready")).toBeInTheDocument();
  });
});
