const TONE: Record<string, string> = {
  ready: "good",
  failed: "bad",
  deleted: "muted",
  deleting: "muted",
  idle: "muted",
};

export function StatusBadge({ status, progress }: { status: string; progress?: number | null }) {
  const tone = TONE[status] ?? "busy";
  const busy = tone === "busy";
  return (
    <span className={`badge badge-${tone}`} data-status={status}>
      {busy && <span className="dot" aria-hidden="true" />}
      {status}
      {busy && progress !== null && progress !== undefined && progress < 100 && (
        <span className="badge-progress"> {progress.toFixed(0)}%</span>
      )}
    </span>
  );
}
