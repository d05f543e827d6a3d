"""Running the app with uvicorn, and draining it on SIGTERM.

On the first SIGTERM (or Ctrl-C) the server starts draining: ``/health`` says 503 ``draining``,
new requests get 503, and requests in flight go on. Once none is left (or ``grace_seconds``
have passed) uvicorn's own graceful shutdown runs, with what remains of the grace period as
its ``timeout_graceful_shutdown``; the process then exits 0. A second signal stops at once, as
uvicorn does.
"""

from __future__ import annotations

import math
import signal
import socket
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from .._method.errors import ConfigurationError
from .app import ServerState, create_app
from .settings import ServerSettings

if TYPE_CHECKING:
    from .._prompter import ExpertPrompter

__all__ = ["DrainingServer", "serve"]


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains (see the module) before its graceful shutdown."""

    def __init__(
        self,
        config: uvicorn.Config,
        state: ServerState,
        on_ready: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.state = state
        self.on_ready = on_ready
        self.drain_deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_deadline is None and sig in (signal.SIGTERM, signal.SIGINT):
            self.state.draining = True
            self.drain_deadline = time.monotonic() + self.state.settings.grace_seconds
            return
        super().handle_exit(sig, frame)  # a second signal: uvicorn's own way out

    async def on_tick(self, counter: int) -> bool:
        deadline = self.drain_deadline
        if deadline is not None and not self.should_exit:
            left = deadline - time.monotonic()
            if self.state.in_flight == 0 or left <= 0:
                # what remains of the grace period bounds uvicorn's own wait
                self.config.timeout_graceful_shutdown = max(math.ceil(left), 0)
                self.should_exit = True
        return await super().on_tick(counter)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_ready is not None:
            port = self.servers[0].sockets[0].getsockname()[1] if self.servers else self.config.port
            host = self.config.host
            shown = f"[{host}]" if ":" in host else host
            self.on_ready(f"http://{shown}:{port}")


def serve(
    settings: ServerSettings,
    *,
    prompters: Mapping[str, ExpertPrompter] | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGTERM or Ctrl-C (then drain, see the module).

    :param settings: What to serve and how; a non-loopback ``host`` needs ``api_keys``.
    :param prompters: Each model's prompter, when made elsewhere (default: made here).
    :param on_ready: Called with the server's URL once it listens (``port=0``: the real port).
    """
    settings.check_exposure()
    app = create_app(settings, prompters=prompters)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=math.ceil(settings.grace_seconds),
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    listening = _listen(settings.host, settings.port)
    server = DrainingServer(config, app.state.expertprompting, on_ready)
    server.run(sockets=[listening])


def _listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound here so that a port in use is one clear error (uvicorn
    would log it and exit)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"Cannot listen on {host}:{port} ({exc.strerror or exc}); choose another port, or "
            "stop what is using it."
        ) from None
    return sock
