"""Read Knative Broker and Trigger manifests (config/pipeline/) into delivery rules."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_DURATION = re.compile(r"^P(?:T(?:(?P<h>[0-9.]+)H)?(?:(?P<m>[0-9.]+)M)?(?:(?P<s>[0-9.]+)S)?)$")


def parse_duration(text: str) -> float:
    """ISO 8601 durations as Knative writes them (PT0.5S, PT1M): seconds."""
    match = _DURATION.match(text)
    if match is None or not any(match.groupdict().values()):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    parts: dict[str, float] = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    return parts["h"] * 3600 + parts["m"] * 60 + parts["s"]


@dataclass(frozen=True)
class Delivery:
    retry: int = 0
    backoff_policy: str = "exponential"
    backoff_delay: float = 0.2
    dead_letter: str | None = None

    def delay(self, attempt: int) -> float:
        """Knative's backoff: delay * 2^(attempt-1) (exponential) or delay * attempt (linear)."""
        if self.backoff_policy == "linear":
            return self.backoff_delay * attempt
        return self.backoff_delay * 2.0 ** (attempt - 1)

    @classmethod
    def parse(cls, spec: dict[str, Any] | None, default: Delivery | None = None) -> Delivery:
        base = default or cls()
        if not spec:
            return base
        sink = ((spec.get("deadLetterSink") or {}).get("ref") or {}).get("name") or (
            (spec.get("deadLetterSink") or {}).get("uri")
        )
        return cls(
            retry=int(spec.get("retry", base.retry)),
            backoff_policy=str(spec.get("backoffPolicy", base.backoff_policy)),
            backoff_delay=parse_duration(spec["backoffDelay"])
            if "backoffDelay" in spec
            else base.backoff_delay,
            dead_letter=sink or base.dead_letter,
        )


@dataclass(frozen=True)
class Trigger:
    name: str
    broker: str
    subscriber: str  # a Service name (resolved to a URL by the broker) or a URI
    attributes: dict[str, str] = field(default_factory=dict)
    delivery: Delivery = Delivery()

    def matches(self, attributes: dict[str, Any]) -> bool:
        """Knative's exact-match attribute filter."""
        return all(str(attributes.get(k)) == v for k, v in self.attributes.items())


PIPELINE_BROKER = "modelserve"


def pipeline_rules(config_dir: Path) -> list[Trigger]:
    """The serve pipeline's Broker and Triggers from ``<config_dir>/pipeline/``."""
    folder = config_dir / "pipeline"
    return load([folder / "broker.yaml", folder / "triggers.yaml"], PIPELINE_BROKER)


def load(paths: list[Path], broker: str) -> list[Trigger]:
    """Every Trigger of ``broker`` in the manifests, with the Broker's delivery as default."""
    documents = [d for p in paths for d in yaml.safe_load_all(p.read_text()) if d]
    default = Delivery()
    for doc in documents:
        if doc.get("kind") == "Broker" and doc["metadata"]["name"] == broker:
            default = Delivery.parse(doc.get("spec", {}).get("delivery"))
    triggers = []
    for doc in documents:
        if doc.get("kind") != "Trigger" or doc["spec"].get("broker") != broker:
            continue
        spec = doc["spec"]
        subscriber = spec["subscriber"]
        target = (subscriber.get("ref") or {}).get("name") or subscriber.get("uri")
        triggers.append(
            Trigger(
                name=doc["metadata"]["name"],
                broker=broker,
                subscriber=str(target),
                attributes={
                    k: str(v)
                    for k, v in ((spec.get("filter") or {}).get("attributes") or {}).items()
                },
                delivery=Delivery.parse(spec.get("delivery"), default),
            )
        )
    if not triggers:
        raise ValueError(f"no Trigger for broker {broker!r} in {', '.join(map(str, paths))}")
    return triggers
