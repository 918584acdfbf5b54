"""The real API server with the ModelServe CRD and KServe's InferenceService CRD installed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client, config

from support.crds import install
from support.kube import KubeApi
from support.procs import MissingService
from support.services import unavailable
from support.toolchain import ROOT, go_module


@pytest.fixture(scope="session")
def api(kube_api: KubeApi) -> Iterator[client.ApiClient]:
    try:
        kserve = go_module("github.com/kserve/kserve", "KSERVE_VERSION")
    except MissingService as exc:
        unavailable(str(exc))
    api_client = config.new_client_from_config(config_file=str(kube_api.kubeconfig))
    install(api_client, ROOT / "config" / "crd" / "modelserve.yaml")
    install(
        api_client, kserve / "config" / "crd" / "full" / "serving.kserve.io_inferenceservices.yaml"
    )
    yield api_client
    api_client.close()
