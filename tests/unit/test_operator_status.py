"""Reading a KServe InferenceService status into ModelServe phases and record statuses."""

from __future__ import annotations

from modelserve.operator.status import observe
from modelserve.shared.lifecycle import ServerStatus


def test_no_status_yet_is_pending_and_the_server_is_loading() -> None:
    seen = observe(None)
    assert (seen.phase, seen.server_status) == ("Pending", ServerStatus.LOADING)


def test_ready() -> None:
    seen = observe(
        {
            "url": "http://ms-1.ns.example.com",
            "conditions": [
                {"type": "PredictorReady", "status": "True"},
                {"type": "Ready", "status": "True"},
            ],
            "components": {
                "predictor": {"latestCreatedRevision": "r-2", "latestReadyRevision": "r-1"}
            },
            "modelStatus": {"states": {"activeModelState": "Loaded"}},
        }
    )
    assert (seen.phase, seen.server_status) == ("Ready", ServerStatus.READY)
    assert (seen.url, seen.revision, seen.model_state) == (
        "http://ms-1.ns.example.com",
        "r-1",
        "Loaded",
    )
    assert [c["type"] for c in seen.conditions] == ["PredictorReady", "Ready"]


def test_the_gateway_dials_the_cluster_local_address_not_the_public_url() -> None:
    """KServe's ``url`` is its ingress domain's host (answered by an ingress gateway
    only); the gateway runs in the cluster and reaches the predictor's Service."""
    seen = observe(
        {
            "url": "http://ms-1-ns.example.com",
            "address": {"url": "http://ms-1-predictor.ns.svc.cluster.local"},
            "conditions": [{"type": "Ready", "status": "True"}],
        }
    )
    assert seen.url == "http://ms-1-ns.example.com"
    assert seen.internal_url == "http://ms-1-predictor.ns.svc.cluster.local"
    # Without an address (older status writers), the url is all there is.
    assert observe({"url": "http://x", "conditions": []}).internal_url == "http://x"


def test_failure_info_wins_over_a_false_ready() -> None:
    seen = observe(
        {
            "conditions": [{"type": "Ready", "status": "False", "reason": "RevisionFailed"}],
            "modelStatus": {
                "states": {"targetModelState": "FailedToLoad"},
                "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "sha256 mismatch"},
            },
        }
    )
    assert (seen.phase, seen.server_status, seen.message) == (
        "Failed",
        ServerStatus.FAILED,
        "sha256 mismatch",
    )


def test_not_ready_yet_is_loading_with_the_reason() -> None:
    seen = observe(
        {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "RevisionMissing",
                    "message": "pulling image",
                }
            ]
        }
    )
    assert (seen.phase, seen.server_status, seen.message) == (
        "Loading",
        ServerStatus.LOADING,
        "pulling image",
    )
