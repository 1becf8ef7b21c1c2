"""kt_mastery_refresh end to end in the local runtime (dag.test() against moto), and its crash-retry fault test."""

from __future__ import annotations

import json
import os
import shutil

import boto3
import httpx
import pytest
from dagtest import copy_lake, promote_model, run_dag, try_numbers

from kt import dynamo

pytestmark = pytest.mark.slow
TUTOR_USERS = 12  # tests/conftest.py sample_lake


def _mastery_rows() -> dict[str, dict]:
    client = boto3.client("dynamodb")
    return {r["user_id"]: {k: v for k, v in r.items() if k != "updated_at"} for r in dynamo.scan_all(client, "kt-mastery")}


@pytest.fixture
def refresh_lake(local_lake, sample_lake, tiny_model_dir) -> str:
    copy_lake(sample_lake, local_lake, "events")
    promote_model(local_lake, tiny_model_dir)
    return local_lake


def test_refresh_writes_every_active_user_and_moves_the_watermark(refresh_lake):
    run, states, _ = run_dag("kt_mastery_refresh")
    assert run.state == "success", states
    assert set(states.values()) == {"success"}
    rows = _mastery_rows()
    assert len(rows) == TUTOR_USERS
    assert {r["source"] for r in rows.values()} == {"dkt"}
    assert all(0 <= r["predicted_accuracy"] <= 1 for r in rows.values())
    watermark = json.loads(open(os.path.join(refresh_lake, "inference/batch/_watermark.json")).read())
    assert (watermark["last_day"], watermark["run_date"]) == ("2026-11-25", "2026-11-25")

    assert all(r["dkt_state"]["answers"] == r["n_interactions"] for r in rows.values())  # the state came with the row

    again, states, _ = run_dag("kt_mastery_refresh")  # the same night again: same days, same rows
    assert again.state == "success" and set(states.values()) == {"success"}
    assert _mastery_rows() == rows
    inputs = os.path.join(refresh_lake, "inference/batch/2026-11-25/input")
    lines = [json.loads(line) for name in os.listdir(inputs) for line in open(os.path.join(inputs, name))]
    assert len(lines) == TUTOR_USERS  # all incremental: each user's stored state, and no answer after it
    assert all(line["state"] and line["user_sequence"] == [] for line in lines)


def test_nobody_active_skips_the_transform_and_still_moves_the_watermark(local_lake, tiny_model_dir):
    promote_model(local_lake, tiny_model_dir)
    run, states, _ = run_dag("kt_mastery_refresh")
    assert run.state == "success", states
    assert states["any_active_users"] == "success" and states["batch_transform"] == "skipped"
    assert states["load_mastery"] == "success"
    assert _mastery_rows() == {}
    watermark = json.loads(open(os.path.join(local_lake, "inference/batch/_watermark.json")).read())
    assert watermark["last_day"] == "2026-11-25"


def test_load_killed_midway_and_retried_leaves_the_table_of_a_clean_run(refresh_lake, aws_env, monkeypatch):
    """The load dies after a few conditional writes; Airflow retries it; the table equals a clean run's."""
    clean, _, _ = run_dag("kt_mastery_refresh")
    assert clean.state == "success"
    expected = _mastery_rows()
    httpx.post(f"{aws_env}/moto-api/reset").raise_for_status()  # both tables gone ...
    shutil.rmtree(os.path.join(refresh_lake, "inference"))  # ... and the lake's batch outputs and watermark

    original = dynamo.put_mastery_conditional
    calls = {"n": 0}

    def dies_after_five(client, table, item):
        calls["n"] += 1
        if calls["n"] == 6:
            raise SystemExit("killed mid-load")  # not an Exception: like a kill, nothing catches it
        return original(client, table, item)

    monkeypatch.setattr(dynamo, "put_mastery_conditional", dies_after_five)
    run, states, _ = run_dag("kt_mastery_refresh")
    assert run.state == "success", states
    assert try_numbers(run)["load_mastery"] == 2  # the first try wrote 5 rows and died; the retry did the rest
    assert _mastery_rows() == expected
