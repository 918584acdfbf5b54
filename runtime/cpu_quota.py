"""How many CPUs this process may really use: the cgroup's quota, not the node's cores.

In a pod with ``resources.limits.cpu: 2`` on a 64-core node, ``os.cpu_count()``
says 64; llama.cpp would start 64 threads that the kernel throttles to two
cores' worth of time, and each decode step waits for the slowest of them. The
quota is in ``cpu.max`` (cgroup v2: ``"<quota> <period>"`` or ``"max ..."``)
or ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (v1: quota -1 means none),
under the process's own cgroup (``/proc/self/cgroup``) or the mount's root (a
container's cgroup namespace shows its own cgroup as the root).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _own_paths(self_cgroup: Path) -> tuple[str | None, str | None]:
    """The process's cgroup path in the v2 hierarchy and in v1's cpu controller."""
    v2 = v1 = None
    for line in (_read(self_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _candidates(base: Path, own: str | None) -> list[Path]:
    """``base`` under the process's own path first, then ``base`` itself."""
    found = []
    if own and own != "/":
        found.append(base / own.lstrip("/"))
    found.append(base)
    return found


def _v2_quota(text: str | None) -> float | None:
    if not text:
        return None
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_quota(quota_text: str | None, period_text: str | None) -> float | None:
    try:
        quota, period = int(quota_text or ""), int(period_text or "")
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cgroup_cpu_limit(root: Path | None = None, self_cgroup: Path | None = None) -> float | None:
    """The CPU quota in cores (e.g. 1.5), or None when no quota is set."""
    root = root or CGROUP_ROOT
    v2, v1 = _own_paths(self_cgroup or SELF_CGROUP)
    for directory in _candidates(root, v2):
        quota = _v2_quota(_read(directory / "cpu.max"))
        if quota is not None:
            return quota
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        for directory in _candidates(root / mount, v1):
            quota = _v1_quota(
                _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
            )
            if quota is not None:
                return quota
    return None


def available_cpus(root: Path | None = None, self_cgroup: Path | None = None) -> int:
    """Whole CPUs this process may use: the quota rounded up, at most the CPUs it may
    run on (its affinity, else ``os.cpu_count()``), at least one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root, self_cgroup)
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(cores, 1)
