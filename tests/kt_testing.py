"""Helpers the test modules import (a conftest.py cannot be imported reliably: tests/dags has its own)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import uuid
from typing import Iterator

from kt import aws, dynamo
from kt.config import Settings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO, "..", "shared", "data", "real")  # the real data, used in place, never copied
VTL_TEMPLATES = os.path.join(REPO, "terraform", "templates")
LINT_PYTHON = os.path.join(REPO, ".venv-lint", "bin", "python")  # has airspeed (a VTL engine); the app venv has not

# API Gateway's $input, $util and $context, as far as our templates use them.
VTL_RENDERER = r"""
import json, sys
import airspeed

class Input:
    def __init__(self, body, params):
        self.body, self._params = body, params
    def path(self, expression):
        value = self.body
        for part in expression[2:].split(".") if expression != "$" else []:
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value
    def json(self, expression):
        return json.dumps(self.path(expression))
    def params(self, name):
        return self._params.get(name, "")

class Util:
    def escapeJavaScript(self, text):
        return json.dumps(str(text))[1:-1]
    def parseJson(self, text):
        return json.loads(text)

results = []
for case in json.load(sys.stdin):
    context = {"responseOverride": {}}
    text = case["template"].replace("${table}", case.get("table", ""))
    for name, value in case.get("vars", {}).items():  # templatefile's variables
        text = text.replace("${" + name + "}", value)
    body = airspeed.Template(text).merge(
        {"input": Input(case.get("body", {}), case.get("params", {})), "util": Util(), "context": context}
    )
    results.append({"body": body, "status": context["responseOverride"].get("status")})
json.dump(results, sys.stdout)
"""


def render_vtl(cases: list[dict]) -> list[dict]:
    """Render terraform/templates/<file> for each case ({"file", "body", "params", "table", "vars"}) in .venv-lint.

    "vars" are templatefile's variables as Terraform renders them (strings: "true", JSON text, names).

    Returns {"body": rendered text, "status": the template's responseOverride status or None} per case.
    """
    assert os.path.exists(LINT_PYTHON), f"{LINT_PYTHON} is missing: run `make lint`, which builds .venv-lint"
    for case in cases:
        with open(os.path.join(VTL_TEMPLATES, case.pop("file"))) as f:
            case["template"] = f.read()
    done = subprocess.run([LINT_PYTHON, "-c", VTL_RENDERER], input=json.dumps(cases), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@contextlib.contextmanager
def moto_tables(lake: str, **fields) -> Iterator[Settings]:
    """Settings on an embedded moto server (kt.aws.local_aws) with fresh kt-history and kt-mastery tables."""
    suffix = uuid.uuid4().hex[:8]
    base = Settings(lake=lake, mastery_table=f"kt-mastery-{suffix}", history_table=f"kt-history-{suffix}", **fields)
    with aws.local_aws(base) as settings:
        dynamo.ensure_tables(aws.client(settings, "dynamodb"), settings.history_table, settings.mastery_table)
        yield settings


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


def train_tiny_model(processed: str, base: str, job_name: str, **hyperparameters) -> str:
    """A DKT trained for one epoch (hidden 16, 2 layers, windows of 50) on a processed lake; its model dir."""
    from kt.config import TrainingPaths
    from kt.train import Hyperparameters, train

    paths = TrainingPaths(train_channel=processed, model_dir=f"{base}/model", checkpoint_dir=f"{base}/checkpoints",
                          output_dir=f"{base}/output", job_name=job_name)
    train(Hyperparameters(hidden=16, layers=2, epochs=1, batch_size=16, max_seq_len=50, **hyperparameters), paths)
    return paths.model_dir
