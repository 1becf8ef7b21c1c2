"""The lake never blocks the service: hostile lake lines (tests/hostile_lake_lines.py) are quarantined with a reason.

Readers (`kt api` at start, `kt refresh`, `kt chart`) serve the good lines beside them,
`kt lake check` reports them, and the API never appends a line it could not store.

    .venv/bin/python -m pytest -q tests/test_lake_check.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from starlette.testclient import TestClient

from hostile_lake_lines import (ANSWER_LINES, GOOD_ANSWERS, GOOD_INPUT, GOOD_OUTPUT, INPUT_LINES, OUTPUT_LINES,
                                TRANSFORM_ERROR)
from kt import api, aws, dynamo, lake, lake_check, pipeline, refresh
from kt.api import Catalog, create_app
from kt.topics import TOPICS
from kt_testing import moto_tables

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NIGHT = "2026-11-25"
CATALOG = Catalog(tuple(range(1, 17)), {s: TOPICS[(s - 1) // 2] for s in range(1, 17)}, "tests")


def _interleave(good: list[dict], bad: dict[str, bytes]) -> tuple[bytes, dict[int, str]]:
    """A file of the good lines with the bad ones between them; the bad ones' line numbers (1-based) and names."""
    lines, where = [], {}
    good_lines = [json.dumps(g).encode() for g in good]
    for i, (name, raw) in enumerate(bad.items()):
        if i < len(good_lines):
            lines.append(good_lines[i])
        lines.append(raw)
        where[len(lines)] = name
    lines.extend(good_lines[len(bad):])
    return b"\n".join(lines) + b"\n", where


def _write(path: str, body: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(body)
    return path


@pytest.fixture()
def hostile_lake(tmp_path) -> dict:
    """A local lake holding every hostile line beside good ones; returns where the bad lines are."""
    root = str(tmp_path / "lake")
    answers, answers_bad = _interleave(GOOD_ANSWERS, ANSWER_LINES)
    inputs, inputs_bad = _interleave([GOOD_INPUT], INPUT_LINES)
    outputs, outputs_bad = _interleave([GOOD_OUTPUT, TRANSFORM_ERROR], OUTPUT_LINES)
    batch = os.path.join(root, "inference", "batch", NIGHT)
    return {
        "root": root,
        _write(os.path.join(root, "events", "answers", f"day={NIGHT}", "api-1.jsonl"), answers): answers_bad,
        _write(os.path.join(batch, "input", "part-00000.jsonl"), inputs): inputs_bad,
        _write(os.path.join(batch, "output", "part-00000.jsonl.out"), outputs): outputs_bad,
    }


def test_the_corpus_is_large():
    assert len(ANSWER_LINES) + len(INPUT_LINES) + len(OUTPUT_LINES) >= 50


def _quarantined(bad: list) -> dict[tuple[str, int], str]:
    return {(q.uri, q.line): q.reason for q in bad}


def test_every_hostile_answer_line_is_quarantined_and_the_good_ones_served(hostile_lake):
    answers, bad = refresh.read_answer_lines(hostile_lake["root"])
    assert answers == GOOD_ANSWERS
    (uri,) = lake.list_files(lake.join(hostile_lake["root"], "events", "answers"))
    reasons = _quarantined(bad)
    assert set(reasons) == {(uri, n) for n in hostile_lake[uri]}
    assert all(reasons.values())
    assert refresh.read_answer_events(hostile_lake["root"]) == GOOD_ANSWERS


def test_every_hostile_batch_line_is_quarantined_and_the_good_rows_served(hostile_lake):
    night = refresh.read_outputs(hostile_lake["root"], NIGHT, f"{NIGHT}T00:00:00+00:00")
    assert [(i["user_id"], i["model_version"], i["n_interactions"]) for i in night.items] == [("g1", "v1", 2)]
    assert night.errors == 1  # the transform's own error line: counted, not quarantined
    expected = {(uri, n) for uri, where in hostile_lake.items() if "/inference/" in uri for n in where}
    reasons = _quarantined(night.quarantined)
    assert set(reasons) == expected and all(reasons.values())
    assert refresh.dkt_rows_from_lake(hostile_lake["root"]) == [
        refresh.mastery_item(GOOD_OUTPUT, f"{NIGHT}T00:00:00+00:00", 2)]


def test_kt_lake_check_reports_each_prefix_with_reasons(hostile_lake):
    out = subprocess.run([sys.executable, "-m", "kt.cli", "lake", "check", "--lake", hostile_lake["root"]],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.path.join(REPO, "src")})
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    report = json.loads(out.stdout)
    prefixes = report["prefixes"]
    assert prefixes["events/answers/"]["served"] == len(GOOD_ANSWERS)
    assert prefixes["events/answers/"]["quarantined"] == len(ANSWER_LINES)
    assert prefixes[f"inference/batch/{NIGHT}/input/"]["quarantined"] == len(INPUT_LINES)
    output = prefixes[f"inference/batch/{NIGHT}/output/"]
    assert (output["served"], output["transform_errors"], output["quarantined"]) == (1, 1, len(OUTPUT_LINES))
    assert sum(output["reasons"].values()) == len(OUTPUT_LINES)
    assert "blank line" in prefixes["events/answers/"]["reasons"]
    listed = {(q["uri"], q["line"]) for q in report["quarantined"]}
    assert listed == {(uri, n) for uri, where in hostile_lake.items() if uri != "root" for n in where}
    assert lake_check.check(hostile_lake["root"]) == report


