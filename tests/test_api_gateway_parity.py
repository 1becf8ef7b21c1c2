"""The local app and the Terraform API Gateway answer with the same JSON.

The mapping templates of terraform/templates/ are rendered by a VTL engine
(airspeed, in .venv-lint as for tests/test_terraform.py); the requests they
build are replayed on a moto DynamoDB (tables of their own) and their
response templates rendered on what moto answers. One corpus of answers and
GETs goes through both the local app and that API Gateway stand-in: same
statuses, same keys in the same order, same values.

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

from botocore.exceptions import ClientError

from kt import aws, dynamo, refresh
from kt.api import GET_FIELDS, Catalog, create_app, get_body
from kt.config import Settings
from kt.topics import DEFAULT_SKILL_TOPICS, TOPICS
from kt.tutor import select_weakest_topic
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


def client(settings: Settings, catalog: Catalog = CATALOG) -> TestClient:
    return TestClient(create_app(settings, catalog=catalog), headers={"x-api-key": KEY})


def catalog_vars(skill_topics: dict[str, str], dkt_enabled: bool) -> dict[str, str]:
    """get_mastery_response.vtl's templatefile variables, computed as api_gateway.tf computes them."""
    return {"skill_topics": json.dumps(skill_topics), "topics": json.dumps(sorted(set(skill_topics.values()))),
            "dkt_enabled": "true" if dkt_enabled else "false"}


# The seed's catalog: what api_gateway.tf bakes into the GET template (glue/skill_mappings.json) and the twin's default.
SEED_TOPICS = json.loads((ROOT / "glue" / "skill_mappings.json").read_text())
SEED = Catalog(tuple(sorted(int(s) for s in SEED_TOPICS)), {int(s): t for s, t in SEED_TOPICS.items()}, "seed")


def at(second: int) -> str:
    return f"2026-11-25T01:{second // 60:02d}:{second % 60:02d}.000Z"


def corpus() -> list[dict]:
    """Answers as tutors send them: several users, skills in and out of the catalog, content_id or not, retries
    re-stamped, identical resends and conflicting resends."""
    answers = []
    for n in range(40):
        user = f"corpus-{n % 4}"
        answer = {"user_id": user, "answer_id": f"{user}-a{n}", "skill_id": [1, 2, 3, 5, 8, 42][n % 6],
                  "correct": (n * 7 % 3) % 2, "answered_at": at(n)}
        if n % 3:
            answer["content_id"] = 100 + n
        answers.append(answer)
        if n % 5 == 0:
            answers.append({**answer, "answered_at": at(n + 200)})  # a retry, re-stamped: duplicate
        if n % 7 == 0:
            answers.append(dict(answer))  # the same request again: duplicate
        if n % 9 == 0:
            answers.append({**answer, "correct": 1 - answer["correct"]})  # other content: 409
    answers.append({"user_id": "quote'user", "answer_id": "q'1", "skill_id": 4, "correct": 1,
                    "answered_at": at(300)})
    return answers


def aws_posts(ddb, answers: list[dict], history_table: str, mastery_table: str) -> list[tuple[int, dict]]:
    """POST /api/kt/answers as API Gateway runs it, in order: the request template, TransactWriteItems on moto,
    then the 200 template or, for DynamoDB's 400, post_answer_error.vtl on DynamoDB's error body."""
    tables = {"history_table": history_table, "mastery_table": mastery_table}
    requests = render([{"file": "post_answer_request.vtl", "body": a, "vars": tables} for a in answers])
    stored = json.loads(terraform_response_template("post_answer", "200"))
    results: list = []
    for request in requests:
        try:
            ddb.transact_write_items(**request["json"])
            results.append((200, stored))
        except ClientError as e:
            error = {"__type": f"com.amazonaws.dynamodb.v20120810#{e.response['Error']['Code']}",
                     "Message": e.response["Error"]["Message"]}
            if "CancellationReasons" in e.response:
                error["CancellationReasons"] = e.response["CancellationReasons"]
            results.append({"file": "post_answer_error.vtl", "body": error})
    errors = iter(render([r for r in results if isinstance(r, dict)]))
    out = []
    for r in results:
        if isinstance(r, dict):
            error = next(errors)
            r = (error["status"] or 400, error["json"])
        out.append(r)
    return out


