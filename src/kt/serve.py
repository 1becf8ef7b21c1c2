"""The SageMaker hosting contract on this machine: ``GET /ping`` and ``POST /invocations`` from a model.tar.gz.

    kt endpoint serve --model .kt/lake/models/dkt/<job>/output/model.tar.gz --port 8080
    curl -s localhost:8080/invocations -H 'Content-Type: application/json' \\
         -d '{"user_sequence": [{"skill_id": 3, "correct": 1}]}'

Loading follows the PyTorch inference container: the tarball is extracted to
``<base>/model`` (``SAGEMAKER_BASE_DIR``), and the server runs in a fresh
Python process whose path starts with ``<base>/model/code`` (``PYTHONPATH``,
as the container sets it). That process imports the module that
``SAGEMAKER_PROGRAM`` names (``inference.py``, the default) and calls its
``model_fn`` once per worker, so the handlers and the ``kt`` modules they
import are the tarball's, never this checkout's. This file runs there as a
plain script (``python -P``) and imports nothing from ``kt``.

Each invocation runs ``input_fn -> predict_fn -> output_fn`` as the inference
toolkit's Transformer does, one at a time per worker, off the event loop (so
``/ping`` answers during a long batch). The toolkit's error types keep their
status and body (``{"error", "field"}`` from ``RequestError``); anything else
is a 500 without a traceback in the body. The server is uvicorn (Starlette app).
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
from typing import Iterator

import httpx
import uvicorn
from sagemaker_inference import environment
from sagemaker_inference.errors import BaseInferenceToolkitError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger(__name__)

JSON = "application/json"
DEFAULT_MAX_PAYLOAD_MB = 6  # InvokeEndpoint's limit; batch transform raises it with MaxPayloadInMB
STARTUP_TIMEOUT_S = 180.0  # torch import + model_fn on a busy machine
STOP_TIMEOUT_S = 30.0


@dataclass
class Handler:
    """The user module's four functions and the model its model_fn returned."""

    input_fn: object
    predict_fn: object
    output_fn: object
    model: object
    default_accept: str

    def transform(self, body: bytes, content_type: str | None, accept: str | None) -> tuple[str | bytes, str]:
        if not accept or accept == "*/*":
            accept = self.default_accept
        data = self.input_fn(body, content_type)
        return self.output_fn(self.predict_fn(data, self.model), accept), accept


def load_handler() -> Handler:
    """Import SAGEMAKER_PROGRAM from the code directory on sys.path and call model_fn once, as the container does."""
    env = environment.Environment()
    module = importlib.import_module(env.module_name)
    missing = [f for f in ("model_fn", "input_fn", "predict_fn", "output_fn") if not hasattr(module, f)]
    if missing:
        raise RuntimeError(f"{module.__file__} lacks {', '.join(missing)}")
    log.info("handlers from %s, model from %s", module.__file__, environment.model_dir)
    return Handler(module.input_fn, module.predict_fn, module.output_fn, module.model_fn(environment.model_dir),
                   env.default_accept)


def _error_body(e: BaseInferenceToolkitError) -> bytes:
    """RequestError's message is already the JSON body; other toolkit errors get wrapped."""
    try:
        if isinstance(json.loads(e.message), dict):
            return e.message.encode("utf-8")
    except (TypeError, ValueError):
        pass
    return json.dumps({"error": str(e.message), "field": None}).encode("utf-8")


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
        loop = asyncio.get_running_loop()
        try:
            out, accept = await loop.run_in_executor(executor, handler.transform, body,
                                                     request.headers.get("content-type"), request.headers.get("accept"))
        except BaseInferenceToolkitError as e:
            if e.status_code >= 500:
                log.error("invocation failed: %s", e.message)
            return Response(_error_body(e), status_code=e.status_code, media_type=JSON)
        except Exception:  # noqa: BLE001 - a bug, not bad input: log it, answer 500, keep serving
            log.exception("invocation failed")
            return JSONResponse({"error": "internal error in the model handler", "field": None}, status_code=500)
        return Response(out, media_type=accept)

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
