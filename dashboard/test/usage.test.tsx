import { screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import type { Usage } from "../src/api";
import { perMinute, ServerUsage } from "../src/components/ServerUsage";
import { fakeFetch, json, renderWith, server } from "./helpers";

const NOW = new Date("2026-12-01T12:30:20Z");
const ready = server();

function usage(): Usage {
  const row = (minute: string, key_id: string, prompt: number, completion: number) => ({
    minute,
    server_uuid: ready.server_uuid,
    username: "alice",
    key_id,
    requests: 1,
    prompt_tokens: prompt,
    completion_tokens: completion,
  });
  const rows = [
    row("2026-12-01T12:30:00Z", "0123456789ab", 10, 5),
    row("2026-12-01T12:29:00Z", "0123456789ab", 20, 10),
    row("2026-12-01T12:29:00Z", "", 1, 2),
  ];
  return { rows, requests: 3, prompt_tokens: 31, completion_tokens: 17 };
}

describe("ServerUsage", () => {
  it("puts each minute's tokens in its bar, newest on the right", () => {
    const bars = perMinute(usage(), NOW);
    expect(bars).toHaveLength(60);
    expect(bars[59]).toBe(15);
    expect(bars[58]).toBe(33);
    expect(bars.slice(0, 58).every((b) => b === 0)).toBe(true);
  });

  it("asks for the server's last hour and shows the chart and the totals per key", async () => {
    let answer = usage();
    const { fetcher, calls } = fakeFetch({ "GET /usage?*": () => json(answer) });
    renderWith(<ServerUsage serverUuid={ready.server_uuid} now={() => NOW} />, { fetcher });
    const table = await screen.findByRole("table", { name: "Usage per key" });
    expect(calls[0].url).toBe(
      `/usage?server_uuid=${ready.server_uuid}&since=${encodeURIComponent("2026-12-01T11:30:20.000Z")}`,
    );
    const rows = within(table).getAllByRole("row").slice(1);
    expect(rows.map((r) => r.textContent)).toEqual(["0123456789ab23015", "token (alice)112"]);
    expect(screen.getByText("3 requests, 31 prompt and 17 completion tokens")).toBeInTheDocument();
    const chart = screen.getByRole("img", { name: "Tokens per minute" });
    expect(chart.querySelectorAll("rect")).toHaveLength(2);

    answer = { rows: [], requests: 0, prompt_tokens: 0, completion_tokens: 0 };
    await userEvent.setup().click(screen.getByRole("button", { name: "Refresh" }));
    expect(await screen.findByText("0 requests, 0 prompt and 0 completion tokens")).toBeInTheDocument();
    expect(screen.queryByRole("table")).not.toBeInTheDocument();
  });
});
