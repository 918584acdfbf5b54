"""What a KServe InferenceService's status means for a ModelServe and its server record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelserve.shared.lifecycle import ServerStatus

READY = "Ready"


@dataclass(frozen=True)
class Observed:
    phase: str  # Pending, Loading, Ready, Failed
    url: str | None = None
    message: str | None = None
    revision: str | None = None
    model_state: str | None = None
    conditions: list[dict[str, Any]] = field(default_factory=list)
    # Where the gateway (inside the cluster) reaches the predictor: KServe's
    # ``status.address.url`` (the cluster-local Service). ``url`` is the public
    # host of KServe's ingress domain, which only an ingress gateway answers.
    internal_url: str | None = None

    @property
    def server_status(self) -> ServerStatus:
        # An InferenceService exists, so the server is loading until it is ready or failed.
        return {"Ready": ServerStatus.READY, "Failed": ServerStatus.FAILED}.get(
            self.phase, ServerStatus.LOADING
        )


def observe(status: dict[str, Any] | None) -> Observed:
    """Read KServe's status: the Ready condition, url, revision, model state, failure info."""
    status = status or {}
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    ready = next((c for c in conditions if c.get("type") == READY), None)
    model_status = status.get("modelStatus") or {}
    states = model_status.get("states") or {}
    failure = model_status.get("lastFailureInfo") or {}
    predictor = (status.get("components") or {}).get("predictor") or {}
    revision = predictor.get("latestReadyRevision") or predictor.get("latestCreatedRevision")
    model_state = states.get("activeModelState") or states.get("targetModelState")
    url = status.get("url") or (status.get("address") or {}).get("url")
    internal = (status.get("address") or {}).get("url") or url
    ours = [
        {k: c[k] for k in ("type", "status", "reason", "message", "lastTransitionTime") if k in c}
        for c in conditions
    ]
    if ready is not None and ready.get("status") == "True":
        return Observed("Ready", url, ready.get("message"), revision, model_state, ours, internal)
    if failure or model_state == "FailedToLoad":
        message = failure.get("message") or failure.get("reason") or "the model failed to load"
        return Observed("Failed", url, message, revision, model_state, ours, internal)
    if ready is not None and ready.get("status") == "False" and ready.get("reason"):
        return Observed(
            "Loading",
            url,
            ready.get("message") or ready["reason"],
            revision,
            model_state,
            ours,
            internal,
        )
    if not conditions:
        return Observed("Pending", url, "waiting for KServe", revision, model_state, ours, internal)
    return Observed(
        "Loading",
        url,
        ready.get("message") if ready else None,
        revision,
        model_state,
        ours,
        internal,
    )
