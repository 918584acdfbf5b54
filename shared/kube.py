"""A Kubernetes API client from settings: a kubeconfig file, or in-cluster credentials."""

from __future__ import annotations

from typing import Any

from modelserve.shared.settings import Settings


def api_client(settings: Settings) -> Any:
    from kubernetes import client, config

    if settings.kubeconfig is not None:
        return config.new_client_from_config(config_file=str(settings.kubeconfig))
    config.load_incluster_config()
    return client.ApiClient()
