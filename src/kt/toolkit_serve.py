"""Serve a model.tar.gz under the AWS PyTorch inference image's own serving stack, on this machine.

    with toolkit_serve.running("model.tar.gz") as endpoint:
        httpx.post(f"{endpoint.url}/invocations", json={"user_sequence": []})

The image's entry point (``dockerd-entrypoint.py serve``) calls
``sagemaker_pytorch_serving_container.serving.main()``: it installs ``code/requirements.txt``,
writes TorchServe's config (the toolkit's defaults, ``SAGEMAKER_*`` settings, its handler
service as the default handler) and starts TorchServe on ``/opt/ml/model``, which runs the
handler our ``MAR-INF/MANIFEST.json`` names (``kt.handler_service``). This runs that same
``main`` from the toolkit venv (``.venv-toolkit``, ``requirements-toolkit.txt``: the packages
and pins of the image), with the tarball extracted under a temporary ``SAGEMAKER_BASE_DIR``.
What differs from the image, none of it on the request path:

- TorchServe's config file goes to the temporary directory (the image writes
  ``/etc/sagemaker-ts.properties``), and so do its logs and model store (the working directory);
- its metrics and gRPC listeners and its worker socket get free ports instead of fixed ones;
- ``SAGEMAKER_MODEL_SERVER_WORKERS`` defaults to 1 (the image sets the CPU count).

One at a time on a machine: the toolkit adopts the first TorchServe process it finds as its own, so a
second server would forward its SIGTERM to the first one's TorchServe (``running`` refuses to start it).
The server is ready when its worker has loaded the model (TorchServe's ``/ping`` answers before).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from typing import Iterator

import httpx
import psutil

from kt import artifact
from kt.aws import free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLKIT_PYTHON = os.path.join(REPO, ".venv-toolkit", "bin", "python")
STARTUP_TIMEOUT_S = 180.0  # JVM, worker, torch import and model_fn on a busy machine
STOP_TIMEOUT_S = 30.0
TS_NAMESPACE = "org.pytorch.serve.ModelServer"  # in a TorchServe JVM's command line, as the toolkit finds it
READY_MARKER = "WorkerLoadTime"  # TorchServe's metric line once a worker has loaded the model
# The image's `serve`, but TorchServe's config file is written where this process may write.
SERVE = ("import sys\n"
         "from sagemaker_pytorch_serving_container import serving, torchserve\n"
         "torchserve.TS_CONFIG_FILE = sys.argv[1]\n"
         "serving.main()\n")


@dataclass
class Endpoint:
    url: str
    process: subprocess.Popen
    log: str  # TorchServe's and the toolkit's output


def torchserve_pids() -> list[int]:
    """TorchServe servers running on this machine, found as the toolkit's _retrieve_ts_server_process finds them."""
    pids = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if process.info["status"] != psutil.STATUS_ZOMBIE and TS_NAMESPACE in (process.info["cmdline"] or []):
            pids.append(process.pid)
    return pids


def _pump(stream, log_path: str, ready: threading.Event) -> None:
    """Copy the server's output to a file (so its pipe never fills) and signal once the model is loaded."""
    with open(log_path, "w") as log:
        for line in stream:
            log.write(line)
            log.flush()
            if READY_MARKER in line:
                ready.set()
    ready.set()  # the output closed: the server exited


@contextlib.contextmanager
def running(model: str, workers: int = 1, environment_vars: dict[str, str] | None = None,
            python: str = TOOLKIT_PYTHON) -> Iterator[Endpoint]:
    """Serve a model.tar.gz (path or lake URI) through the toolkit and TorchServe; yield once it answers."""
    if not os.path.exists(python):
        raise RuntimeError(f"{python} is missing: `make test` builds it from requirements-toolkit.txt")
    if others := torchserve_pids():
        raise RuntimeError(f"TorchServe already runs on this machine (pid {', '.join(map(str, others))}): the "
                           "toolkit would adopt it, and stopping this server would stop that one; stop it first")
    base = tempfile.mkdtemp(prefix="kt-toolkit-")
    process = None
    try:
        artifact.unpack(model, os.path.join(base, "model"))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(environment_vars or {})
        env.update({
            "PATH": f"{os.path.dirname(python)}{os.pathsep}{env.get('PATH', '')}",  # torchserve, java
            "SAGEMAKER_BASE_DIR": base, "SAGEMAKER_BIND_TO_PORT": str(port),
            "SAGEMAKER_MODEL_SERVER_WORKERS": env.get("SAGEMAKER_MODEL_SERVER_WORKERS", str(workers)),
            "TMPDIR": base, "LOG_LOCATION": os.path.join(base, "logs"), "METRICS_LOCATION": os.path.join(base, "logs"),
            "TS_METRICS_ADDRESS": f"http://127.0.0.1:{free_port()}", "TS_GRPC_INFERENCE_PORT": str(free_port()),
            "TS_GRPC_MANAGEMENT_PORT": str(free_port()), "TS_INITIAL_WORKER_PORT": str(free_port()),
        })
        log_path = os.path.join(base, "server.log")
        process = subprocess.Popen([python, "-c", SERVE, os.path.join(base, "ts.properties")], cwd=base, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                   start_new_session=True)  # its own process group: TorchServe's JVM and workers
        ready = threading.Event()
        threading.Thread(target=_pump, args=(process.stdout, log_path, ready), daemon=True).start()
        url = f"http://127.0.0.1:{port}"
        if not ready.wait(STARTUP_TIMEOUT_S) or process.poll() is not None or \
                httpx.get(f"{url}/ping", timeout=30).status_code != 200:
            with open(log_path) as f:
                tail = "".join(f.readlines()[-40:])
            raise RuntimeError(f"the toolkit did not serve {model} (exit code {process.poll()}):\n{tail}")
        yield Endpoint(url, process, log_path)
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(base, ignore_errors=True)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM as SageMaker stops a container (the toolkit passes it to TorchServe); then its whole group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # what outlived it (the JVM, a worker)
    process.wait()
