"""Helpers the test modules import (a conftest.py cannot be imported reliably: tests/dags has its own)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO, "..", "shared", "data", "real")  # the real data, used in place, never copied


@contextlib.contextmanager
def serve_asgi(app):
    """Run an ASGI app under uvicorn on 127.0.0.1 (tests of real HTTP); the socket listens before the thread starts."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
