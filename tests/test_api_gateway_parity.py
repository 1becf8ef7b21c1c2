"""The local app and the Terraform API Gateway answer with the same JSON.

The mapping templates of terraform/templates/ are rendered by a VTL engine
(airspeed, in .venv-lint as for tests/test_terraform.py) on the very items the
local app reads or writes on a moto DynamoDB, and compared with the local
app's bodies: same keys in the same order, same JSON types, same values.

    .venv/bin/python -m pytest -q tests/test_api_gateway_parity.py
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path

import hcl2
import jsonschema
import pytest
from hcl2 import SerializationOptions
from starlette.testclient import TestClient

from kt import aws, dynamo, refresh
from kt.api import Catalog, create_app
from kt.config import Settings
from kt.topics import TOPICS
from kt_testing import moto_tables, render_vtl

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "terraform" / "templates"
KEY = "parity-key"
CATALOG = Catalog(tuple(range(1, 17)), {s: TOPICS[(s - 1) // 2] for s in range(1, 17)}, "tests")


def render(cases: list[dict]) -> list[dict]:
    """Render templates in .venv-lint; each result is {"status": override or None, "json": parsed body}."""
    return [{"status": r["status"], "json": json.loads(r["body"])} for r in render_vtl(cases)]


def shape(value: object) -> object:
    """The JSON shape: object keys in order with the shapes of their values; numbers are one type."""
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return ["list", *sorted({json.dumps(shape(v)) for v in value})]
    return type(value).__name__


def maps_as_shapes(body: dict) -> object:
    """Like shape(), but the skill and topic maps become {"<key>": number} (their keys are data)."""
    return shape({k: ({"<key>": 0.0} if isinstance(v, dict) and v else v) for k, v in body.items()})


def terraform_response_template(route: str, status: str) -> str:
    """The body template of a route's integration response for `status` (local.api_routes in api_gateway.tf)."""
    doc = hcl2.load((ROOT / "terraform" / "api_gateway.tf").open(),
                    serialization_options=SerializationOptions(strip_string_quotes=True, with_comments=False,
                                                               explicit_blocks=False))
    routes = next(entry["api_routes"] for entry in doc["locals"] if "api_routes" in entry)
    return routes[route]["responses"][status]["template"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with moto_tables(str(tmp_path_factory.mktemp("lake")), api_key=KEY) as settings:
        yield settings, aws.client(settings, "dynamodb")


def client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings, catalog=CATALOG), headers={"x-api-key": KEY})


ANSWERS = [
    {"user_id": "bayes-user", "answer_id": "a-1", "skill_id": 3, "correct": 1, "content_id": 7,
     "answered_at": "2026-11-25T01:02:03.456Z"},
    {"user_id": "bayes-user", "answer_id": "a-2", "skill_id": 12, "correct": 0,
     "answered_at": "2026-11-25T01:03:00.000Z"},
]


def test_get_mastery_bodies_match_the_response_template(env):
    settings, ddb = env
    app = client(settings)
    for a in ANSWERS:
        assert app.post("/api/kt/answers", json=a).status_code == 200
    # a DKT row exactly as the nightly refresh writes it (a transform output line through refresh.mastery_item)
    line = {"user_id": "dkt-user", "as_of": "2026-11-25T01:00:00.000Z", "mastery": {"1": 0.78, "15": 0.34, "2": 1.0},
            "topic_mastery": {"algebra": 0.61, "geometry": 0.48}, "next_skill_recommendation": 15,
            "predicted_accuracy": 0.45, "model_version": "pythagoras-dkt-2026-11-25-0200"}
    assert dynamo.put_mastery_conditional(ddb, settings.mastery_table,
                                          refresh.mastery_item(line, "2026-11-25T02:00:03+00:00", 12))
    items = {u: ddb.get_item(TableName=settings.mastery_table, Key={"user_id": {"S": u}})["Item"]
             for u in ("dkt-user", "bayes-user")}
    dkt_vtl, bayes_vtl, missing_vtl = render([
        {"file": "get_mastery_response.vtl", "body": {"Item": items["dkt-user"]}},
        {"file": "get_mastery_response.vtl", "body": {"Item": items["bayes-user"]}},
        {"file": "get_mastery_response.vtl", "body": {}},
    ])  # fmt: skip

    enabled = TestClient(create_app(dataclasses.replace(settings, sagemaker_enabled=True), catalog=CATALOG),
                         headers={"x-api-key": KEY})
    dkt_local = enabled.get("/api/kt/mastery", params={"user_id": "dkt-user"})
    assert dkt_local.status_code == 200 and dkt_vtl["status"] is None
    assert list(dkt_local.json()) == list(dkt_vtl["json"])
    assert shape(dkt_local.json()) == shape(dkt_vtl["json"])
    assert dkt_local.json() == dkt_vtl["json"]  # same row, same values

    bayes_local = app.get("/api/kt/mastery", params={"user_id": "bayes-user"})
    assert bayes_local.status_code == 200 and bayes_vtl["status"] is None
    assert maps_as_shapes(bayes_local.json()) == maps_as_shapes(bayes_vtl["json"])
    assert maps_as_shapes(bayes_local.json()) == maps_as_shapes(dkt_vtl["json"])  # both sources, one shape
    # computed now from kt-history vs the row written with the answers: only updated_at may differ
    assert {k: v for k, v in bayes_local.json().items() if k != "updated_at"} == {
        k: v for k, v in bayes_vtl["json"].items() if k != "updated_at"}

    missing_local = app.get("/api/kt/mastery", params={"user_id": "nobody"})
    assert (missing_local.status_code, missing_vtl["status"]) == (404, 404)
    assert missing_local.json() == missing_vtl["json"]