def aws_gets(ddb, users: list[str], mastery_table: str, dkt_enabled: bool) -> list[tuple[int, dict]]:
    """GET /api/kt/mastery as API Gateway runs it: the request template's GetItem on moto, the response template."""
    requests = render([{"file": "get_mastery_request.vtl", "params": {"user_id": u}, "table": mastery_table}
                       for u in users])
    items = [ddb.get_item(**r["json"]) for r in requests]
    out = render([{"file": "get_mastery_response.vtl", "body": {"Item": got["Item"]} if "Item" in got else {},
                   "vars": catalog_vars(SEED_TOPICS, dkt_enabled)} for got in items])
    return [(o["status"] or 200, o["json"]) for o in out]


def test_one_corpus_gives_the_same_answers_and_bodies_on_the_twin_and_the_templates(env):
    """Phase 1 on AWS (issue 19 item 5): every answer through the twin and through the rendered templates replayed
    on moto; then every GET, DKT off and on, before and after the refresh writes DKT rows, gives the same body."""
    settings, ddb = env
    twin = dataclasses.replace(settings, history_table=f"{settings.history_table}-twin",
                               mastery_table=f"{settings.mastery_table}-twin")
    gateway = dataclasses.replace(settings, history_table=f"{settings.history_table}-gw",
                                  mastery_table=f"{settings.mastery_table}-gw")
    for s in (twin, gateway):
        dynamo.ensure_tables(ddb, s.history_table, s.mastery_table)
    app = client(twin, SEED)
    assert SEED.skill_topics == {int(s): t for s, t in DEFAULT_SKILL_TOPICS.items()}  # the twin's default catalog
    answers = corpus()
    gateway_answers = aws_posts(ddb, answers, gateway.history_table, gateway.mastery_table)
    statuses = []
    for answer, (status, body) in zip(answers, gateway_answers, strict=True):
        local = app.post("/api/kt/answers", json=answer)
        assert (local.status_code, local.json()) == (status, body), answer
        statuses.append(status)
    assert statuses.count(409) == 5 and sum(1 for s in statuses if s == 200) == len(statuses) - 5
    users = sorted({a["user_id"] for a in corpus()}) + ["nobody"]
    for s in (twin, gateway):  # each side's kt-history holds every answer once, in the same order
        assert [dynamo.user_history(ddb, s.history_table, u) for u in users] == [
            dynamo.user_history(ddb, twin.history_table, u) for u in users]

    def compare(dkt_enabled: bool) -> list[dict]:
        served = TestClient(create_app(dataclasses.replace(twin, sagemaker_enabled=dkt_enabled), catalog=SEED),
                            headers={"x-api-key": KEY})
        bodies = []
        for user, (status, body) in zip(users, aws_gets(ddb, users, gateway.mastery_table, dkt_enabled), strict=True):
            local = served.get("/api/kt/mastery", params={"user_id": user})
            assert (local.status_code, local.json()) == (status, body), (user, dkt_enabled)
            assert status == 404 or list(body) == list(GET_FIELDS)
            bodies.append(body)
        return bodies

    before = compare(dkt_enabled=False)
    assert compare(dkt_enabled=True) == before  # no DKT row yet: the Bayesian estimate either way
    assert {b.get("source") for b in before} == {"bayes", None}
    # the nightly refresh writes a DKT row for one user on both sides: it wins when DKT is enabled, keeps the counters
    line = {"user_id": "corpus-1", "as_of": at(5), "mastery": {"1": 0.78, "5": 0.34, "2": 1.0},
            "topic_mastery": {"algebra": 0.61, "geometry": 0.48}, "next_skill_recommendation": 5,
            "predicted_accuracy": 0.45, "model_version": "pythagoras-dkt-2026-11-25-0200"}
    for s in (twin, gateway):
        assert dynamo.put_mastery_conditional(ddb, s.mastery_table,
                                              refresh.mastery_item(line, "2026-11-25T02:00:03+00:00", 2))
    assert compare(dkt_enabled=False) == before
    enabled = compare(dkt_enabled=True)
    dkt = enabled[users.index("corpus-1")]
    assert (dkt["source"], dkt["answers_by_topic"]) == ("dkt", before[users.index("corpus-1")]["answers_by_topic"])
    # what the tutor needs is in the body: select_weakest_topic reads answers_by_topic, no extra argument
    for body in before[:-1]:
        practised = {t for t, n in body["answers_by_topic"].items() if n > 0 and t in TOPICS}
        assert select_weakest_topic(body) == min(practised, key=lambda t: (body["topic_mastery"][t], TOPICS.index(t)))


