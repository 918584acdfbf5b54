import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import type { Server } from "../src/api";
import { ChatPage } from "../src/pages/Chat";
import { ModelsPage } from "../src/pages/Models";
import { ServePage } from "../src/pages/Serve";
import { ServerDetail } from "../src/pages/ServerDetail";
import { ServersPage } from "../src/pages/Servers";
import { fakeFetch, json, LiveServers, renderWith, server, sse } from "./helpers";

const MODELS = {
  mirrored: [
    {
      model_uuid: "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee",
      model_name: "demo",
      object_path: "demo/demo.gguf",
      sha256: "ab".repeat(32),
      size_bytes: 469_500,
      architecture: "llama",
      file_type: "Q8_0",
      parameter_count: 123_456,
      context_length: 2048,
      source: "demo",
      created_at: "2026-11-22T10:00:00Z",
    },
  ],
  catalog: [
    { name: "demo", size_bytes: 469_500, file_type: null, mirrored: true },
    { name: "big", size_bytes: 7_000_000_000, file_type: null, mirrored: false },
  ],
};

describe("ServersPage", () => {
  it("shows loading, then an error, then an empty state", () => {
    const { rerender } = renderWith(<ServersPage />, { servers: null });
    expect(screen.getByRole("status")).toHaveTextContent("Loading servers");
    rerender(<></>);
    renderWith(<ServersPage />, { servers: null, serversError: "cannot reach modelserve" });
    expect(screen.getByRole("alert")).toHaveTextContent("cannot reach modelserve");
  });

  it("says what to do when there are no servers", () => {
    renderWith(<ServersPage />, { servers: new Map() });
    expect(screen.getByText("No servers yet")).toBeInTheDocument();
    expect(screen.getByRole("link", { name: "Serve the demo model" })).toHaveAttribute("href", "#/serve?model=demo");
  });

  it("lists every server with its status, ids, times, memory, CPU and gateway URL", () => {
    const ready = server();
    const mirroring = server({
      server_uuid: "99999999-2222-4333-8444-555555555555",
      model_name: "big",
      status: "mirroring",
      progress: 42,
      created_at: "2026-11-22T11:00:00Z",
      memory_current_mb: null,
      memory_max_mb: null,
    });
    const deleted = server({ server_uuid: "88888888-2222-4333-8444-555555555555", status: "deleted" });
    const map = new Map<string, Server>([ready, mirroring, deleted].map((s) => [s.server_uuid, s]));
    renderWith(<ServersPage />, { servers: map });
    const rows = screen.getAllByRole("row").slice(1);
    expect(rows).toHaveLength(2); // deleted ones are hidden by default
    expect(within(rows[0]).getByText("big")).toBeInTheDocument(); // newest first
    expect(within(rows[0]).getByText("mirroring")).toBeInTheDocument();
    expect(within(rows[0]).getByText(/42%/)).toBeInTheDocument();
    expect(within(rows[1]).getByText("ready")).toBeInTheDocument();
    expect(within(rows[1]).getByText("120 MB / 181 MB")).toBeInTheDocument();
    expect(within(rows[1]).getByText("12 %")).toBeInTheDocument();
    expect(within(rows[1]).getByText("11111111")).toBeInTheDocument();
    expect(within(rows[1]).getByText("aaaaaaaa")).toBeInTheDocument();
    expect(within(rows[1]).getByRole("link", { name: ready.gateway_url! })).toHaveAttribute("href", ready.gateway_url);
  });
});