def test_get_mastery_request_template_reads_the_key_the_app_reads(env):
    settings, _ = env
    (request,) = render([{"file": "get_mastery_request.vtl", "params": {"user_id": "bayes-user"},
                          "table": settings.mastery_table}])
    assert request["json"] == {"TableName": settings.mastery_table, "Key": {"user_id": {"S": "bayes-user"}}}


def test_post_answer_writes_the_item_the_request_template_builds(env):
    settings, ddb = env
    app = client(settings)
    answer = {"user_id": "item-user", "answer_id": "x'1", "skill_id": 4, "correct": 0, "content_id": 3,
              "answered_at": "2026-11-25T05:06:07.089Z"}
    bare = {k: v for k, v in answer.items() if k != "content_id"} | {"answer_id": "x-2"}
    first, repeat, second = (app.post("/api/kt/answers", json=a) for a in (answer, answer, bare))
    request, bare_request, duplicate = render([
        {"file": "post_answer_request.vtl", "body": answer, "table": settings.history_table},
        {"file": "post_answer_request.vtl", "body": bare, "table": settings.history_table},
        {"file": "post_answer_error.vtl", "body": {
            "__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
            "message": "The conditional request failed"}},
    ])  # fmt: skip
    stored = {i["ts"]["S"]: i for i in ddb.query(
        TableName=settings.history_table, KeyConditionExpression="user_id = :u",
        ExpressionAttributeValues={":u": {"S": "item-user"}})["Items"]}
    for req in (request, bare_request):
        item = req["json"]["Item"]
        assert req["json"]["ConditionExpression"] == "attribute_not_exists(ts)"
        assert stored[item["ts"]["S"]] == item  # the same attributes, types and values
    assert (first.status_code, first.json()) == (200, json.loads(terraform_response_template("post_answer", "200")))
    assert (repeat.status_code, repeat.json()) == (duplicate["status"], duplicate["json"])
    assert repeat.json() == {"status": "duplicate"}
    assert second.json() == {"status": "stored"}


@pytest.mark.parametrize(
    "change",
    [
        {}, {"content_id": None}, {"correct": 2}, {"correct": "1"}, {"correct": True}, {"skill_id": 1.5},
        {"skill_id": -3}, {"content_id": -1}, {"answered_at": "2026-11-25T01:02:03Z"},
        {"answered_at": "2026-11-25 01:02:03.456Z"}, {"user_id": None}, {"user_id": ""}, {"user_id": "u" * 129},
        {"answer_id": 5}, {"extra": 1},
    ],
)
def test_answer_validation_agrees_with_the_answer_model(env, change):
    settings, _ = env
    body = {**ANSWERS[0], "answer_id": f"v-{uuid.uuid4().hex}", **change}
    body = {k: v for k, v in body.items() if not (v is None and k in change)}
    schema = json.loads((TEMPLATES / "answer.schema.json").read_text())
    valid = not list(jsonschema.Draft4Validator(schema).iter_errors(body))
    r = client(settings).post("/api/kt/answers", json=body)
    assert r.status_code == (200 if valid else 400), r.text
    if not valid:
        assert set(r.json()) == {"error", "field"}


@pytest.mark.parametrize(
    "request_body",
    [{}, {"user_sequence": {}}, {"user_sequence": [1]}, {"user_id": 3, "user_sequence": []}, [], "x"],
)
def test_mastery_envelope_rejected_by_the_schema_is_rejected_locally(env, request_body):
    settings, _ = env
    schema = json.loads((TEMPLATES / "mastery_request.schema.json").read_text())
    assert list(jsonschema.Draft4Validator(schema).iter_errors(request_body)), "the schema must reject it"
    r = client(settings).post("/api/kt/mastery", json=request_body)
    assert r.status_code == 400 and set(r.json()) == {"error", "field"}


def test_post_mastery_4xx_from_the_model_has_the_shape_the_error_template_passes_through(env):
    settings, _ = env
    bad = {"user_sequence": [{"skill_id": 1, "correct": 5}]}
    local = client(settings).post("/api/kt/mastery", json=bad)
    (passed,) = render([{"file": "post_mastery_error.vtl", "body": {
        "ErrorCode": "CLIENT_ERROR_FROM_MODEL", "OriginalStatusCode": local.status_code,
        "OriginalMessage": local.text}}])  # fmt: skip
    assert (passed["status"], passed["json"]) == (local.status_code, local.json())
    assert local.json() == {"error": "correct must be 0 or 1", "field": "user_sequence[0].correct"}
