"""kt.api: the routes against DynamoDB tables on a moto server, live mastery from a real DKT endpoint.

Most tests drive the ASGI app with Starlette's TestClient (httpx); the ones
marked "real HTTP" run it, or the endpoint it calls, under uvicorn on
127.0.0.1, and one starts `kt api` itself as a process.

    .venv/bin/python -m pytest -q tests/test_api.py
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import anyio
import httpx
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from kt import api, aws, bayes, dynamo, inference
from kt.api import BAYES_MODEL_VERSION, GET_FIELDS, Catalog, create_app
from kt.aws import free_port
from kt.config import ConfigError, Settings
from kt.topics import TOPICS
from kt_testing import serve_asgi as serve

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "test-key-1234"
HEADERS = {"x-api-key": KEY}
# 16 skills, two per topic: skill s belongs to TOPICS[(s - 1) // 2]
CATALOG = Catalog(tuple(range(1, 17)), {s: TOPICS[(s - 1) // 2] for s in range(1, 17)}, "tests")
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def at(minutes: float) -> str:
    """answered_at `minutes` after 2026-11-25T10:00Z, in the API's format."""
    t = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc) + timedelta(minutes=minutes)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def answer(user: str, n: int, skill: int, correct: int, minutes: float | None = None, **extra) -> dict:
    return {"user_id": user, "answer_id": f"{user}-{n}", "skill_id": skill, "correct": correct,
            "answered_at": at(n if minutes is None else minutes), **extra}


@pytest.fixture(scope="module")
def moto_url():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def settings(moto_url, tmp_path) -> Settings:
    """Fresh tables (unique names) on the module's moto server and a fresh lake."""
    suffix = uuid.uuid4().hex[:8]
    s = Settings(lake=str(tmp_path / "lake"), aws_endpoint_url=moto_url, mastery_table=f"kt-mastery-{suffix}",
                 history_table=f"kt-history-{suffix}", api_key=KEY)
    dynamo.ensure_tables(ddb(s), s.history_table, s.mastery_table)
    return s


def ddb(settings: Settings):
    return aws.client(settings, "dynamodb")


def client_for(settings: Settings, **kwargs) -> TestClient:
    kwargs.setdefault("catalog", CATALOG)
    kwargs.setdefault("now", lambda: NOW)
    return TestClient(create_app(settings, **kwargs), headers=HEADERS)


def lake_lines(settings: Settings) -> list[dict]:
    root = os.path.join(settings.lake, "events", "answers")
    lines = []
    for directory, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            with open(os.path.join(directory, name)) as f:
                lines += [json.loads(line) for line in f]
    return lines


def dkt_row(user: str, as_of: str, version: str = "pythagoras-dkt-test", topic_value: float = 0.9) -> dict:
    return {"user_id": user, "mastery": {str(s): 0.8 for s in CATALOG.skill_ids},
            "topic_mastery": {t: topic_value for t in TOPICS}, "next_skill_recommendation": 3,
            "predicted_accuracy": 0.8, "model_version": version, "source": "dkt", "as_of": as_of,
            "updated_at": "2026-11-25T02:00:00+00:00", "n_interactions": 2}


# GET /api/kt/mastery


def test_get_unknown_user_is_a_404_naming_the_field(settings):
    r = client_for(settings).get("/api/kt/mastery", params={"user_id": "nobody"})
    assert (r.status_code, r.json()) == (404, {"error": "unknown user_id", "field": "user_id"})


@pytest.mark.parametrize(
    ("query", "status"),
    [("", 400), ("?user_id=", 400), ("?user_id=a&user_id=b", 400), ("?user_id=" + "x" * 129, 400)],
)
def test_get_bad_user_id_is_a_400_naming_the_field(settings, query, status):
    r = client_for(settings).get("/api/kt/mastery" + query)
    assert r.status_code == status
    assert r.json()["field"] == "user_id"


