"""How many requests one runtime decodes together, known to every component.

The runtime sizes its batch from this number and the KServe builder tells
Knative the same number as the container's concurrency, so a replica is added
exactly when the slots are full. Both sides import it from here (runtime and
kserve may import only shared).
"""

from __future__ import annotations

from collections.abc import Mapping

CPU_SLOTS = 4
"""On CPU a decode step costs about the same for 1 or 4 rows; more mostly adds latency."""

GPU_SLOTS = 16
"""With layers offloaded a step is cheap per row, so more requests share it."""

MAX_SEQUENCES = 256
"""llama.cpp's limit on sequences in one context (slots plus cached prefixes)."""


def default_n_parallel(offloaded: bool) -> int:
    """Slots when none are configured: more where the GPU does the work."""
    return GPU_SLOTS if offloaded else CPU_SLOTS


def n_parallel_of(runtime_args: Mapping[str, object], *, gpus: int) -> int:
    """The slots a runtime started with these arguments will have."""
    value = runtime_args.get("n_parallel")
    if value is not None and str(value).strip():
        return int(str(value))
    layers = runtime_args.get("n_gpu_layers")
    offloaded = gpus > 0 if layers is None else int(str(layers)) != 0
    return default_n_parallel(offloaded)
