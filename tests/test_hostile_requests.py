"""One corpus of hostile requests (tests/hostile_requests.py) against every door: always a 4xx naming the field.

Doors: `kt api` (both POST routes), the handlers as `kt predict` runs them, `kt predict`
itself (a JSON Lines batch), `kt endpoint serve` (the handlers bundled in model.tar.gz),
and API Gateway's request models (JSON Schema draft 4) with the answer mapping template.

    .venv/bin/python -m pytest -q tests/test_hostile_requests.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal

import httpx
import jsonschema
import pytest
from boto3.dynamodb.types import TypeDeserializer
from starlette.testclient import TestClient

from hostile_requests import CASES, Case
from kt import artifact, inference, serve
from kt.api import Catalog, create_app
from kt.topics import TOPICS
from kt_testing import moto_tables, render_vtl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = os.path.join(REPO, "terraform", "templates")
SCHEMAS = {"answers": "answer.schema.json", "mastery": "mastery_request.schema.json"}
KEY = "hostile-key"
CATALOG = Catalog(tuple(range(1, 17)), {s: TOPICS[(s - 1) // 2] for s in range(1, 17)}, "tests")


def test_the_corpus_is_large_and_covers_both_routes():
    assert len(CASES) >= 200
    assert {c.route for c in CASES} == {"answers", "mastery"}


def _refusal(status: int, body: bytes) -> str | None:
    """None for a 4xx whose JSON body names the field; else what is wrong."""
    if not 400 <= status < 500:
        return f"HTTP {status}"
    try:
        error = json.loads(body)
    except ValueError:
        return f"HTTP {status} with a body that is not JSON: {body[:80]!r}"
    if not (isinstance(error, dict) and set(error) == {"error", "field"} and error["field"]):
        return f"HTTP {status} without a field: {error}"
    return None


def _headers(case: Case) -> dict:
    return {"content-type": case.content_type} if case.content_type else {}


@pytest.fixture(scope="module")
def model_tar(tiny_model_dir, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("hostile") / "model.tar.gz")
    artifact.pack(tiny_model_dir, path)
    return path


def test_kt_api_answers_4xx_to_every_case(tmp_path):
    with moto_tables(str(tmp_path / "lake"), api_key=KEY) as settings:
        client = TestClient(create_app(settings, catalog=CATALOG), headers={"x-api-key": KEY},
                            raise_server_exceptions=False)
        wrong = {}
        for case in CASES:
            r = client.post(f"/api/kt/{case.route}", content=case.raw, headers=_headers(case))
            if problem := _refusal(r.status_code, r.content):
                wrong[case.name] = problem
    assert not wrong
    assert not os.path.exists(tmp_path / "lake" / "events"), "a refused answer reached the lake"


def test_the_handlers_answer_4xx_to_every_case_the_model_must_refuse(tiny_model_dir):
    """input_fn -> predict_fn -> output_fn, the chain `kt predict` runs; any other exception is a traceback."""
    model = inference.model_fn(tiny_model_dir)
    wrong = {}
    for case in CASES:
        try:
            inference.output_fn(inference.predict_fn(inference.input_fn(case.raw, case.content_type or None), model),
                                None)
            outcome = None if "model" in case.accepted_by else "accepted"
        except inference.RequestError as e:
            outcome = _refusal(e.status_code, e.message.encode()) if "model" not in case.accepted_by else "refused"
        except Exception as e:  # noqa: BLE001 - the point: nothing else may escape
            outcome = f"{type(e).__name__}: {e}"[:200]
        if outcome:
            wrong[case.name] = outcome
    assert not wrong


def _one_line(case: Case) -> bool:
    try:
        text = case.raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return case.content_type == "application/json" and text.strip() and len(text.splitlines()) == 1


def test_kt_predict_gives_every_case_of_a_json_lines_batch_an_error_line(model_tar):
    lines = [c for c in CASES if _one_line(c) and "model" not in c.accepted_by]
    stdin = "".join(c.raw.decode("utf-8") + "\n" for c in lines)
    out = subprocess.run([sys.executable, "-m", "kt.cli", "predict", "--model", model_tar, "--content-type",
                          "application/jsonlines", "--accept", "application/jsonlines"], input=stdin,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.path.join(REPO, "src")})
    assert out.returncode == 0, out.stderr[-2000:]
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(results) == len(lines) > 150
    assert [c.name for c, r in zip(lines, results) if "error" not in r or not r.get("field")] == []


@pytest.mark.slow
def test_kt_endpoint_serve_with_the_bundled_handlers_answers_4xx_to_every_case(model_tar):
    wrong = {}
    with serve.running(model_tar) as endpoint, httpx.Client(base_url=endpoint.url, timeout=60) as client:
        for case in CASES:
            r = client.post("/invocations", content=case.raw, headers=_headers(case))
            problem = _refusal(r.status_code, r.content)
            if "model" in case.accepted_by:
                problem = None if r.status_code == 200 else f"refused: HTTP {r.status_code} {r.text[:100]}"
            if problem:
                wrong[case.name] = problem
    assert not wrong


def _edge_parse(raw: bytes) -> object:
    """API Gateway's parse, as far as a strict JSON parser models it (NaN refused, BOM skipped, last key wins)."""
    def refuse(name: str) -> object:
        raise ValueError(name)

    return json.loads(raw, parse_constant=refuse)


def _edge_accepts(case: Case) -> bool:
    try:
        document = _edge_parse(case.raw)
    except (ValueError, RecursionError):
        return False
    with open(os.path.join(TEMPLATES, SCHEMAS[case.route])) as f:
        return jsonschema.Draft4Validator(json.load(f)).is_valid(document)


def test_api_gateway_request_models_refuse_what_a_schema_can_say():
    """Every JSON case is refused by the route's request model, except those marked as beyond a schema."""
    cases = [c for c in CASES if c.content_type == "application/json"]
    assert [c.name for c in cases if _edge_accepts(c) != ("edge" in c.accepted_by)] == []


def test_answers_the_edge_passes_render_items_dynamodb_can_store():
    """The mapping template turns what the Answer model passes into writes whose numbers DynamoDB takes."""
    passed = [c for c in CASES if c.route == "answers" and "edge" in c.accepted_by]
    tables = {"history_table": "kt-history", "mastery_table": "kt-mastery"}
    rendered = render_vtl([{"file": "post_answer_request.vtl", "body": _edge_parse(c.raw), "vars": tables}
                           for c in passed])
    assert len(rendered) == len(passed) > 5
    for case, out in zip(passed, rendered):
        writes = [w for t in json.loads(out["body"])["TransactItems"] for w in t.values()]
        values = {f"{w['TableName']}.{k}": v for w in writes
                  for k, v in {**w.get("Item", {}), **w.get("ExpressionAttributeValues", {})}.items()}
        assert len(writes) == 4 and values, case.name
        for name, value in values.items():
            stored = TypeDeserializer().deserialize(value)  # DynamoDB's number rules: at most 38 digits
            if "N" in value:
                assert isinstance(stored, Decimal) and abs(stored) <= 2**31 - 1, (case.name, name)
