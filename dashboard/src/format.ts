// How numbers, sizes and times read on every page.

export function bytes(value: number | null | undefined): string {
  if (value === null || value === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let n = value;
  let unit = 0;
  while (n >= 1000 && unit < units.length - 1) {
    n /= 1000;
    unit += 1;
  }
  return `${n.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function megabytes(value: number | null | undefined): string {
  return value === null || value === undefined ? "–" : `${Math.round(value)} MB`;
}

export function percent(value: number | null | undefined): string {
  return value === null || value === undefined ? "–" : `${value.toFixed(0)} %`;
}

export function time(value: string | null | undefined, now: Date = new Date()): string {
  if (!value) return "–";
  const at = new Date(value);
  const seconds = Math.round((now.getTime() - at.getTime()) / 1000);
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return at.toLocaleDateString();
}

export function shortId(uuid: string | null | undefined): string {
  return uuid ? uuid.slice(0, 8) : "–";
}

export function count(value: number | null | undefined): string {
  if (value === null || value === undefined) return "–";
  if (value >= 1e9) return `${(value / 1e9).toFixed(1)} B`;
  if (value >= 1e6) return `${(value / 1e6).toFixed(1)} M`;
  if (value >= 1e3) return `${(value / 1e3).toFixed(1)} K`;
  return String(value);
}
