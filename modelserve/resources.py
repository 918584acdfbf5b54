"""Files the embedded stack reads at run time: the pipeline's Trigger manifests and
the built dashboard.

They travel inside the package (``modelserve/config`` and ``modelserve/web`` are
links to ``config/`` and ``dashboard/dist`` in the checkout, copies in a wheel),
so an installed ``modelserve up`` never looks for a checkout.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The Kubernetes manifests (``config/``), whose pipeline Triggers the broker reads."""
    return HERE / "config"


def dashboard_dir() -> Path | None:
    """The built dashboard, or None when it was not built (the API then says so at /)."""
    web = HERE / "web"
    return web if (web / "index.html").is_file() else None
