import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import type { ApiKey } from "../src/api";
import { ServerDetail } from "../src/pages/ServerDetail";
import { fakeFetch, json, renderWith, server } from "./helpers";

const ready = server();
const NO_USAGE = () => json({ rows: [], requests: 0, prompt_tokens: 0, completion_tokens: 0 });
const SECRET = "msk_0123456789ab_" + "S".repeat(43);

function listed(overrides: Partial<ApiKey> = {}): ApiKey {
  return {
    key_id: "0123456789ab",
    name: "chat front end",
    owner: "alice",
    server_uuid: ready.server_uuid,
    created_at: new Date().toISOString(),
    expires_at: null,
    last_used_at: null,
    revoked_at: null,
    ...overrides,
  };
}

describe("ServerKeys on a server's page", () => {
  it("creates a key for this server, shows it once, then revokes it", async () => {
    const { fetcher, calls } = fakeFetch({
      [`GET /keys?server_uuid=${ready.server_uuid}`]: () => json([]),
      "GET /usage?*": () => NO_USAGE(),
      "POST /keys": () => json({ ...listed(), key: SECRET }, 201),
      "DELETE /keys/0123456789ab": () => json(listed({ revoked_at: new Date().toISOString() })),
    });
    renderWith(<ServerDetail uuid={ready.server_uuid} />, { servers: new Map([[ready.server_uuid, ready]]), fetcher });
    expect(await screen.findByText("No keys for this server yet.")).toBeInTheDocument();
    const user = userEvent.setup();
    await user.type(screen.getByLabelText(/Name/), "chat front end");
    await user.click(screen.getByRole("button", { name: "Create key" }));

    const dialog = await screen.findByRole("dialog", { name: "New API key" });
    expect(within(dialog).getByText(SECRET)).toBeInTheDocument();
    expect(within(dialog).getByText(/shown only once/)).toBeInTheDocument();
    const post = calls.find((c) => c.method === "POST");
    expect(post?.body).toEqual({ name: "chat front end", server_uuid: ready.server_uuid });

    await user.click(within(dialog).getByRole("button", { name: "I have stored it" }));
    expect(screen.queryByRole("dialog")).not.toBeInTheDocument();
    expect(screen.queryByText(SECRET)).not.toBeInTheDocument(); // gone for good
    const table = screen.getByRole("table", { name: "API keys" });
    expect(within(table).getByText("0123456789ab")).toBeInTheDocument();
    expect(within(table).getByText("active")).toBeInTheDocument();

    await user.click(screen.getByRole("button", { name: "Revoke chat front end" }));
    await waitFor(() => expect(within(table).getByText("revoked")).toBeInTheDocument());
    const keyCalls = calls.filter((c) => c.url.startsWith("/keys"));
    expect(keyCalls.map((c) => c.method)).toEqual(["GET", "POST", "DELETE"]);
    expect(screen.queryByRole("button", { name: /Revoke/ })).not.toBeInTheDocument();
  });

  it("shows the API's refusal", async () => {
    const { fetcher } = fakeFetch({
      [`GET /keys?server_uuid=${ready.server_uuid}`]: () => json([listed({ revoked_at: "2026-11-22T10:00:00Z" })]),
      "POST /keys": () => json({ detail: "server is failed" }, 409),
      "GET /usage?*": () => NO_USAGE(),
    });
    renderWith(<ServerDetail uuid={ready.server_uuid} />, { servers: new Map([[ready.server_uuid, ready]]), fetcher });
    expect(await screen.findByText("revoked")).toBeInTheDocument();
    const user = userEvent.setup();
    await user.type(screen.getByLabelText(/Name/), "x");
    await user.click(screen.getByRole("button", { name: "Create key" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("server is failed");
    expect(screen.queryByRole("dialog")).not.toBeInTheDocument();
  });
});
