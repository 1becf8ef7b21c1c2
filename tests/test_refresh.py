"""The nightly refresh: active users, transform, conditional load, idempotence and crash-rerun."""

from __future__ import annotations

import json
import os

import pytest

from kt import artifact, dynamo, lake, local_sagemaker, refresh

HISTORY, MASTERY = "kt-history", "kt-mastery"
RUN_DATE = "2026-11-25"


@pytest.fixture
def model_tar(tiny_model_dir, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("tar") / "model.tar.gz")
    artifact.pack(tiny_model_dir, path)
    return path


def _run(client, lake_root: str, model_url: str, work_dir: str, run_date: str = RUN_DATE, load: bool = True):
    refresh.sync_history(client, HISTORY, lake_root)
    days = refresh.days_to_refresh(refresh.read_watermark(lake_root, run_date), run_date)
    built = refresh.build_inputs(client, HISTORY, lake_root, run_date, days)
    model = {"ModelName": "m", "PrimaryContainer": {"Image": "i", "ModelDataUrl": model_url}, "ExecutionRoleArn": "r"}
    transform = {
        "TransformJobName": f"t-{run_date}", "ModelName": "m", "BatchStrategy": "MultiRecord",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                           "S3Uri": f"{lake_root}/inference/batch/{run_date}/input"}},
                           "ContentType": "application/jsonlines", "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": f"{lake_root}/inference/batch/{run_date}/output", "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
    }
    local_sagemaker.run_transform_job({"Model": model, "Transform": transform}, work_dir)
    if load:
        return built, refresh.load_outputs(client, MASTERY, lake_root, run_date, last_day=days[-1])
    return built, None


def _table(client) -> dict:
    return {row["user_id"]: row for row in dynamo.scan_all(client, MASTERY)}


def test_refresh_writes_every_active_user_once_and_is_idempotent(ddb, sample_lake, model_tar, tmp_path):
    built, loaded = _run(ddb, sample_lake, model_tar, str(tmp_path))
    events = refresh.read_answer_events(sample_lake)
    assert built["users"] == len({e["user_id"] for e in events}) > 0
    assert loaded.written == built["users"] and loaded.errors == 0
    first = _table(ddb)
    row = next(iter(first.values()))
    assert row["source"] == "dkt" and set(row) >= {"mastery", "topic_mastery", "next_skill_recommendation",
                                                    "predicted_accuracy", "model_version", "as_of", "updated_at", "n_interactions"}
    user_events = sorted((e for e in events if e["user_id"] == row["user_id"]), key=lambda e: e["answered_at"])
    assert row["as_of"] == user_events[-1]["answered_at"]
    assert row["n_interactions"] == len(user_events)
    # the same night again (a cleared and rerun task): same days, nothing written, the table unchanged
    _, again = _run(ddb, sample_lake, model_tar, str(tmp_path))
    assert again.written == 0 and again.skipped_stale == loaded.written
    assert _table(ddb) == first
    os.remove(refresh.watermark_uri(sample_lake))


