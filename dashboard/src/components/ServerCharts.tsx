import { useEffect, useRef, useState } from "react";
import type uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { ApiError, type ServerSeries } from "../api";
import { useApp } from "../context";

/** One chart: which series of `GET /servers/{uuid}/series` it draws, and how. */
export interface ChartSpec {
  title: string;
  unit: string;
  lines: { field: string; label: string; color: string; scale?: number }[];
}

export const CHARTS: ChartSpec[] = [
  { title: "Tokens per second", unit: "tokens/s", lines: [{ field: "tokens_per_second", label: "generated", color: "#2563eb" }] },
  {
    title: "Time to first token",
    unit: "ms",
    lines: [
      { field: "ttft_p50_seconds", label: "p50", color: "#16a34a", scale: 1000 },
      { field: "ttft_p95_seconds", label: "p95", color: "#dc2626", scale: 1000 },
    ],
  },
  {
    title: "Inter-token latency",
    unit: "ms",
    lines: [
      { field: "inter_token_p50_seconds", label: "p50", color: "#16a34a", scale: 1000 },
      { field: "inter_token_p95_seconds", label: "p95", color: "#dc2626", scale: 1000 },
    ],
  },
  {
    title: "Slots busy / requests waiting",
    unit: "",
    lines: [
      { field: "slots_busy", label: "busy", color: "#2563eb" },
      { field: "slots_total", label: "slots", color: "#94a3b8" },
      { field: "requests_waiting", label: "waiting", color: "#ea580c" },
    ],
  },
  { title: "Memory", unit: "MB", lines: [{ field: "memory_mb", label: "resident", color: "#7c3aed" }] },
  { title: "CPU", unit: "%", lines: [{ field: "cpu_percent", label: "cpu", color: "#0891b2" }] },
];

/** The uPlot data of one chart: x in seconds, each line scaled, gaps kept as null. */
export function chartData(series: ServerSeries, spec: ChartSpec): uPlot.AlignedData {
  return [
    series.t,
    ...spec.lines.map((line) => (series.series[line.field] ?? []).map((v) => (v === null ? null : v * (line.scale ?? 1)))),
  ];
}

function Chart({ spec, series }: { spec: ChartSpec; series: ServerSeries }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const data = chartData(series, spec);

  useEffect(() => {
    const target = box.current;
    if (!target) return;
    let gone = false;
    const options: uPlot.Options = {
      width: Math.max(240, target.clientWidth),
      height: 160,
      legend: { show: true },
      series: [{}, ...spec.lines.map((l) => ({ label: l.label, stroke: l.color, width: 1.5, spanGaps: false }))],
      axes: [{}, { label: spec.unit, size: 56 }],
    };
    // Loaded with the first chart: the servers list and the other pages never pay for it.
    void import("uplot").then(({ default: UPlot }) => {
      if (!gone) plot.current = new UPlot(options, data, target);
    });
    return () => {
      gone = true;
      plot.current?.destroy();
      plot.current = null;
    };
    // The chart is made once per spec; new points go through setData below.
  }, [spec]);

  useEffect(() => {
    plot.current?.setData(data);
  });

  const first = spec.lines[0];
  const last = (series.series[first.field] ?? [])
    .filter((v): v is number => v !== null)
    .map((v) => v * (first.scale ?? 1))
    .at(-1);
  return (
    <figure className="chart" data-chart={spec.lines[0].field} data-points={series.t.length}>
      <figcaption>
        {spec.title}
        {last !== undefined && (
          <span className="muted"> · {last.toFixed(last < 10 ? 2 : 0)} {spec.unit}</span>
        )}
      </figcaption>
      <div ref={box} />
    </figure>
  );
}

/** A server's charts over the last hour, refreshed every few seconds. */
export function ServerCharts({ serverUuid, every = 5000 }: { serverUuid: string; every?: number }) {
  const { api } = useApp();
  const [series, setSeries] = useState<ServerSeries | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    const abort = new AbortController();
    const load = () =>
      api
        .series(serverUuid, 60, abort.signal)
        .then((s) => {
          setSeries(s);
          setError(null);
        })
        .catch((e: unknown) => {
          if ((e as Error).name !== "AbortError") setError(e instanceof ApiError ? e.message : String(e));
        });
    void load();
    const timer = setInterval(load, every);
    return () => {
      clearInterval(timer);
      abort.abort();
    };
  }, [api, serverUuid, every]);

  return (
    <div className="card">
      <h3>Last hour</h3>
      {error && <p className="muted">{error}</p>}
      {series === null ? (
        !error && <p className="muted">Loading charts…</p>
      ) : series.t.length === 0 ? (
        <p className="muted">No samples yet: the charts fill while the server runs.</p>
      ) : (
        <div className="charts">
          {CHARTS.map((spec) => (
            <Chart key={spec.title} spec={spec} series={series} />
          ))}
        </div>
      )}
    </div>
  );
}

/** A small line of tokens/s over the last 15 minutes, for the servers list. */
export function Sparkline({ serverUuid, every = 10000 }: { serverUuid: string; every?: number }) {
  const { api } = useApp();
  const [values, setValues] = useState<number[]>([]);
  useEffect(() => {
    const abort = new AbortController();
    const load = () =>
      api
        .series(serverUuid, 15, abort.signal)
        .then((s) => setValues((s.series.tokens_per_second ?? []).map((v) => v ?? 0)))
        .catch(() => setValues([]));
    void load();
    const timer = setInterval(load, every);
    return () => {
      clearInterval(timer);
      abort.abort();
    };
  }, [api, serverUuid, every]);
  if (values.length < 2) return <span className="muted">–</span>;
  const top = Math.max(1e-9, ...values);
  const points = values.map((v, i) => `${(i / (values.length - 1)) * 100},${20 - (v / top) * 18}`).join(" ");
  return (
    <svg className="sparkline" viewBox="0 0 100 20" preserveAspectRatio="none" role="img" aria-label="Tokens per second, last 15 minutes" data-points={values.length}>
      <polyline points={points} fill="none" stroke="#2563eb" strokeWidth="1.5" vectorEffect="non-scaling-stroke" />
    </svg>
  );
}