def test_a_clean_lake_checks_clean(tmp_path):
    root = str(tmp_path / "lake")
    _write(os.path.join(root, "events", "answers", f"day={NIGHT}", "a.jsonl"),
           b"".join(json.dumps(a).encode() + b"\n" for a in GOOD_ANSWERS))
    report = lake_check.check(root)
    assert report["quarantined"] == []
    assert report["prefixes"]["events/answers/"] == {"served": 3, "quarantined": 0, "reasons": {}}


def test_kt_api_refresh_and_chart_start_on_a_hostile_lake(hostile_lake, tmp_path):
    """What each command reads from the lake at start, on moto: none of it stops on a bad line."""
    with moto_tables(hostile_lake["root"], api_key="k") as settings:
        client = aws.client(settings, "dynamodb")
        loaded = api.rebuild_from_lake(settings, client)  # `kt api` at start
        assert (loaded["answers"], loaded["dkt_rows"]) == (len(GOOD_ANSWERS), 1)
        app = TestClient(create_app(settings, catalog=CATALOG), headers={"x-api-key": "k"})
        assert app.get("/api/kt/mastery", params={"user_id": "g2"}).json()["n_interactions"] == 1
        assert pipeline.sync_local_tables(settings) == len(GOOD_ANSWERS)  # `kt chart` and `kt refresh` at start
        loaded = refresh.load_outputs(client, settings.mastery_table, settings.lake, NIGHT, NIGHT)  # `kt refresh`
        assert (loaded.users, loaded.errors) == (1, 1)
        assert os.path.exists(pipeline.user_chart(settings, "g1", str(tmp_path / "g1.png")))  # `kt chart`
        assert dynamo.get_mastery(client, settings.mastery_table, "g1")["source"] == "dkt"


@pytest.mark.slow
def test_kt_chart_command_on_a_hostile_lake(hostile_lake, tmp_path):
    out = subprocess.run([sys.executable, "-m", "kt.cli", "chart", "--lake", hostile_lake["root"], "--user", "g2",
                          "--out", str(tmp_path / "g2.png")], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.path.join(REPO, "src"), "KT_RUNTIME": "local"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert os.path.exists(tmp_path / "g2.png")
    assert "quarantined" in out.stderr


def test_the_api_appends_only_answers_it_can_store(tmp_path):
    """Refused answers never reach the lake; every line the API appends passes the lake's own check."""
    with moto_tables(str(tmp_path / "lake"), api_key="k") as settings:
        app = TestClient(create_app(settings, catalog=CATALOG), headers={"x-api-key": "k"})
        for change in ({"skill_id": 10**38}, {"content_id": 2**31}, {"user_id": "\ud800"}, {}):
            app.post("/api/kt/answers", content=json.dumps({**GOOD_ANSWERS[0], **change}),
                     headers={"content-type": "application/json"})
        answers, bad = refresh.read_answer_lines(settings.lake)
    assert (answers, bad) == ([GOOD_ANSWERS[0]], [])
