"""model.tar.gz under the AWS PyTorch inference image's serving stack: the real toolkits, TorchServe, over HTTP.

sagemaker-pytorch-inference's `serving.main` (the image's `serve`) starts TorchServe on the
extracted tarball, from .venv-toolkit (requirements-toolkit.txt); TorchServe runs the handler
service the tarball's manifest names, over the inference toolkit's Transformer and our
code/inference.py. Every request of the validation corpus (tests/endpoint_corpus.py) must get
the same status, content type and body there as from `kt endpoint serve`, error bodies being
exactly {"error", "field"}.
"""

from __future__ import annotations

import json
import os
import shutil

import httpx
import pytest

from endpoint_corpus import CORPUS, CRASH, CRASH_HOOK, INTERNAL_ERROR, Case
from kt import artifact, serve, toolkit_serve

pytestmark = pytest.mark.slow  # TorchServe's JVM and worker: about 10 s to start and stop


@pytest.fixture(scope="module")
def corpus_tar(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny model, its code/inference.py with a handler bug on request (CRASH_HOOK)."""
    base = tmp_path_factory.mktemp("toolkit")
    model_dir = str(base / "model")
    shutil.copytree(tiny_model_dir, model_dir)
    with open(os.path.join(model_dir, "code", "inference.py"), "a") as f:
        f.write(CRASH_HOOK)
    artifact.pack(model_dir, str(base / "model.tar.gz"))
    return str(base / "model.tar.gz")


@pytest.fixture(scope="class")
def toolkit(corpus_tar):
    with toolkit_serve.running(corpus_tar) as running, httpx.Client(base_url=running.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="class")
def twin(corpus_tar):
    with serve.running(corpus_tar) as running, httpx.Client(base_url=running.url, timeout=60) as client:
        yield client


def _answer(client: httpx.Client, case: Case) -> tuple[int, str | None, str]:
    reply = client.post("/invocations", content=case.body, headers=case.headers())
    return reply.status_code, reply.headers.get("content-type"), reply.text


class TestOneServerOfEachForTheCorpus:
    """One toolkit server and one twin for these tests, stopped after them: the tests below start their own,
    and TorchServe runs one at a time on a machine (kt.toolkit_serve)."""

    def test_both_servers_answer_ping(self, toolkit, twin):
        assert toolkit.get("/ping").status_code == 200 and twin.get("/ping").status_code == 200

    def test_a_second_toolkit_server_is_refused_while_one_runs(self, toolkit, corpus_tar):
        """The toolkit adopts the first TorchServe it finds: a second one, stopped, would stop the first."""
        with pytest.raises(RuntimeError, match="TorchServe already runs on this machine"):
            with toolkit_serve.running(corpus_tar):
                pass
        assert toolkit.get("/ping").status_code == 200

    @pytest.mark.parametrize("case", [*CORPUS, CRASH], ids=lambda c: c.name)
    def test_every_request_gets_the_same_answer_from_the_real_toolkit_and_kt_endpoint_serve(self, toolkit, twin, case):
        status, content_type, body = _answer(toolkit, case)
        assert (status, content_type, body) == _answer(twin, case)
        assert status == case.status
        if status == 200:
            lines = [json.loads(line) for line in body.splitlines()]
            assert all("mastery" in line or set(line) >= {"error", "field"} for line in lines)
            return
        assert content_type == "application/json"
        error = json.loads(body)  # the whole body: no traceback after it
        assert set(error) == {"error", "field"} and case.error in error["error"] and error["field"] == case.field
        if status == 500:
            assert error == INTERNAL_ERROR

    def test_a_body_over_the_payload_limit_is_refused_before_the_handler(self, toolkit, twin):
        """TorchServe's limit (6553500 bytes) answers 413 with an empty body; `kt endpoint serve` names the field.

        On AWS, InvokeEndpoint refuses a body over 6 MB before it reaches the container.
        """
        body = b"x" * 6_600_000
        reply = toolkit.post("/invocations", content=body, headers={"Content-Type": "application/json"})
        assert (reply.status_code, reply.content) == (413, b"")
        reply = twin.post("/invocations", content=body, headers={"Content-Type": "application/json"})
        assert reply.status_code == 413 and reply.json() == {"error": "the body exceeds 6 MB", "field": "body"}


@pytest.fixture(scope="module")
def ensemble_tar(sample_lake, tmp_path_factory) -> str:
    """An ensemble of one member of each kind (LSTM DKT, DKT reading counts, attention, GRU DKT), trained as the
    tiny model is: the model whose members the DKT corpus above never loads."""
    from kt_testing import train_tiny_model

    base = tmp_path_factory.mktemp("toolkit-ensemble")
    model_dir = train_tiny_model(f"{sample_lake}/processed/ednet", str(base), "ensemble-model", model="ensemble",
                                 members="dkt+dkt_counts+attn+gru")
    artifact.pack(model_dir, str(base / "model.tar.gz"))
    return str(base / "model.tar.gz")


def test_an_ensemble_of_every_member_kind_gets_the_same_answers_from_the_real_toolkit(ensemble_tar):
    with toolkit_serve.running(ensemble_tar) as real, serve.running(ensemble_tar) as ours, \
            httpx.Client(base_url=real.url, timeout=60) as toolkit, httpx.Client(base_url=ours.url, timeout=60) as twin:
        answers = {case.name: _answer(toolkit, case) for case in CORPUS}
        for case in CORPUS:
            assert answers[case.name] == _answer(twin, case), case.name
            if not (case.field or "").startswith("state"):  # an ensemble keeps no state, so may read none sent
                assert answers[case.name][0] == case.status, case.name
    stateful = json.loads(answers["stateful"][2])
    assert stateful["state"] is None and len(stateful["mastery"]) > 1  # answered by recomputing, as said


def test_an_answer_over_torchserves_response_limit_kills_the_worker(corpus_tar):
    """TorchServe's max_response_size (6,553,500 bytes unless TS_MAX_RESPONSE_SIZE says otherwise) is a 500.

    A batch answer is about 0.6 KB per user for the tiny model (3.5 KB at 200 skills): set low here so
    that 100 users cross it. docs/aws-fidelity.md: batch transform payloads on AWS need the setting.
    """
    limit = 40_000
    lines = [json.dumps({"user_id": f"u{i}", "user_sequence": []}) + "\n" for i in range(100)]
    headers = {"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"}
    with toolkit_serve.running(corpus_tar, environment_vars={"TS_MAX_RESPONSE_SIZE": str(limit)}) as running, \
            httpx.Client(base_url=running.url, timeout=60) as client:
        small = client.post("/invocations", content="".join(lines[:10]).encode(), headers=headers)
        assert small.status_code == 200 and 0 < len(small.content) < limit
        big = client.post("/invocations", content="".join(lines).encode(), headers=headers)
        assert big.status_code == 500 and big.json()["message"] == "Worker died."
