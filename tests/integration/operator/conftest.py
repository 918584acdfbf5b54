"""The real cluster with the ModelServe CRD, KServe's InferenceService CRD and config/'s RBAC."""

from __future__ import annotations

import pytest
from kubernetes import client


@pytest.fixture(scope="session")
def api(modelserve_crds: client.ApiClient, config_rbac: None) -> client.ApiClient:
    """The cluster admin's client; the operator itself runs as its ServiceAccount."""
    return modelserve_crds
