"""A stand-in for the old quantisation service's catalog API, on loopback.

``GET /download-url/<model>`` answers with a real MinIO presigned URL (signed by
the given client, so it can point through a proxy) and what is known of the file;
``expires_in`` can be set to lie about the URL's life, as a misconfigured service
would.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from minio import Minio

from support.loopback_http import LoopbackServer, QuietHandler


@dataclass
class CatalogServer(LoopbackServer):
    signer: Minio
    bucket: str
    models: dict[str, bytes]
    url_lifetime: dt.timedelta
    claimed_expires_in: int = 3600
    signed: list[str] = field(default_factory=list)

    def start(self) -> CatalogServer:
        catalog = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                name = self.path.removeprefix("/download-url/")
                if not self.path.startswith("/download-url/") or name not in catalog.models:
                    self.send_response(404)
                    self.end_headers()
                    return
                catalog.signed.append(name)
                data = catalog.models[name]
                body: dict[str, Any] = {
                    "model_id": name,
                    "download_url": catalog.signer.presigned_get_object(
                        catalog.bucket, f"{name}.gguf", expires=catalog.url_lifetime
                    ),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "quantization": "F32",
                    "expires_in": catalog.claimed_expires_in,
                }
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.serve(Handler)
        return self
