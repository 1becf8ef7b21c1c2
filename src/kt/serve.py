"""The SageMaker hosting contract on this machine: ``GET /ping`` and ``POST /invocations`` from a model.tar.gz.

    kt endpoint serve --model .kt/lake/models/dkt/<job>/output/model.tar.gz --port 8080
    curl -s localhost:8080/invocations -H 'Content-Type: application/json' \\
         -d '{"user_sequence": [{"skill_id": 3, "correct": 1}]}'

Loading follows the PyTorch inference container: the tarball is extracted to
``<base>/model`` (``SAGEMAKER_BASE_DIR``), and the server runs in a fresh
Python process whose path starts with ``<base>/model/code`` (``PYTHONPATH``,
as the container sets it). That process loads the handler TorchServe would
run: the one the tarball's ``MAR-INF/MANIFEST.json`` names (``kt.handler_service``,
the inference toolkit's handler service and Transformer), else the toolkit's
``DefaultHandlerService``. The handler imports the module that
``SAGEMAKER_PROGRAM`` names (``inference.py``, the default) and calls its
``model_fn`` once per worker, so the handlers and the ``kt`` modules they
import are the tarball's, never this checkout's. This file runs there as a
plain script (``python -P``) and imports nothing from ``kt``.

Each invocation goes to the handler with a context shaped like TorchServe's
(request headers in, status and content type out), one at a time per worker,
off the event loop (so ``/ping`` answers during a long batch); status, body and
content type are the handler's. What the handler never sees is this file's:
the payload limit (a 413 before the body is read), ``/execution-parameters``
and the routes. tests/test_toolkit_inference.py holds every request of the
validation corpus against the real toolkit under TorchServe. The server is
uvicorn (Starlette app).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import httpx
import uvicorn
from sagemaker_inference import environment
from sagemaker_inference.default_handler_service import DefaultHandlerService
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger(__name__)

DEFAULT_MAX_PAYLOAD_MB = 6  # InvokeEndpoint's limit; batch transform raises it with MaxPayloadInMB
STARTUP_TIMEOUT_S = 180.0  # torch import + model_fn on a busy machine
STOP_TIMEOUT_S = 30.0


class Context:
    """What TorchServe hands a handler, reduced to what the inference toolkit uses: one per worker, as TorchServe's."""

    def __init__(self, model_dir: str):
        self.system_properties = {"model_dir": model_dir}
        self.request_processor = [self]
        self.headers: dict[str, str] = {}
        self.status: tuple[int, str] | None = None
        self.content_type: str | None = None

    def start(self, headers: dict[str, str]) -> None:
        self.headers, self.status, self.content_type = headers, None, None

    def get_request_properties(self) -> dict[str, str]:
        return self.headers

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:  # noqa: ARG002
        self.status = (code, phrase)

    def set_response_content_type(self, idx: int, value: str) -> None:  # noqa: ARG002
        self.content_type = value


@dataclass
class Handler:
    """The handler's entry point (TorchServe's ``handle(data, context)``) and its context."""

    entry: Callable[[list[dict] | None, Context], list | None]
    context: Context

    def invoke(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str | None]:
        self.context.start(headers)
        (out,) = self.entry([{"body": body}], self.context)
        status = self.context.status[0] if self.context.status else 200
        return status, out.encode("utf-8") if isinstance(out, str) else bytes(out), self.context.content_type


def load_handler() -> Handler:
    """Import the handler the manifest names (as TorchServe does) and let it load the model once."""
    manifest = os.path.join(environment.model_dir, "MAR-INF", "MANIFEST.json")
    handler = None
    if os.path.exists(manifest):
        with open(manifest) as f:
            handler = json.load(f).get("model", {}).get("handler")
    if handler:
        module_name, _, function = handler.partition(":")
        entry = getattr(importlib.import_module(module_name), function or "handle")
    else:
        service = DefaultHandlerService()

        def entry(data, context):
            return service.initialize(context) if data is None else service.handle(data, context)

    log.info("handler %s, model from %s", handler or "the toolkit's DefaultHandlerService", environment.model_dir)
    context = Context(environment.model_dir)
    entry(None, context)
    return Handler(entry, context)


