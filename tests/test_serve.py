"""The endpoint over real HTTP on 127.0.0.1: the SageMaker hosting contract, each 4xx, and loading from the tarball."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import httpx
import pytest

from endpoint_corpus import BAD
from kt import artifact, serve
from kt.aws import free_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANSWER = {"skill_id": 1, "correct": 1}


@pytest.fixture(scope="module")
def model_tar(tiny_model_dir, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("endpoint") / "model.tar.gz")
    artifact.pack(tiny_model_dir, path)
    return path


@pytest.fixture(scope="module")
def endpoint(model_tar):
    with serve.running(model_tar, environment_vars={"SAGEMAKER_MAX_PAYLOAD_IN_MB": "1"}) as running, \
            httpx.Client(base_url=running.url, timeout=60) as client:
        yield client


def _post(client: httpx.Client, body, content_type: str = "application/json", **headers) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/invocations", content=content, headers={"Content-Type": content_type, **headers})


def test_ping_and_a_valid_request(endpoint, tiny_model_dir):
    assert endpoint.get("/ping").status_code == 200
    reply = _post(endpoint, {"user_sequence": [ANSWER, {"skill_id": 2, "correct": 0}]})
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    info = artifact.read_info(tiny_model_dir)
    assert sorted(map(int, body["mastery"])) == sorted(info["skill_ids"])
    assert body["model_version"] == info["model_version"] and body["next_skill_recommendation"] in (1, 2)


def test_accept_defaults_to_json_and_jsonlines_batches_work(endpoint):
    lines = "\n".join(json.dumps({"user_id": f"u{i}", "user_sequence": [ANSWER] * i}) for i in range(3))
    reply = _post(endpoint, lines.encode(), "application/jsonlines", Accept="application/jsonlines")
    assert reply.status_code == 200
    assert [json.loads(line)["user_id"] for line in reply.text.splitlines()] == ["u0", "u1", "u2"]
    assert _post(endpoint, {"user_sequence": []}, Accept="*/*").json()["mastery"]


def test_batch_transform_asks_for_execution_parameters(endpoint):
    assert endpoint.get("/execution-parameters").json() == {
        "MaxConcurrentTransforms": 1, "BatchStrategy": "MultiRecord", "MaxPayloadInMB": 1}


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.name)
def test_each_bad_request_gets_its_4xx_and_a_json_body_naming_the_field(endpoint, case):
    reply = endpoint.post("/invocations", content=case.body, headers=case.headers())
    assert reply.status_code == case.status
    assert reply.headers["content-type"] == "application/json"
    assert set(reply.json()) == {"error", "field"}  # the whole body: no traceback
    assert case.error in reply.json()["error"] and reply.json()["field"] == case.field
    assert endpoint.get("/ping").status_code == 200  # and the worker is still there


def test_a_body_over_the_payload_limit_is_a_413_before_it_is_read(endpoint):
    reply = _post(endpoint, b"x" * ((1 << 20) + 1))
    assert reply.status_code == 413 and reply.json() == {"error": "the body exceeds 1 MB", "field": "body"}


def test_routes_and_methods_outside_the_contract(endpoint):
    assert endpoint.get("/invocations").status_code == 405
    assert endpoint.get("/predict").status_code == 404


def test_the_handlers_come_from_the_tarball_and_a_crash_is_a_500_that_keeps_serving(tiny_model_dir, tmp_path):
    """A tarball whose code/inference.py differs from the checkout's: the endpoint runs the tarball's."""
    model_dir = str(tmp_path / "model")
    shutil.copytree(tiny_model_dir, model_dir)
    with open(os.path.join(model_dir, "code", "inference.py"), "a") as f:
        f.write(
            "\n_predict_fn = predict_fn\n\n\n"
            "def predict_fn(data, model):\n"
            "    if data['lines'][0].get('user_id') == 'boom':\n"
            "        raise RuntimeError('a bug in the handler')\n"
            "    out = _predict_fn(data, model)\n"
            "    out['results'][0]['served_by'] = __file__\n"
            "    return out\n"
        )
    artifact.pack(model_dir, str(tmp_path / "model.tar.gz"))
    with serve.running(str(tmp_path / "model.tar.gz")) as running, httpx.Client(base_url=running.url) as client:
        served_by = _post(client, {"user_sequence": []}).json()["served_by"]
        assert served_by.endswith(os.path.join("model", "code", "inference.py")) and "kt-endpoint-" in served_by
        crash = _post(client, {"user_id": "boom", "user_sequence": []})
        assert crash.status_code == 500
        assert crash.json() == {"error": "internal error in the model handler", "field": None}  # no traceback
        assert _post(client, {"user_sequence": [ANSWER]}).status_code == 200


def test_a_tarball_without_the_manifest_gets_the_toolkits_own_handler_and_its_tracebacks(tiny_model_dir, tmp_path):
    """Tarballs made before MAR-INF/MANIFEST.json: TorchServe runs the toolkit's handler service, and so does this."""
    model_dir = str(tmp_path / "model")
    shutil.copytree(tiny_model_dir, model_dir)
    shutil.rmtree(os.path.join(model_dir, "MAR-INF"))
    artifact.pack(model_dir, str(tmp_path / "model.tar.gz"))
    with serve.running(str(tmp_path / "model.tar.gz")) as running, httpx.Client(base_url=running.url) as client:
        assert _post(client, {"user_sequence": [ANSWER]}).status_code == 200
        bad = _post(client, {"user_sequence": [{"skill_id": 1, "correct": 5}]})
        first, rest = bad.text.split("\n", 1)
        assert bad.status_code == 400 and json.loads(first)["field"] == "user_sequence[0].correct"
        assert rest.startswith("Traceback (most recent call last):")


def test_a_model_that_cannot_load_fails_at_start(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.json").write_text("{}")
    artifact.pack(str(tmp_path / "model"), str(tmp_path / "broken.tar.gz"))
    with pytest.raises(RuntimeError, match="did not start"):
        with serve.running(str(tmp_path / "broken.tar.gz")):
            pass



@pytest.mark.slow
def test_kt_endpoint_serve_with_two_workers_until_sigterm(model_tar):
    port = free_port()
    command = [sys.executable, "-m", "kt.cli", "endpoint", "serve", "--model", model_tar, "--port", str(port),
               "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "src")}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()  # printed once /ping answered
        assert f"at http://127.0.0.1:{port}" in line
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            replies = [_post(client, {"user_sequence": [ANSWER] * n}) for n in range(6)]
        assert all(r.status_code == 200 for r in replies)
        workers = [p for p in _children(_children(process.pid)[0]) if b"spawn_main" in _cmdline(p)]
        assert len(workers) == 2
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()
