"""A TCP proxy on loopback that can drop a connection mid-transfer (fault injection)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class CuttingProxy:
    """Forwards to ``upstream``; the first response larger than ``cut_after`` bytes is
    cut there, after stalling ``stall`` seconds. Requests are recorded."""

    upstream_host: str
    upstream_port: int
    cut_after: int
    stall: float
    requests: list[bytes] = field(default_factory=list)
    cuts: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        # Server.close() leaves running handlers alone (Python 3.11): end them too.
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        up_r, up_w = await asyncio.open_connection(self.upstream_host, self.upstream_port)

        async def requests() -> None:
            while data := await client_r.read(65536):
                self.requests.append(data)
                up_w.write(data)
                await up_w.drain()

        async def responses() -> None:
            sent = 0
            while data := await up_r.read(65536):
                if self.cuts == 0 and sent + len(data) > self.cut_after:
                    client_w.write(data[: self.cut_after - sent])
                    await client_w.drain()
                    self.cuts += 1
                    await asyncio.sleep(self.stall)
                    return
                sent += len(data)
                client_w.write(data)
                await client_w.drain()

        forward = asyncio.create_task(requests())
        try:
            await responses()
        finally:
            forward.cancel()
            for writer in (client_w, up_w):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
