"""A loopback TCP proxy that can cut every open connection on demand."""

from __future__ import annotations

import socket
import struct

import attrs
import trio


@attrs.define(eq=False)
class _Link:
    client: trio.SocketStream
    upstream: trio.SocketStream | None = None
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)


def _reset_on_close(stream: trio.SocketStream) -> None:
    # SO_LINGER 0: close() sends an RST, the harshest ordinary network fault.
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@attrs.define(eq=False)
class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``.

    Start it with ``port = await nursery.start(proxy.serve)``; ``cut()`` resets
    every connection open at that moment (new ones are accepted as usual).
    """

    target_port: int
    port: int = 0
    accepted: int = 0
    cuts: int = 0
    _links: set[_Link] = attrs.Factory(set)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self.port)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, client: trio.SocketStream) -> None:
        link = _Link(client=client)
        self.accepted += 1
        self._links.add(link)
        try:
            with link.scope:
                link.upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, client, link.upstream, nursery.cancel_scope)
                    nursery.start_soon(self._pump, link.upstream, client, nursery.cancel_scope)
        finally:
            self._links.discard(link)
            # Closed without a checkpoint: a cancelled await here would skip the other.
            client.socket.close()
            if link.upstream is not None:
                link.upstream.socket.close()

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            async for data in source:
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        # Either side closing ends the link both ways.
        scope.cancel()

    def cut(self) -> int:
        """Reset every open connection (both sides); returns how many were cut."""
        links = list(self._links)
        for link in links:
            _reset_on_close(link.client)
            if link.upstream is not None:
                _reset_on_close(link.upstream)
            link.scope.cancel()
        self.cuts += 1
        return len(links)
