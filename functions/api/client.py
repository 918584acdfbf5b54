"""A small synchronous client of the public API, for the CLI and scripts.

It speaks plain HTTP with a bearer token, so the same commands work against the
embedded stack and a cluster. Errors carry the API's own status and message.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from modelserve.functions.api.schemas import (
    Key,
    KeyBody,
    Model,
    Models,
    NewKey,
    ServeAccepted,
    ServeBody,
    Server,
    UserOut,
)
from modelserve.shared.hashing import sha256_file

UPLOAD_CHUNK = 1024 * 1024
# Statuses after which waiting for "ready" is pointless.
FINAL = {"ready", "failed", "deleted", "deleting"}


class ApiError(Exception):
    """The API refused or could not be reached; ``status`` is 0 for a network error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status, self.message = status, message


def _detail(response: httpx.Response) -> str:
    try:
        detail: Any = response.json().get("detail", response.text)
    except ValueError:
        return response.text or response.reason_phrase
    if isinstance(detail, list):  # FastAPI's validation errors
        return "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', [])[1:])}: {item.get('msg')}"
            for item in detail
        )
    return str(detail)


class ApiClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, write=None),
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach the API at {self.base_url}: {exc}") from None
        if response.status_code >= 400:
            raise ApiError(response.status_code, _detail(response))
        return response.json()

    def serve(self, body: ServeBody) -> ServeAccepted:
        data = self._call("POST", "/serve", json=body.model_dump(mode="json", exclude_none=True))
        return ServeAccepted.model_validate(data)

    def server(self, server_uuid: uuid.UUID) -> Server:
        return Server.model_validate(self._call("GET", f"/servers/{server_uuid}"))

    def servers(self) -> list[Server]:
        return [Server.model_validate(s) for s in self._call("GET", "/servers")]

    def delete(self, server_uuid: uuid.UUID) -> Server:
        return Server.model_validate(self._call("DELETE", f"/servers/{server_uuid}"))

    def models(self) -> Models:
        return Models.model_validate(self._call("GET", "/models"))

    def create_key(self, body: KeyBody) -> NewKey:
        """A new API key; its plaintext is in the answer only, never again."""
        data = self._call("POST", "/keys", json=body.model_dump(mode="json", exclude_none=True))
        return NewKey.model_validate(data)

    def keys(self, owner: str | None = None, server_uuid: uuid.UUID | None = None) -> list[Key]:
        params = {
            k: str(v) for k, v in (("owner", owner), ("server_uuid", server_uuid)) if v is not None
        }
        return [Key.model_validate(k) for k in self._call("GET", "/keys", params=params)]

    def revoke_key(self, key_id: str) -> Key:
        return Key.model_validate(self._call("DELETE", f"/keys/{key_id}"))

    def users(self) -> list[UserOut]:
        return [UserOut.model_validate(u) for u in self._call("GET", "/users")]

    def set_disabled(self, username: str, disabled: bool) -> UserOut:
        data = self._call("PATCH", f"/users/{username}", json={"disabled": disabled})
        return UserOut.model_validate(data)

    def wait(
        self,
        server_uuid: uuid.UUID,
        on_change: Callable[[Server], None],
        *,
        timeout: float = 600.0,
        poll: float = 0.5,
    ) -> Server:
        """Poll until the server is ready or can no longer become ready."""
        deadline, seen = time.monotonic() + timeout, None
        while True:
            server = self.server(server_uuid)
            key = (server.status, server.progress, server.status_message)
            if key != seen:
                seen = key
                on_change(server)
            if server.status in FINAL:
                return server
            if time.monotonic() > deadline:
                raise ApiError(
                    0, f"server {server_uuid} is still {server.status} after {timeout:.0f} s"
                )
            time.sleep(poll)

    def push(self, path: Path, name: str, progress: Callable[[int], None] | None = None) -> Model:
        """Upload a GGUF file as model ``name``; ``progress`` gets each chunk's size."""
        size = path.stat().st_size

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as handle:
                while chunk := handle.read(UPLOAD_CHUNK):
                    yield chunk
                    if progress is not None:
                        progress(len(chunk))

        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
            "X-Content-SHA256": sha256_file(path),
        }
        return Model.model_validate(
            self._call(
                "PUT",
                f"/models/{name}",
                content=chunks(),
                headers=headers,
                timeout=httpx.Timeout(30.0, read=None, write=None),
            )
        )
