"""Wait for Jupyter kernel messages in short slices, so a missed wake-up costs half a second.

Why: nbclient (which nbmake and Jupyter Book use to execute the chapters) waits for a cell's
reply with one ``socket.poll(timeout)`` on the kernel's shell socket. With pyzmq's asyncio
sockets that poll is woken by an edge-triggered file descriptor; when the wake-up is missed
(we saw it under CPU load, on cells that open ipywidgets), nothing happens until the timeout
fires, and then pyzmq's final ``poll(0)`` finds the reply that was there all along. The cell
"passes" after exactly the timeout: 60 s with a 60 s limit, 300 s with 300, forever with
none. CI saw chapter 04's slider cell run past the 600 s test limit this way.

Polling in slices of ``SLICE`` seconds until the same deadline keeps every timeout as it was
and bounds the cost of a missed wake-up by ``SLICE``.

Usage: ``install()`` in the process that runs the notebooks (``tests/conftest.py`` does), or
``python tools/kernel_polling.py jupyter-book build ...`` to run a command-line tool with it.
"""
from __future__ import annotations

import sys
import time
from queue import Empty

SLICE = 0.5  # seconds


def install() -> None:
    """Patch jupyter_client's asyncio channel ``get_msg`` (idempotent)."""
    from jupyter_client.channels import AsyncZMQSocketChannel

    if getattr(AsyncZMQSocketChannel.get_msg, "sliced", False):
        return

    async def get_msg(self, timeout: float | None = None) -> dict:
        assert self.socket is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = SLICE if deadline is None else max(0.0, min(SLICE, deadline - time.monotonic()))
            if await self.socket.poll(int(left * 1000)):
                return await self._recv()
            if deadline is not None and time.monotonic() >= deadline:
                raise Empty

    get_msg.sliced = True
    AsyncZMQSocketChannel.get_msg = get_msg


def main(argv: list[str]) -> int:
    """Run ``argv`` (a console script such as ``jupyter-book build .``) with the patch installed."""
    from importlib.metadata import entry_points

    if not argv:
        raise SystemExit("usage: python tools/kernel_polling.py <console-script> [args...]")
    install()
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == argv[0]] or [None]
    if script is None:
        raise SystemExit(f"no console script called {argv[0]!r} in this environment")
    sys.argv = argv
    result = script.load()()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
