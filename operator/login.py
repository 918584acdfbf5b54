"""kopf credentials from a kubeconfig file (client certificate, verified CA)."""

from __future__ import annotations

from pathlib import Path

import kopf
import yaml


def connection_from_kubeconfig(path: Path) -> kopf.ConnectionInfo:
    config = yaml.safe_load(path.read_text())
    context_name = config["current-context"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    return kopf.ConnectionInfo(
        server=cluster["server"],
        ca_path=cluster.get("certificate-authority"),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        certificate_path=user.get("client-certificate"),
        private_key_path=user.get("client-key"),
        token=user.get("token"),
        default_namespace=context.get("namespace"),
    )
