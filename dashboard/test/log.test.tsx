import { screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { LOG_LINES, ServerLog } from "../src/components/ServerLog";
import { ServerDetail } from "../src/pages/ServerDetail";
import { fakeFetch, json, makeToken, renderWith, server, SESSION } from "./helpers";

const failed = server({ status: "failed", status_message: "the runtime exited 5 times" });
const ADMIN = { ...SESSION, token: makeToken({ sub: "root", role: "admin", exp: 4102444800 }), subject: "root", role: "admin" };

describe("ServerLog", () => {
  it("shows the runtime's last lines and reads them again on Refresh", async () => {
    let lines = ["loading demo", "llama_model_load: error loading model"];
    const { fetcher, calls } = fakeFetch({
      [`GET /servers/${failed.server_uuid}/logs?lines=${LOG_LINES}`]: () => json({ server_uuid: failed.server_uuid, lines }),
    });
    renderWith(<ServerLog serverUuid={failed.server_uuid} />, { fetcher });
    const log = await screen.findByLabelText("Runtime log");
    expect(log.textContent).toBe("loading demo\nllama_model_load: error loading model");
    expect(calls).toHaveLength(1);

    lines = ["serving demo on http://127.0.0.1:40000"];
    await userEvent.setup().click(screen.getByRole("button", { name: "Refresh" }));
    expect(await screen.findByText("serving demo on http://127.0.0.1:40000")).toBeInTheDocument();
    expect(calls).toHaveLength(2);
  });

  it("says where the logs are when the API keeps none (Kubernetes: 501)", async () => {
    const message = "runtime logs are the cluster's here: kubectl logs -n modelserve -l x=y";
    const { fetcher } = fakeFetch({ "GET /servers/*": () => json({ detail: message }, 501) });
    renderWith(<ServerLog serverUuid={failed.server_uuid} />, { fetcher });
    expect(await screen.findByText(message)).toBeInTheDocument();
    expect(screen.queryByRole("button", { name: "Refresh" })).not.toBeInTheDocument();
    expect(screen.queryByRole("alert")).not.toBeInTheDocument();
  });

  it("is on a server's page for admins only, failed servers included", async () => {
    const routes = {
      "GET /servers/*": () => json({ server_uuid: failed.server_uuid, lines: ["boom"] }),
      "GET /keys*": () => json([]),
      "GET /usage*": () => json({ rows: [], requests: 0, prompt_tokens: 0, completion_tokens: 0 }),
    };
    const servers = new Map([[failed.server_uuid, failed]]);
    const admin = fakeFetch(routes);
    const view = renderWith(<ServerDetail uuid={failed.server_uuid} />, { fetcher: admin.fetcher, servers, session: ADMIN });
    expect((await screen.findByLabelText("Runtime log")).textContent).toBe("boom");
    view.unmount();

    const operator = fakeFetch(routes);
    renderWith(<ServerDetail uuid={failed.server_uuid} />, { fetcher: operator.fetcher, servers });
    expect(await screen.findByText("the runtime exited 5 times")).toBeInTheDocument();
    expect(screen.queryByRole("heading", { name: /Runtime log/ })).not.toBeInTheDocument();
    expect(operator.calls.some((c) => c.url.includes("/logs"))).toBe(false);
  });
});