def test_answers_then_get_serves_the_bayesian_estimate_of_the_rows_counters(settings):
    client = client_for(settings)
    answers = [answer("u1", 1, 1, 1), answer("u1", 2, 1, 0), answer("u1", 3, 5, 1, content_id=77)]
    for a in answers:
        assert client.post("/api/kt/answers", json=a).json() == {"status": "stored"}
    body = client.get("/api/kt/mastery", params={"user_id": "u1"}).json()
    assert list(body) == list(GET_FIELDS)
    expected = bayes.skill_mastery([(1, 1), (1, 0), (5, 1)], list(CATALOG.skill_ids))
    assert body["mastery"] == {str(s): round(p, 4) for s, p in expected.items()}
    assert body["mastery"]["5"] == round(2 / 3, 4) and body["mastery"]["16"] == 0.5
    assert body["topic_mastery"]["algebra"] == round(2 / 4, 4)  # skills 1 and 2: one right of two, Beta(1, 1)
    assert body["topic_mastery"]["geometry"] == round(2 / 3, 4)  # skill 5
    assert (body["source"], body["model_version"], body["n_interactions"]) == ("bayes", BAYES_MODEL_VERSION, 3)
    assert body["as_of"] == at(3) and body["next_skill_recommendation"] == 1
    assert body["answers_by_topic"] == {"algebra": 2, "geometry": 1}
    stored = dynamo.get_mastery(ddb(settings), settings.mastery_table, "u1")
    assert "source" not in stored and stored[dynamo.BAYES_N] == 3  # counters only: nothing else writes this row
    assert (stored["answers#1"], stored["right#1"], stored["answers#5"], stored["right#5"]) == (2, 1, 1, 1)
    assert api.get_body(stored, CATALOG, False) == body


def test_answer_goes_to_the_lake_and_history_once(settings):
    client = client_for(settings)
    a = answer("u2", 1, 2, 1, content_id=9)
    assert client.post("/api/kt/answers", json=a).json() == {"status": "stored"}
    assert client.post("/api/kt/answers", json=a).json() == {"status": "duplicate"}
    history = dynamo.user_history(ddb(settings), settings.history_table, "u2")
    assert history == [{k: v for k, v in dynamo.history_item(a).items() if v is not None}]
    assert lake_lines(settings) == [a]
    day_dir = os.path.join(settings.lake, "events", "answers", "day=2026-11-25")
    assert os.listdir(day_dir) == [f"api-{os.getpid()}.jsonl"]


def test_a_retry_restamped_is_a_duplicate_and_other_content_a_409(settings):
    """Idempotent on answer_id whatever answered_at says; stored once in kt-history, the lake and the counters."""
    client = client_for(settings)
    a = answer("u3", 1, 3, 1, content_id=4)
    assert client.post("/api/kt/answers", json=a).json() == {"status": "stored"}
    assert client.post("/api/kt/answers", json={**a, "answered_at": at(30)}).json() == {"status": "duplicate"}
    for change in ({"skill_id": 4}, {"correct": 0}, {"content_id": 5}, {"content_id": None}):
        resent = {k: v for k, v in {**a, **change}.items() if v is not None}
        r = client.post("/api/kt/answers", json=resent)
        assert (r.status_code, r.json()["field"]) == (409, "answer_id"), change
    assert [h["answer_id"] for h in dynamo.user_history(ddb(settings), settings.history_table, "u3")] == ["u3-1"]
    assert lake_lines(settings) == [a]
    body = client.get("/api/kt/mastery", params={"user_id": "u3"}).json()
    assert (body["n_interactions"], body["mastery"]["3"], body["as_of"]) == (1, round(2 / 3, 4), at(1))


def test_the_transaction_itself_refuses_a_second_copy(settings):
    """What DynamoDB enforces (the twin's pre-check aside): the cancellation reasons say duplicate or conflict."""
    client = ddb(settings)
    a = answer("u3b", 1, 3, 1)
    client.transact_write_items(**dynamo.answer_transaction(a, settings.history_table, settings.mastery_table))
    for resent, outcome in (({**a, "answered_at": at(9)}, "duplicate"), (a, "duplicate"),
                            ({**a, "correct": 0}, "conflict")):
        with pytest.raises(ClientError) as e:
            client.transact_write_items(**dynamo.answer_transaction(resent, settings.history_table,
                                                                    settings.mastery_table))
        assert dynamo.answer_outcome(e.value.response["CancellationReasons"]) == outcome
    row = dynamo.get_mastery(client, settings.mastery_table, "u3b")
    assert (row[dynamo.BAYES_N], row["answers#3"], row["right#3"]) == (1, 1, 1)



