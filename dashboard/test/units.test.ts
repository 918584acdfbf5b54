import { describe, expect, it } from "vitest";
import { bytes, time } from "../src/format";
import { href, parseRoute } from "../src/route";
import { isExpired, loadSession, readToken, saveSession } from "../src/session";
import { parseSse } from "../src/sse";
import { violationsByField } from "../src/pages/Serve";
import { makeToken } from "./helpers";

describe("parseSse", () => {
  it("keeps an event split across chunks until it is complete", () => {
    const first = parseSse('event: server\ndata: {"a":');
    expect(first.events).toEqual([]);
    const second = parseSse(first.rest + '1}\n\nevent: server\ndata: {"b":2}\n\n: keep-alive\n\n');
    expect(second.events).toEqual([
      { event: "server", data: '{"a":1}' },
      { event: "server", data: '{"b":2}' },
    ]);
    expect(second.rest).toBe("");
  });

  it("reads OpenAI-style data-only events and CRLF line ends", () => {
    const { events } = parseSse("data: one\r\n\r\ndata: [DONE]\r\n\r\n");
    expect(events.map((e) => [e.event, e.data])).toEqual([
      ["message", "one"],
      ["message", "[DONE]"],
    ]);
  });
});

describe("session", () => {
  it("reads subject, role and expiry from a JWT and refuses anything else", () => {
    const token = makeToken({ sub: "bob", role: "viewer", exp: 2000 });
    expect(readToken(token)).toMatchObject({ subject: "bob", role: "viewer", expiresAt: 2_000_000 });
    expect(readToken("not-a-jwt")).toBeNull();
    expect(readToken("a.!!!.c")).toBeNull();
  });

  it("drops an expired token from storage", () => {
    const expired = readToken(makeToken({ sub: "bob", role: "viewer", exp: 1 }))!;
    expect(isExpired(expired)).toBe(true);
    saveSession(expired);
    expect(loadSession()).toBeNull();
    expect(sessionStorage.length).toBe(0);
  });
});

describe("routes", () => {
  it("round-trips every page", () => {
    const uuid = "11111111-2222-4333-8444-555555555555";
    for (const route of [
      { page: "servers" as const },
      { page: "server" as const, uuid },
      { page: "chat" as const, uuid },
      { page: "serve" as const, model: "demo" },
      { page: "models" as const },
    ]) {
      expect(parseRoute(href(route))).toEqual(route);
    }
    expect(parseRoute("#/servers/not-a-uuid")).toEqual({ page: "servers" });
  });
});

describe("format", () => {
  it("prints sizes and relative times", () => {
    expect(bytes(469_500)).toBe("469.5 KB");
    expect(bytes(null)).toBe("–");
    const now = new Date("2026-11-22T10:10:00Z");
    expect(time("2026-11-22T10:00:00Z", now)).toBe("10 min ago");
    expect(time(null, now)).toBe("–");
  });
});

describe("violationsByField", () => {
  it("puts each contract violation next to its form field", () => {
    expect(
      violationsByField([
        "replicas: 10 replicas requested; the limit is 4",
        "cpu: 16 cores per replica requested; the limit is 8",
        "context_length: 99999 tokens requested; the limit is 32768",
      ]),
    ).toEqual({
      replicas: ["10 replicas requested; the limit is 4"],
      cpu: ["16 cores per replica requested; the limit is 8"],
      n_ctx: ["99999 tokens requested; the limit is 32768"],
    });
  });
});

import { CHARTS, chartData } from "../src/components/ServerCharts";

describe("chartData", () => {
  it("scales each line and keeps gaps as null", () => {
    const ttft = CHARTS.find((c) => c.title === "Time to first token")!;
    const data = chartData(
      { step_seconds: 5, t: [10, 15], series: { ttft_p50_seconds: [0.02, null], ttft_p95_seconds: [0.05, 0.1] } },
      ttft,
    );
    expect(data).toEqual([
      [10, 15],
      [20, null],
      [50, 100],
    ]);
  });
});
