"""The web remote's HTTP protocol: uvicorn's h11 protocol plus the request deadline uvicorn does not have.

uvicorn times out idle keep-alive connections only (`timeout_keep_alive`, reset by every byte received); a
request that is still arriving is never timed out (uvicorn issue #157, "--timeout-request-start", open). So
300 connections that send a request line and one header and stop held the server's whole
`limit_concurrency`, and every later request got 503 for as long as they stayed open. Here:

- a request must arrive whole, headers and body, within `request_s` of its connection opening (or of the
  previous response, on a keep-alive connection), or its connection is closed;
- at most `max_incomplete` connections may be part-way through a request at once: a new connection closes
  the one that has waited longest. A well-formed request arrives in one go (milliseconds), so it is never
  the oldest, and slow ones hold at most `max_incomplete` of the `limit_concurrency` places.

Everything runs on the server's event loop; a request that has arrived (or a WebSocket, once upgraded) is
no longer watched, so a long preview stream or WebSocket is never cut.
"""

from __future__ import annotations

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

REQUEST_S = 10.0  # a phone on a venue's Wi-Fi sends a request of this remote's size in well under a second
MAX_INCOMPLETE = 64  # uvicorn's limit_concurrency (256 here) keeps the rest for requests that have arrived
_ARRIVING = (h11.IDLE, h11.SEND_BODY)  # the client's h11 states while its request is still coming


def deadline_protocol(request_s: float = REQUEST_S, max_incomplete: int = MAX_INCOMPLETE,
                      counters: dict | None = None) -> type[H11Protocol]:
    """An H11Protocol class for one server (uvicorn.Config(http=...)); `counters` gets "closed_slow" (past
    the deadline) and "closed_for_room" (the oldest of too many incomplete requests)."""
    incomplete: dict[H11Protocol, None] = {}  # connections mid-request, oldest first
    counters = counters if counters is not None else {}
    counters.setdefault("closed_slow", 0)
    counters.setdefault("closed_for_room", 0)

    class DeadlineH11(H11Protocol):
        _deadline = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arriving()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._deadline is not None and self.conn.their_state not in _ARRIVING:
                self._arrived()

        def handle_websocket_upgrade(self, event: h11.Request) -> None:
            self._arrived()  # the WebSocket protocol takes the connection over (its own pings watch it)
            super().handle_websocket_upgrade(event)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arriving()  # keep-alive: the next request gets the same time

        def connection_lost(self, exc: Exception | None) -> None:
            self._arrived()
            super().connection_lost(exc)

        def _arriving(self) -> None:
            self._arrived()
            self._deadline = self.loop.call_later(request_s, self._drop, "closed_slow")
            incomplete[self] = None
            while len(incomplete) > max_incomplete:
                next(iter(incomplete))._drop("closed_for_room")

        def _arrived(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            incomplete.pop(self, None)

        def _drop(self, why: str) -> None:
            self._arrived()
            counters[why] += 1
            if not self.transport.is_closing():
                self.transport.close()

    return DeadlineH11