describe("ServerDetail", () => {
  it("shows snippets with the real gateway URL and deletes after confirming", async () => {
    const ready = server();
    const { fetcher, calls } = fakeFetch({
      [`DELETE /servers/${ready.server_uuid}`]: () => json({ ...ready, status: "deleting" }),
      [`GET /keys?server_uuid=${ready.server_uuid}`]: () => json([]),
      "GET /usage?*": () => json({ rows: [], requests: 0, prompt_tokens: 0, completion_tokens: 0 }),
    });
    const upserted: Server[] = [];
    renderWith(<ServerDetail uuid={ready.server_uuid} />, {
      servers: new Map([[ready.server_uuid, ready]]),
      fetcher,
      upsert: (s) => upserted.push(s),
    });
    expect(screen.getByText(`${ready.gateway_url}/v1`)).toBeInTheDocument();
    expect(screen.getByText(/curl http:\/\/127\.0\.0\.1:8080\/11111111-.*\/v1\/chat\/completions/)).toBeInTheDocument();
    const user = userEvent.setup();
    await user.click(screen.getByRole("button", { name: "Stop and delete" }));
    const changes = () => calls.filter((c) => c.method !== "GET");
    expect(changes()).toHaveLength(0); // nothing before confirming
    await user.click(screen.getByRole("button", { name: "Delete" }));
    await waitFor(() => expect(upserted.map((s) => s.status)).toEqual(["deleting"]));
    expect(changes()[0].method).toBe("DELETE");
  });

  it("lists contract violations of a failed server", () => {
    const failed = server({
      status: "failed",
      status_message: "the request breaks the resource contract: replicas: 10 replicas requested; the limit is 4",
      violations: ["replicas: 10 replicas requested; the limit is 4"],
    });
    renderWith(<ServerDetail uuid={failed.server_uuid} />, { servers: new Map([[failed.server_uuid, failed]]) });
    expect(within(screen.getByRole("list", { name: "Contract violations" })).getByText(/limit is 4/)).toBeInTheDocument();
    expect(screen.queryByRole("link", { name: "Chat" })).toBeNull();
  });
});

describe("ServePage", () => {
  it("offers mirrored and catalog models and posts the request", async () => {
    const accepted = server({ status: "requested", progress: null });
    const { fetcher, calls } = fakeFetch({
      "GET /models": () => json(MODELS),
      "POST /serve": () =>
        json({ server_uuid: accepted.server_uuid, status: "requested", status_url: "", gateway_url: "" }, 202),
      [`GET /servers/${accepted.server_uuid}`]: () => json(accepted),
    });
    const upserted: Server[] = [];
    renderWith(<ServePage />, { fetcher, upsert: (s) => upserted.push(s) });
    const select = await screen.findByLabelText("Model");
    expect(within(select).getByRole("group", { name: "Mirrored (ready to load)" })).toHaveTextContent("demo");
    expect(within(select).getByRole("group", { name: "Catalog (mirrored on first use)" })).toHaveTextContent("big");
    const user = userEvent.setup();
    await user.selectOptions(select, "big");
    await user.clear(screen.getByLabelText("Replicas"));
    await user.type(screen.getByLabelText("Replicas"), "2");
    await user.type(screen.getByLabelText("Context (n_ctx)"), "4096");
    await user.click(screen.getByRole("button", { name: "Serve" }));
    await waitFor(() => expect(upserted).toHaveLength(1));
    const post = calls.find((c) => c.method === "POST")!;
    expect(post.body).toEqual({ model: "big", replicas: 2, cpu: "1", runtime_params: { n_ctx: 4096 } });
  });

  it("shows the API's refusal and the contract's violations next to their fields", async () => {
    const failed = server({
      status: "failed",
      status_message: "the request breaks the resource contract",
      violations: ["replicas: 10 replicas requested; the limit is 4", "cpu: 16 cores per replica requested; the limit is 8"],
    });
    let refuse = true;
    const { fetcher } = fakeFetch({
      "GET /models": () => json(MODELS),
      "POST /serve": () =>
        refuse
          ? json({ detail: [{ loc: ["body", "replicas"], msg: "Input should be less than or equal to 100" }] }, 422)
          : json({ server_uuid: failed.server_uuid, status: "requested", status_url: "", gateway_url: "" }, 202),
      [`GET /servers/${failed.server_uuid}`]: () => json(failed),
    });
    render(<LiveServers fetcher={fetcher}>{<ServePage />}</LiveServers>);
    const user = userEvent.setup();
    await screen.findByLabelText("Model");
    await user.click(screen.getByRole("button", { name: "Serve" }));
    expect(await screen.findByText("replicas: Input should be less than or equal to 100")).toBeInTheDocument();

    refuse = false;
    await user.click(screen.getByRole("button", { name: "Serve" }));
    const replicas = screen.getByLabelText("Replicas").closest(".field") as HTMLElement;
    expect(await within(replicas).findByText("10 replicas requested; the limit is 4")).toBeInTheDocument();
    const cpu = screen.getByLabelText("CPU per replica").closest(".field") as HTMLElement;
    expect(within(cpu).getByText("16 cores per replica requested; the limit is 8")).toBeInTheDocument();
    expect(screen.queryByText("replicas: Input should be less than or equal to 100")).toBeNull();
  });

  it("shows the mirror's progress while it runs", async () => {
    const mirroring = server({ status: "mirroring", progress: 42, status_message: "mirroring big: 42 of 100 bytes" });
    const { fetcher } = fakeFetch({
      "GET /models": () => json(MODELS),
      "POST /serve": () =>
        json({ server_uuid: mirroring.server_uuid, status: "requested", status_url: "", gateway_url: "" }, 202),
      [`GET /servers/${mirroring.server_uuid}`]: () => json(mirroring),
    });
    render(<LiveServers fetcher={fetcher}>{<ServePage />}</LiveServers>);
    const user = userEvent.setup();
    await screen.findByLabelText("Model");
    await user.click(screen.getByRole("button", { name: "Serve" }));
    const bar = await screen.findByRole("progressbar", { name: "Mirror progress" });
    expect(bar).toHaveAttribute("value", "42");
    expect(screen.getByText("mirroring big: 42 of 100 bytes")).toBeInTheDocument();
    expect(screen.getByText("checking").className).toBe("done");
    expect(screen.getByText("mirroring", { selector: "li" }).className).toBe("current");
  });

  it("tells a viewer they may not serve", async () => {
    const { fetcher } = fakeFetch({ "GET /models": () => json(MODELS) });
    renderWith(<ServePage />, {
      fetcher,
      session: { token: "t", subject: "vic", role: "viewer", expiresAt: Infinity },
    });
    expect(await screen.findByText(/may look but not serve/)).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Serve" })).toBeDisabled();
  });
});