def create_app() -> Starlette:
    """The ASGI app of one worker: handlers loaded once, one inference at a time off the event loop."""
    handler = load_handler()
    max_bytes = environment.Environment().max_request_size or DEFAULT_MAX_PAYLOAD_MB << 20
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    async def ping(request: Request) -> Response:
        return Response(status_code=200)

    async def execution_parameters(request: Request) -> Response:
        """What batch transform asks the container before sending records."""
        return JSONResponse({"MaxConcurrentTransforms": 1, "BatchStrategy": "MultiRecord",
                             "MaxPayloadInMB": max_bytes >> 20})

    async def invocations(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            return _too_large(max_bytes)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                return _too_large(max_bytes)
            chunks.append(chunk)
        body = b"".join(chunks)
        headers = {k.title(): v for k, v in request.headers.items()}  # TorchServe passes every header
        loop = asyncio.get_running_loop()
        try:
            status, out, content_type = await loop.run_in_executor(executor, handler.invoke, body, headers)
        except Exception:  # noqa: BLE001 - the handler's own failure (it answers errors itself): keep serving
            log.exception("invocation failed")
            return JSONResponse({"error": "internal error in the model handler", "field": None}, status_code=500)
        return Response(out, status_code=status, media_type=content_type)

    return Starlette(routes=[
        Route("/ping", ping, methods=["GET"]),
        Route("/execution-parameters", execution_parameters, methods=["GET"]),
        Route("/invocations", invocations, methods=["POST"]),
    ])


def _too_large(max_bytes: int) -> Response:
    body = {"error": f"the body exceeds {max_bytes >> 20} MB", "field": "body"}
    return JSONResponse(body, status_code=413)


# --- the server process (this file run as a script) -----------------------------


def _serve(argv: list[str]) -> int:
    """Run uvicorn on an inherited listening socket; more than one worker goes through uvicorn's supervisor."""
    parser = argparse.ArgumentParser(description="endpoint server process (started by kt.serve)")
    parser.add_argument("--fd", type=int, required=True, help="listening socket inherited from the parent")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = socket.socket(fileno=args.fd)
    common = {"log_level": args.log_level, "access_log": False, "lifespan": "off", "timeout_graceful_shutdown": 10}
    if args.workers > 1:
        from uvicorn.supervisors import Multiprocess

        # Spawned workers re-run this script as __main__ (multiprocessing), so the factory is importable there.
        config = uvicorn.Config("__main__:create_app", factory=True, workers=args.workers, **common)
        Multiprocess(config, sockets=[sock]).run()
        return 0
    server = uvicorn.Server(uvicorn.Config(create_app(), **common))
    server.run(sockets=[sock])
    return 0 if server.started else 1


# --- the launcher (kt endpoint serve, the local transform runner, tests, bench) ----------


@dataclass
class Endpoint:
    url: str
    process: subprocess.Popen


@contextlib.contextmanager
def running(model: str, host: str = "127.0.0.1", port: int = 0, workers: int = 1,
            environment_vars: dict[str, str] | None = None) -> Iterator[Endpoint]:
    """Serve a model.tar.gz (path or lake URI) in a child process; yield once /ping answers, stop it after.

    environment_vars: the container's Environment (CreateModel's PrimaryContainer.Environment).
    """
    from kt import artifact  # here, not on top: the server process must not import this checkout's kt

    base = tempfile.mkdtemp(prefix="kt-endpoint-")
    process = None
    try:
        artifact.unpack(model, os.path.join(base, "model"))
        listener = socket.create_server((host, port))  # bound here: port 0 works, and early requests queue
        port = listener.getsockname()[1]
        env = {**os.environ, **(environment_vars or {}), "SAGEMAKER_BASE_DIR": base,
               "PYTHONPATH": os.path.join(base, "model", "code")}
        command = [sys.executable, "-P", os.path.abspath(__file__), "--fd", str(listener.fileno()),
                   "--workers", str(workers)]
        try:
            process = subprocess.Popen(command, env=env, pass_fds=(listener.fileno(),))
        finally:
            listener.close()  # the child holds it now; if the child dies, queued connections fail fast
        url = f"http://{host}:{port}"
        try:  # the socket already listens, so this waits for the first accept: no polling
            httpx.get(f"{url}/ping", timeout=STARTUP_TIMEOUT_S).raise_for_status()
        except httpx.HTTPError as e:
            code = process.poll()
            raise RuntimeError(f"the endpoint for {model} did not start (exit code {code}): {e}") from e
        yield Endpoint(url, process)
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(base, ignore_errors=True)


def main(model: str, host: str = "127.0.0.1", port: int = 8080, workers: int = 1) -> int:
    """`kt endpoint serve`: serve until Ctrl-C or SIGTERM."""

    def stop(signum, frame):  # noqa: ARG001 - signal handler signature
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with running(model, host, port, workers) as endpoint:
            print(f"serving {model} at {endpoint.url}: GET /ping, POST /invocations (Ctrl-C stops)", flush=True)
            return endpoint.process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1:]))
