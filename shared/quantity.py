"""Kubernetes resource quantities ("8Gi", "500m", "1.5") as numbers.

Kept here rather than borrowed from the kubernetes client: the runtime image and
the pipeline functions do not install that client.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SUFFIXES: dict[str, int | Decimal] = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}
_QUANTITY = re.compile(r"^([+]?[0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|)$")


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a quantity; ValueError names the bad value."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"quantity {value!r} must not be negative")
        return Decimal(str(value))
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        raise ValueError(f"{value!r} is not a resource quantity (e.g. 512Mi, 8Gi, 500m, 2)")
    number, suffix = match.groups()
    try:
        return Decimal(number) * Decimal(_SUFFIXES[suffix])
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a resource quantity") from None


def memory_bytes(value: str | int | float) -> int:
    return int(parse_quantity(value))


def cpu_cores(value: str | int | float) -> float:
    return float(parse_quantity(value))


def format_bytes(size: int | float) -> str:
    """Human binary units for messages: 1536 MiB -> '1.5 GiB'."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