describe("ModelsPage", () => {
  it("shows size, quantisation, architecture, context and sha256", async () => {
    const { fetcher } = fakeFetch({ "GET /models": () => json(MODELS) });
    renderWith(<ModelsPage />, { fetcher });
    const row = (await screen.findByText("Q8_0")).closest("tr")!;
    expect(within(row).getAllByText("demo")).toHaveLength(2); // name and source
    for (const text of ["469.5 KB", "llama", "2048", "ab".repeat(32)]) {
      expect(within(row).getByText(text)).toBeInTheDocument();
    }
    expect(screen.getByText("big").closest("li")).toHaveTextContent("7.0 GB");
  });

  it("offers a retry when the API fails", async () => {
    let fail = true;
    const { fetcher } = fakeFetch({
      "GET /models": () => (fail ? json({ detail: "the store is down" }, 503) : json({ mirrored: [], catalog: [] })),
    });
    renderWith(<ModelsPage />, { fetcher });
    expect(await screen.findByText("the store is down")).toBeInTheDocument();
    fail = false;
    await userEvent.setup().click(screen.getByRole("button", { name: "Try again" }));
    expect(await screen.findByText("No mirrored models yet")).toBeInTheDocument();
  });
});

describe("ChatPage", () => {
  it("streams the answer into the conversation token by token", async () => {
    const ready = server();
    const pieces = ["Hel", "lo", " there"];
    const chunks = pieces.map((p) => `data: ${JSON.stringify({ choices: [{ delta: { content: p } }] })}\n\n`);
    const { fetcher, calls } = fakeFetch({
      [`POST /${ready.server_uuid}/v1/chat/completions`]: () => sse([...chunks, "data: [DONE]\n\n"], 20),
    });
    renderWith(<ChatPage uuid={ready.server_uuid} />, { fetcher, servers: new Map([[ready.server_uuid, ready]]) });
    const user = userEvent.setup();
    await user.type(screen.getByLabelText("Message text"), "Hi");
    await user.click(screen.getByRole("button", { name: "Send" }));
    await waitFor(() =>
      expect(screen.getAllByText(/Hel/).at(-1)!.closest("[data-role]")).toHaveAttribute("data-role", "assistant"),
    );
    await waitFor(() => expect(screen.getByText("Hello there")).toBeInTheDocument());
    expect(calls[0].body).toMatchObject({ model: "demo", stream: true, messages: [{ role: "user", content: "Hi" }] });
    expect(calls[0].headers.Authorization).toMatch(/^Bearer /);
  });

  it("shows the gateway's refusal", async () => {
    const ready = server();
    const { fetcher } = fakeFetch({
      [`POST /${ready.server_uuid}/v1/chat/completions`]: () => json({ detail: "the server is starting" }, 503),
    });
    renderWith(<ChatPage uuid={ready.server_uuid} />, { fetcher, servers: new Map([[ready.server_uuid, ready]]) });
    const user = userEvent.setup();
    await user.type(screen.getByLabelText("Message text"), "Hi");
    await user.click(screen.getByRole("button", { name: "Send" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("503 the server is starting");
  });
});