def test_answers_rebuilt_from_the_lake_are_served(settings):
    client = client_for(settings)
    for n, (skill, correct) in enumerate([(1, 1), (2, 1), (9, 0)]):
        client.post("/api/kt/answers", json=answer("u4", n, skill, correct))
    fresh = dataclasses.replace(settings, history_table=f"{settings.history_table}-new",
                                mastery_table=f"{settings.mastery_table}-new")
    dynamo.ensure_tables(ddb(fresh), fresh.history_table, fresh.mastery_table)
    assert api.rebuild_from_lake(fresh, ddb(fresh)) == {"answers": 3, "users_counted": 1, "dkt_rows": 0,
                                                     "dkt_rows_written": 0}
    before = client.get("/api/kt/mastery", params={"user_id": "u4"}).json()
    after = client_for(fresh).get("/api/kt/mastery", params={"user_id": "u4"}).json()
    assert after == before


# POST /api/kt/answers validation: 4xx naming the field, never a 500


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"correct": 2}, "correct"),
        ({"correct": "1"}, "correct"),
        ({"correct": True}, "correct"),
        ({"skill_id": 1.5}, "skill_id"),
        ({"skill_id": -1}, "skill_id"),
        ({"content_id": None}, "content_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": 7}, "user_id"),
        ({"answer_id": "x" * 129}, "answer_id"),
        ({"answered_at": "2026-11-25T01:02:03Z"}, "answered_at"),
        ({"answered_at": "2026-11-25 01:02:03.456Z"}, "answered_at"),
        ({"answered_at": "2026-11-25T01:02:03.456Z\n"}, "answered_at"),
        ({"answered_at": "2026-02-30T01:02:03.456Z"}, "answered_at"),
        ({"answered_at": "2026-11-25T12:06:00.000Z"}, "answered_at"),  # 6 minutes after the app's clock
        ({"extra": 1}, "extra"),
        ({"skill_id": None}, "skill_id"),
    ],
)
def test_bad_answers_are_400_naming_the_field(settings, change, field):
    body = {**answer("u5", 1, 1, 1), **change}
    if change.get("skill_id", 0) is None:
        del body["skill_id"]
    r = client_for(settings).post("/api/kt/answers", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field
    assert dynamo.user_history(ddb(settings), settings.history_table, "u5") == []
    assert lake_lines(settings) == []


@pytest.mark.parametrize(
    ("content", "headers", "status", "field"),
    [
        (b"{not json", {"content-type": "application/json"}, 400, "body"),
        (b"\xff\xfe", {"content-type": "application/json"}, 400, "body"),
        (b"[1, 2]", {"content-type": "application/json"}, 400, "body"),
        (b'{"user_id": "u"}', {"content-type": "text/plain"}, 415, "Content-Type"),
        (b'{"user_id": "u"}', {}, 415, "Content-Type"),
        (b"{" + b" " * 5000 + b"}", {"content-type": "application/json"}, 413, "body"),
    ],
)
def test_malformed_answer_bodies(settings, content, headers, status, field):
    r = client_for(settings).post("/api/kt/answers", content=content, headers=headers)
    assert (r.status_code, r.json()["field"]) == (status, field)


def test_body_limit_holds_without_a_content_length(settings):
    def chunks():
        yield b'{"user_id": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    r = client_for(settings).post("/api/kt/answers", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["field"] == "body"


# The Bayesian row never replaces newer evidence


def test_dkt_row_is_served_when_enabled_and_kept_by_later_answers(settings):
    enabled = dataclasses.replace(settings, sagemaker_enabled=True)
    client = client_for(enabled)
    client.post("/api/kt/answers", json=answer("u6", 1, 1, 1))
    assert dynamo.put_mastery_conditional(ddb(settings), settings.mastery_table, dkt_row("u6", at(1)))
    body = client.get("/api/kt/mastery", params={"user_id": "u6"}).json()
    assert (body["source"], body["model_version"], body["as_of"]) == ("dkt", "pythagoras-dkt-test", at(1))
    assert body == api.get_body(dynamo.get_mastery(ddb(settings), settings.mastery_table, "u6"), CATALOG, True)
    assert body["answers_by_topic"] == {"algebra": 1}  # from the row's counters, kept by the refresh's write
    client.post("/api/kt/answers", json=answer("u6", 2, 2, 0))  # newer than the DKT row: the row stays
    assert dynamo.get_mastery(ddb(settings), settings.mastery_table, "u6")["source"] == "dkt"
    assert client.get("/api/kt/mastery", params={"user_id": "u6"}).json()["source"] == "dkt"
    # DKT disabled: the estimate comes from the row's counters, whatever else the row holds
    disabled = client_for(settings).get("/api/kt/mastery", params={"user_id": "u6"}).json()
    assert (disabled["source"], disabled["n_interactions"], disabled["as_of"]) == ("bayes", 2, at(2))


def test_answers_never_replace_a_dkt_row_and_a_dkt_write_keeps_the_counters(settings):
    client = client_for(settings)
    table = settings.mastery_table
    assert dynamo.put_mastery_conditional(ddb(settings), table, dkt_row("old", at(1)))
    client.post("/api/kt/answers", json=answer("old", 2, 1, 1))
    row = dynamo.get_mastery(ddb(settings), table, "old")
    assert (row["source"], row["as_of"], row[dynamo.BAYES_N]) == ("dkt", at(1), 1)
    assert client.get("/api/kt/mastery", params={"user_id": "old"}).json()["source"] == "bayes"  # DKT disabled
    assert dynamo.put_mastery_conditional(ddb(settings), table, dkt_row("old", at(2)))
    assert dynamo.get_mastery(ddb(settings), table, "old")[dynamo.BAYES_N] == 1


def test_late_answer_is_counted_and_as_of_is_the_last_answer_recorded(settings):
    client = client_for(settings)
    client.post("/api/kt/answers", json=answer("u7", 1, 1, 1, minutes=10))
    client.post("/api/kt/answers", json=answer("u7", 2, 1, 0, minutes=5))  # arrives late, answered earlier
    body = client.get("/api/kt/mastery", params={"user_id": "u7"}).json()
    # counters are ADDed in arrival order: an UpdateItem cannot keep a maximum (docs/contracts.md §7.2)
    assert (body["as_of"], body["n_interactions"], body["mastery"]["1"]) == (at(5), 2, 0.5)


# POST /api/kt/mastery


def test_post_mastery_disabled_answers_with_the_bayesian_estimate(settings):
    request = {"user_sequence": [{"skill_id": 3, "correct": 0}, {"skill_id": 3, "correct": 0},
                                 {"skill_id": 4, "correct": 1}]}
    r = client_for(settings).post("/api/kt/mastery", json=request)
    body = r.json()
    assert r.status_code == 200 and body["source"] == "bayes" and "fallback_reason" not in body
    assert body["mastery"]["3"] == 0.25 and body["next_skill_recommendation"] == 3
    assert body["topic_mastery"]["arithmetic"] == round(2 / 5, 4)  # skills 3 and 4
    assert set(body) == {"mastery", "next_skill_recommendation", "predicted_accuracy", "topic_mastery",
                         "model_version", "source"}
    empty = client_for(settings).post("/api/kt/mastery", json={"user_sequence": []}).json()
    assert set(empty["mastery"].values()) == {0.5} and empty["next_skill_recommendation"] == 1


@pytest.mark.parametrize(
    ("request_body", "status", "field"),
    [
        ({}, 400, "user_sequence"),
        ({"user_sequence": "1,0"}, 400, "user_sequence"),
        ({"user_sequence": [{"skill_id": 1, "correct": 1}, {"skill_id": 2, "correct": 3}]}, 400,
         "user_sequence[1].correct"),
        ({"user_sequence": [{"skill_id": 1}]}, 400, "user_sequence[0].correct"),
        ({"user_sequence": [{"skill_id": 1, "correct": 1}, {"skill_id": 999, "correct": 1}]}, 400,
         "user_sequence[1].skill_id"),
        ({"user_sequence": [{"skill_id": 1, "correct": 1}] * 10_001}, 413, "user_sequence"),
        ({"user_id": [1], "user_sequence": []}, 400, "user_id"),
        ({"user_id": 12, "user_sequence": []}, 400, "user_id"),
    ],
)
def test_post_mastery_bad_requests(settings, request_body, status, field):
    r = client_for(settings).post("/api/kt/mastery", json=request_body)
    assert (r.status_code, r.json()["field"]) == (status, field), r.text


def test_post_mastery_body_limit_and_content_type(settings):
    client = client_for(settings)
    big = b'{"user_sequence": [' + b" " * api.MAX_MASTERY_BYTES + b"]}"
    r = client.post("/api/kt/mastery", content=big, headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["field"]) == (413, "body")
    r = client.post("/api/kt/mastery", content=b'{"user_sequence": []}', headers={"content-type": "text/csv"})
    assert (r.status_code, r.json()["field"]) == (415, "Content-Type")


@pytest.fixture(scope="module")
def dkt_model(tiny_model_dir):
    model = inference.model_fn(tiny_model_dir)
    catalog = Catalog(tuple(model.skill_ids), dict(model.skill_topics), "tiny model")
    return model, catalog


def endpoint_app(model) -> Starlette:
    """The SageMaker hosting contract (GET /ping, POST /invocations) around kt.inference and a real model."""

    async def ping(request):
        return Response(status_code=200)

    async def invocations(request):
        body = await request.body()
        try:
            data = inference.input_fn(body, request.headers.get("content-type"))
            out = inference.output_fn(inference.predict_fn(data, model), request.headers.get("accept"))
        except inference.RequestError as e:
            return Response(e.message, status_code=e.status_code, media_type="application/json")
        return Response(out, media_type="application/json")

    return Starlette(routes=[Route("/ping", ping), Route("/invocations", invocations, methods=["POST"])])


def test_post_mastery_from_a_local_endpoint_over_real_http(settings, dkt_model):
    """Real HTTP: the API under uvicorn calls a real DKT endpoint under uvicorn."""
    model, catalog = dkt_model
    skills = list(catalog.skill_ids)
    request = {"user_sequence": [{"skill_id": skills[0], "correct": 1}, {"skill_id": skills[1], "correct": 0}]}
    expected = json.loads(inference.output_fn(inference.predict_fn({"batch": False, "lines": [request]}, model), None))
    enabled = dataclasses.replace(settings, sagemaker_enabled=True)
    with serve(endpoint_app(model)) as endpoint, \
            serve(create_app(enabled, catalog=catalog, endpoint_url=endpoint)) as url:
        r = httpx.post(f"{url}/api/kt/mastery", json=request, headers=HEADERS, timeout=30)
        assert r.status_code == 200
        assert r.json() == {**expected, "source": "dkt"}
        bad = {"user_sequence": [{"skill_id": skills[0], "correct": 1}, {"skill_id": 10**6, "correct": 1}]}
        r = httpx.post(f"{url}/api/kt/mastery", json=bad, headers=HEADERS, timeout=30)
        assert (r.status_code, r.json()["field"]) == (400, "user_sequence[1].skill_id")  # the model's own 4xx
        r = httpx.post(f"{url}/api/kt/mastery", json=request, timeout=30)
        assert r.status_code == 403


def test_post_mastery_falls_back_when_the_endpoint_is_down_fails_or_hangs(settings, dkt_model):
    _, catalog = dkt_model
    enabled = dataclasses.replace(settings, sagemaker_enabled=True)
    skill = catalog.skill_ids[0]
    request = {"user_sequence": [{"skill_id": skill, "correct": 1}]}
    expected = bayes.skill_mastery([(skill, 1)], list(catalog.skill_ids))
    release = threading.Event()

    async def hang(request):
        await anyio.to_thread.run_sync(release.wait)
        return Response(status_code=200)

    async def fail(request):
        return JSONResponse({"error": "CUDA out of memory"}, status_code=500)

    hanging = Starlette(routes=[Route("/invocations", hang, methods=["POST"])])
    failing = Starlette(routes=[Route("/invocations", fail, methods=["POST"])])
    try:
        with serve(hanging) as hanging_url, serve(failing) as failing_url:
            for url, reason in [(f"http://127.0.0.1:{free_port()}", "ConnectError"),
                                (failing_url, "HTTP 500"), (hanging_url, "within 0.5 s")]:
                client = client_for(enabled, catalog=catalog, endpoint_url=url, endpoint_timeout=0.5)
                started = time.monotonic()
                r = client.post("/api/kt/mastery", json=request)
                assert time.monotonic() - started < 10
                body = r.json()
                assert r.status_code == 200 and body["source"] == "bayes", body
                assert reason in body["fallback_reason"]
                assert body["mastery"][str(skill)] == round(expected[skill], 4)
            release.set()
    finally:
        release.set()


def test_post_mastery_through_sagemaker_runtime(settings, dkt_model):
    """SAGEMAKER_KT_ENDPOINT via boto3 InvokeEndpoint (moto answers with the results queued here)."""
    model, catalog = dkt_model
    skill = catalog.skill_ids[0]
    request = {"user_sequence": [{"skill_id": skill, "correct": 0}]}
    expected = inference.output_fn(inference.predict_fn({"batch": False, "lines": [request]}, model), None)
    queued = {"region": settings.region, "account_id": "123456789012",
              "results": [{"Body": expected, "ContentType": "application/json"}]}
    moto_api = f"{settings.aws_endpoint_url}/moto-api/static/sagemaker/endpoint-results"
    httpx.post(moto_api, json=queued).raise_for_status()
    client = client_for(dataclasses.replace(settings, sagemaker_enabled=True), catalog=catalog)
    assert client.post("/api/kt/mastery", json=request).json() == {**json.loads(expected), "source": "dkt"}
    # moto's default answer for anything else is the text "body": not a mastery response -> fallback
    other = client.post("/api/kt/mastery", json={"user_sequence": []}).json()
    assert other["source"] == "bayes" and "HTTP 200" in other["fallback_reason"]


# Auth


def test_api_key_is_required_everywhere_but_static(settings):
    client = TestClient(create_app(settings, catalog=CATALOG))
    for method, path in [("GET", "/api/kt/mastery?user_id=u"), ("POST", "/api/kt/mastery"),
                         ("POST", "/api/kt/answers"), ("GET", "/knowledge-state/u")]:
        for headers in ({}, {"x-api-key": "wrong"}, {"x-api-key": KEY + "x"}, {"x-api-key": ""}):
            r = client.request(method, path, headers=headers, json={})
            assert (r.status_code, r.json()["field"]) == (403, "x-api-key"), (method, path, headers)
    assert client.get("/api/kt/mastery?user_id=u", headers=HEADERS).status_code == 404
    r = client.get("/static/kt.css")
    assert r.status_code == 200 and "text/css" in r.headers["content-type"]


def test_no_key_configured_warns_and_lets_requests_in(settings, caplog):
    open_settings = dataclasses.replace(settings, api_key=None)
    with caplog.at_level("WARNING", logger="kt.api"):
        client = TestClient(create_app(open_settings, catalog=CATALOG))
    assert any("KT_API_KEY is not set" in r.getMessage() for r in caplog.records)
    assert client.get("/api/kt/mastery?user_id=u").status_code == 404
    with pytest.raises(ConfigError, match="KT_API_KEY"):
        create_app(dataclasses.replace(open_settings, runtime="aws", lake="s3://b"), catalog=CATALOG)


def test_dynamodb_down_is_a_502_not_a_crash(settings):
    down = dataclasses.replace(settings, aws_endpoint_url=f"http://127.0.0.1:{free_port()}")
    r = client_for(down).get("/api/kt/mastery", params={"user_id": "u"})
    assert (r.status_code, r.json()["field"]) == (502, None)


# Catalog and start-up


def test_catalog_comes_from_the_model_then_the_skills_table_then_the_seed(sample_lake, tiny_model_dir, tmp_path):
    from kt import artifact, lake

    seed = api.load_catalog(Settings(lake=str(tmp_path / "empty")))
    assert seed.skill_ids == tuple(range(1, 9)) and seed.skill_topics[8] == "linear_algebra"
    processed = api.load_catalog(Settings(lake=sample_lake))
    assert processed.origin.endswith("skills.parquet") and len(processed.skill_ids) > 8
    model_lake = str(tmp_path / "with-model")
    url = lake.join(model_lake, "models", "dkt", "tiny", "output", "model.tar.gz")
    artifact.pack(tiny_model_dir, url)
    lake.write_text(lake.join(model_lake, "models", "dkt", "current.json"), json.dumps({"model_data_url": url}))
    info = artifact.read_info(tiny_model_dir)
    from_model = api.load_catalog(Settings(lake=model_lake))
    assert from_model.skill_ids == tuple(int(s) for s in info["skill_ids"])
    assert from_model.origin == f"model {info['model_version']}"


def test_dkt_rows_are_rebuilt_from_batch_outputs(settings):
    from kt import lake

    batch = lake.join(settings.lake, "inference", "batch")
    for run_date, as_of, version in [("2026-11-24", at(1), "v1"), ("2026-11-25", at(2), "v2")]:
        lake.write_text(lake.join(batch, run_date, "input", "part-00000.jsonl"), json.dumps(
            {"user_id": "u8", "as_of": as_of, "user_sequence": [{"skill_id": 1, "correct": 1}] * 3}) + "\n")
        out = {**{k: v for k, v in dkt_row("u8", as_of, version).items() if k not in ("source", "updated_at",
                                                                                      "n_interactions")}}
        lake.write_text(lake.join(batch, run_date, "output", "part-00000.jsonl.out"),
                        json.dumps(out) + "\n" + json.dumps({"error": "bad", "field": "line[1]"}) + "\n")
    first = api.rebuild_from_lake(settings, ddb(settings))
    # one user's rows are written in turn, in night order: v1, then v2 over it
    assert (first["answers"], first["dkt_rows"], first["dkt_rows_written"]) == (0, 2, 2)
    row = dynamo.get_mastery(ddb(settings), settings.mastery_table, "u8")
    assert (row["model_version"], row["as_of"], row["n_interactions"], row["source"]) == ("v2", at(2), 3, "dkt")
    assert api.rebuild_from_lake(settings, ddb(settings))["dkt_rows_written"] == 0  # idempotent



@pytest.mark.slow
def test_kt_api_command_serves_the_lakes_answers(tmp_path):
    """Real HTTP: `kt api` starts an embedded moto, loads kt-history from the lake and serves it."""
    from kt import lake

    root = str(tmp_path / "lake")
    events = [answer("tutor-1", n, 1 + n % 3, n % 2) for n in range(4)]
    lake.write_text(lake.join(root, "events", "answers", "day=2026-11-25", "sample.jsonl"),
                    "".join(json.dumps(e) + "\n" for e in events))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KT_", "AWS_", "SAGEMAKER_"))}
    env.update({"KT_LAKE": root, "KT_API_KEY": KEY, "PYTHONPATH": os.path.join(REPO, "src")})
    proc = subprocess.Popen([sys.executable, "-m", "kt.cli", "api", "--port", str(port)], env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stderr:  # blocks until uvicorn says it listens (or the process dies)
            lines.append(line)
            if "Uvicorn running on" in line:
                break
        assert any("loaded from the lake" in line and "'answers': 4" in line for line in lines), lines
        r = httpx.get(f"http://127.0.0.1:{port}/api/kt/mastery", params={"user_id": "tutor-1"}, headers=HEADERS)
        assert r.status_code == 200 and r.json()["n_interactions"] == 4 and r.json()["source"] == "bayes"
        assert httpx.get(f"http://127.0.0.1:{port}/api/kt/mastery", params={"user_id": "tutor-1"}).status_code == 403
    finally:
        proc.terminate()
        _, rest = proc.communicate(timeout=30)
    assert "Finished server process" in rest  # a graceful shutdown (uvicorn then re-raises the SIGTERM)
    assert proc.returncode in (0, -signal.SIGTERM)


def test_unknown_routes_and_methods_answer_json(settings):
    client = client_for(settings)
    r = client.put("/api/kt/mastery", json={})
    assert (r.status_code, r.json()["field"]) == (405, None)
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
    r = client.get("/api/kt/nothing")
    assert (r.status_code, r.json()) == (404, {"error": "Not Found", "field": None})