def test_crash_before_load_keeps_the_watermark_and_a_rerun_completes(ddb, sample_lake, model_tar, tmp_path):
    _run(ddb, sample_lake, model_tar, str(tmp_path), load=False)
    assert refresh.read_watermark(sample_lake) is None
    assert _table(ddb) == {}
    # a crash half way through the load: half the items are in
    output = f"{sample_lake}/inference/batch/{RUN_DATE}/output"
    lines = [json.loads(line) for uri in lake.list_files(output) for line in lake.read_text(uri).splitlines()]
    half = [refresh.mastery_item(line, "2026-11-25T02:00:00+00:00", 1) for line in lines[: len(lines) // 2]]
    dynamo.write_mastery(ddb, MASTERY, half)
    _, loaded = _run(ddb, sample_lake, model_tar, str(tmp_path))
    assert loaded.written + loaded.skipped_stale == len(lines)
    assert loaded.skipped_stale == len(half)
    assert set(_table(ddb)) == {line["user_id"] for line in lines}
    assert refresh.read_watermark(sample_lake) == RUN_DATE
    assert refresh.read_watermark(sample_lake, RUN_DATE) is None  # a repeat of that night starts where it did
    os.remove(refresh.watermark_uri(sample_lake))


def _item(as_of: str, version: str = "v1", source: str = "dkt", accuracy: float = 0.5) -> dict:
    return {"user_id": "u1", "mastery": {"1": accuracy}, "topic_mastery": {"algebra": accuracy},
            "next_skill_recommendation": 1, "predicted_accuracy": accuracy, "model_version": version,
            "source": source, "as_of": as_of, "updated_at": "now", "n_interactions": 3}


def test_an_older_as_of_never_replaces_a_newer_row(ddb):
    assert dynamo.put_mastery_conditional(ddb, MASTERY, _item("2026-11-25T10:00:00.000Z", accuracy=0.7))
    assert not dynamo.put_mastery_conditional(ddb, MASTERY, _item("2026-11-24T10:00:00.000Z", accuracy=0.1))
    assert dynamo.get_mastery(ddb, MASTERY, "u1")["predicted_accuracy"] == 0.7
    assert not dynamo.put_mastery_conditional(ddb, MASTERY, _item("2026-11-25T10:00:00.000Z", accuracy=0.2))
    assert dynamo.put_mastery_conditional(ddb, MASTERY, _item("2026-11-25T10:00:00.000Z", version="v2", accuracy=0.3))
    assert dynamo.put_mastery_conditional(ddb, MASTERY, _item("2026-11-26T00:00:00.000Z", accuracy=0.9))
    assert dynamo.get_mastery(ddb, MASTERY, "u1")["predicted_accuracy"] == 0.9


def test_days_to_refresh():
    assert refresh.days_to_refresh("2026-11-23", "2026-11-25") == ["2026-11-24", "2026-11-25"]
    assert refresh.days_to_refresh("2026-11-25", "2026-11-25") == []
    assert len(refresh.days_to_refresh(None, "2026-11-25")) == refresh.FIRST_RUN_LOOKBACK_DAYS + 1


def test_history_items_keep_the_design_keys(ddb):
    answer = {"user_id": "u", "answer_id": "a1", "skill_id": 4, "correct": 1, "content_id": 9,
              "answered_at": "2026-11-24T15:00:00.123Z"}
    dynamo.put_history(ddb, HISTORY, [answer, answer])
    assert dynamo.users_active_on(ddb, HISTORY, "2026-11-24") == {"u"}
    history = dynamo.user_history(ddb, HISTORY, "u")
    assert history == [{"user_id": "u", "ts": "2026-11-24T15:00:00.123Z#a1", "day": "2026-11-24", "answer_id": "a1",
                        "skill_id": 4, "correct": 1, "content_id": 9}]


def test_mastery_table_is_rebuilt_from_the_lake(ddb, sample_lake, model_tar, tmp_path):
    _run(ddb, sample_lake, model_tar, str(tmp_path))
    built = _table(ddb)
    ddb.delete_table(TableName=MASTERY)  # as after restarting the embedded, in-memory moto server
    dynamo.ensure_tables(ddb, HISTORY, MASTERY)
    assert _table(ddb) == {}
    assert refresh.rebuild_mastery(ddb, MASTERY, sample_lake) == len(built)
    rebuilt = _table(ddb)
    drop = lambda rows: {u: {k: v for k, v in r.items() if k != "updated_at"} for u, r in rows.items()}  # noqa: E731
    assert drop(rebuilt) == drop(built)
    os.remove(refresh.watermark_uri(sample_lake))


def test_a_users_rows_are_never_written_at_the_same_time(monkeypatch):
    """moto checks a condition and writes in two steps: two rows of one user in flight together could leave the
    older one in the table. write_mastery puts a user's rows in turn, other users' in parallel."""
    import threading
    import time

    in_flight: dict[str, int] = {}
    most_at_once = {"same_user": 0, "all": 0}
    order: list[tuple[str, str]] = []
    lock = threading.Lock()

    def put(client, table, item):
        with lock:
            in_flight[item["user_id"]] = in_flight.get(item["user_id"], 0) + 1
            most_at_once["same_user"] = max(most_at_once["same_user"], in_flight[item["user_id"]])
            most_at_once["all"] = max(most_at_once["all"], sum(in_flight.values()))
        time.sleep(0.01)  # holds the put open so that overlapping ones show in in_flight (nothing waits on it)
        with lock:
            in_flight[item["user_id"]] -= 1
            order.append((item["user_id"], item["as_of"]))
        return True

    monkeypatch.setattr(dynamo, "put_mastery_conditional", put)
    items = [{"user_id": f"u{u}", "as_of": f"2026-11-2{k}"} for k in range(3) for u in range(10)]
    assert dynamo.write_mastery(None, MASTERY, items).written == 30
    assert most_at_once["same_user"] == 1 and most_at_once["all"] > 1
    for u in range(10):
        assert [a for user, a in order if user == f"u{u}"] == ["2026-11-20", "2026-11-21", "2026-11-22"]