def test_the_gets_numbers_are_the_posterior_means_rounded_half_up(env):
    """Values where float rounding and half-up differ (x.xxxx5 exactly): the template and kt.bayes agree."""
    settings, _ = env
    item = {"user_id": {"S": "halves"}, "bayes_n": {"N": "38"}, "bayes_as_of": {"S": at(1)},
            "answers#1": {"N": "30"}, "right#1": {"N": "0"},  # 1/32 = 0.03125 -> 0.0313 (round() gives 0.0312)
            "answers#6": {"N": "6"}, "right#6": {"N": "2"},  # 3/8 = 0.375
            "answers#77": {"N": "2"}, "right#77": {"N": "2"}}  # outside the catalog: mastery, topic "other"
    status, body = aws_get_item(item)
    local = get_body(dynamo.deserialize(item), SEED, False)
    assert (status, body) == (200, local)
    assert body["mastery"]["1"] == 0.0313 and body["mastery"]["77"] == 0.75 and body["mastery"]["8"] == 0.5
    assert body["answers_by_topic"] == {"algebra": 30, "statistics": 6, "other": 2}
    assert (body["next_skill_recommendation"], body["n_interactions"]) == (1, 38)
    assert body["topic_mastery"]["statistics"] == 0.375 and body["topic_mastery"]["algebra"] == 0.0313


def aws_get_item(item: dict, dkt_enabled: bool = False) -> tuple[int, dict]:
    (out,) = render([{"file": "get_mastery_response.vtl", "body": {"Item": item},
                      "vars": catalog_vars(SEED_TOPICS, dkt_enabled)}])
    return out["status"] or 200, out["json"]


def test_older_dkt_items_without_counters_render_empty_answers_by_topic(env):
    item = dynamo.serialize({"user_id": "old", "mastery": {"1": 0.5}, "topic_mastery": {"algebra": 0.5},
                             "next_skill_recommendation": 1, "predicted_accuracy": 0.5, "model_version": "v",
                             "source": "dkt", "as_of": at(1), "updated_at": at(2), "n_interactions": 1})
    status, body = aws_get_item(item, dkt_enabled=True)
    assert (status, body) == (200, get_body(dynamo.deserialize(item), SEED, True))
    assert body["answers_by_topic"] == {}
    assert aws_get_item(item, dkt_enabled=False)[0] == 404  # DKT off and no answer counted: nothing to serve


ANSWERS = [{"user_id": "bayes-user", "answer_id": "a-1", "skill_id": 3, "correct": 1, "content_id": 7,
            "answered_at": "2026-11-25T01:02:03.456Z"}]


def test_get_mastery_request_template_reads_the_key_the_app_reads(env):
    settings, _ = env
    (request,) = render([{"file": "get_mastery_request.vtl", "params": {"user_id": "bayes-user"},
                          "table": settings.mastery_table}])
    assert request["json"] == {"TableName": settings.mastery_table, "Key": {"user_id": {"S": "bayes-user"}}}


def test_post_answer_request_template_is_the_twins_transaction():
    answer = {"user_id": "item-user", "answer_id": "x'1#2", "skill_id": 4, "correct": 0, "content_id": 3,
              "answered_at": "2026-11-25T05:06:07.089Z"}
    bare = {k: v for k, v in answer.items() if k != "content_id"}
    tables = {"history_table": "kt-history", "mastery_table": "kt-mastery"}
    rendered = render([{"file": "post_answer_request.vtl", "body": a, "vars": tables} for a in (answer, bare)])
    for a, request in zip((answer, bare), rendered):
        assert request["json"] == dynamo.answer_transaction(a, "kt-history", "kt-mastery")


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
