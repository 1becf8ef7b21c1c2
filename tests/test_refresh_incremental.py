"""The incremental refresh equals the full one: several nights, both model kinds, a promotion, a late answer,
a crashed load, throttled writes (docs/contracts.md §7.2-7.4).

    .venv/bin/python -m pytest -q tests/test_refresh_incremental.py

The transform runs in this process through the inference handlers (input_fn, predict_fn, output_fn: what
the container runs on each MultiRecord payload), without the HTTP server of kt.local_sagemaker.
"""

from __future__ import annotations

import json
import random

import pytest
import boto3
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError
from test_contracts import table

from kt import dynamo, inference, lake, refresh

HISTORY, MASTERY, MASTERY_FULL = "kt-history", "kt-mastery", "kt-mastery-full"
NIGHTS = ["2026-11-21", "2026-11-22", "2026-11-23", "2026-11-24", "2026-11-25"]
PROMOTED_ON = "2026-11-24"  # from the seed's DKT to the count_features model
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def models(tiny_model_dir, sample_lake, tmp_path_factory) -> dict:
    from kt_testing import train_tiny_model

    count_dir = train_tiny_model(f"{sample_lake}/processed/ednet", str(tmp_path_factory.mktemp("count-model")),
                                 "count-model", count_features=1)
    return {"seed": inference.model_fn(tiny_model_dir), "count": inference.model_fn(count_dir)}


def transform(model: inference.LoadedModel, lake_root: str, run_date: str, stateless_users: set[str] = frozenset()):
    """Each input file through the handlers into its .out file; ``stateless_users`` get "state": null, as from a
    model without recurrent state."""
    night = lake.join(lake_root, "inference", "batch", run_date)
    lake.delete(lake.join(night, "output"))
    for uri in lake.list_files(lake.join(night, "input")):
        data = inference.input_fn(lake.read_text(uri), inference.JSON_LINES)
        prediction = inference.predict_fn(data, model)
        for result in prediction["results"]:
            if result.get("user_id") in stateless_users:
                result["state"] = None
        name = uri.rsplit("/", 1)[1]
        out = inference.output_fn(prediction, inference.JSON_LINES)
        lake.write_text(lake.join(night, "output", f"{name}.out"), out)


def answers_of_night(night: str, rng: random.Random, skills: list[int]) -> list[dict]:
    """A night's answers: u0 answers 40 a day (its history passes max_seq_len = 50 on the second night), the others
    a few; u5 sometimes on a skill no model knows."""
    answers = []
    for u in range(8):
        for i in range(40 if u == 0 else rng.randint(0, 6)):
            skill = 999_999 if u == 5 and i == 0 else rng.choice(skills)
            answers.append({"user_id": f"u{u}", "answer_id": f"{night}-{u}-{i}", "skill_id": skill,
                            "correct": rng.randint(0, 1),
                            "answered_at": f"{night}T{8 + i // 60:02d}:{i % 60:02d}:00.000Z"})
    return answers


def late_answer(answered_at: str, skill: int) -> dict:
    return {"user_id": "u0", "answer_id": f"late-{answered_at}", "skill_id": skill, "correct": 1,
            "answered_at": answered_at}


def run_night(ddb, model, lake_root: str, table_name: str, night: str, incremental: bool, **transform_kwargs):
    days = refresh.days_to_refresh(refresh.read_watermark(lake_root, night), night)
    stored = {"model_version": model.version, "mastery_table": table_name} if incremental else {}
    built = refresh.build_inputs(ddb, HISTORY, lake_root, night, days, known_skills=set(model.skill_ids), **stored)
    transform(model, lake_root, night, **transform_kwargs)
    return built, refresh.load_outputs(ddb, table_name, lake_root, night, last_day=days[-1])


def rows(ddb, table_name: str) -> dict[str, dict]:
    return {r["user_id"]: r for r in dynamo.scan_all(ddb, table_name)}


def assert_equal_masteries(incremental: dict, full: dict) -> float:
    """Same users, as_of, model and answers counted; every probability within TOLERANCE. Returns the largest gap."""
    assert set(incremental) == set(full)
    worst = 0.0
    for user, row in incremental.items():
        other = full[user]
        for key in ("as_of", "model_version", "n_interactions", "history_items", "history_ts",
                    "next_skill_recommendation"):
            assert row[key] == other[key], (user, key)
        assert row["mastery"].keys() == other["mastery"].keys()
        gaps = [abs(row["mastery"][s] - other["mastery"][s]) for s in row["mastery"]]
        gaps += [abs(row["topic_mastery"][t] - other["topic_mastery"][t]) for t in row["topic_mastery"]]
        gaps.append(abs(row["predicted_accuracy"] - other["predicted_accuracy"]))
        worst = max(worst, *gaps)
    assert worst <= TOLERANCE, worst
    return worst


def test_incremental_nights_equal_full_nights_across_a_promotion_and_a_late_answer(ddb, models, tmp_path):
    dynamo.ensure_tables(ddb, HISTORY, MASTERY_FULL)
    lakes = {"incremental": str(tmp_path / "incremental"), "full": str(tmp_path / "full")}
    rng = random.Random(7)
    skills = models["seed"].skill_ids
    fed = {"incremental": 0, "full": 0}
    for n, night in enumerate(NIGHTS):
        model = models["count" if night >= PROMOTED_ON else "seed"]
        answers = answers_of_night(night, rng, skills)
        if night == "2026-11-23":  # u0 answered yesterday before its other answers, and it arrives only now
            answers.append(late_answer("2026-11-22T07:00:00.000Z", skills[0]))
        dynamo.put_history(ddb, HISTORY, answers)
        built, _ = run_night(ddb, model, lakes["incremental"], MASTERY, night, incremental=True)
        full, _ = run_night(ddb, model, lakes["full"], MASTERY_FULL, night, incremental=False)
        fed["incremental"] += built["answers_fed"]
        fed["full"] += full["answers_fed"]
        assert full["full"] == full["users"] and full["incremental"] == 0
        if n == 0 or night == PROMOTED_ON:  # no state yet; states of the previous model version
            assert built["full"] == built["users"]
        else:
            assert built["incremental"] > 0 and built["answers_fed"] < full["answers_fed"]
        if night == "2026-11-23":
            assert built["late"] == 1  # u0's late answer: its state no longer covers what kt-history holds
        assert_equal_masteries(rows(ddb, MASTERY), rows(ddb, MASTERY_FULL))
    assert fed["incremental"] < fed["full"]
    stored = rows(ddb, MASTERY)
    assert stored["u0"]["n_interactions"] == 40 * len(NIGHTS) + 1 > models["seed"].model.config.max_seq_len
    assert stored["u5"]["history_items"] > stored["u5"]["n_interactions"]  # answers on an unknown skill count there
    assert stored["u0"]["dkt_state"]["model_version"] == models["count"].version  # u0 answers every night

    # the last night again: nothing changes
    before = rows(ddb, MASTERY)
    built, again = run_night(ddb, models["count"], lakes["incremental"], MASTERY, NIGHTS[-1], incremental=True)
    assert again.written == 0 and again.skipped_stale == built["users"] and rows(ddb, MASTERY) == before
    # an answer of that day arrives late, before u0's first one: the repeated night takes it (same as_of, one
    # answer more: history_items breaks the tie), as the full one does
    dynamo.put_history(ddb, HISTORY, [late_answer(f"{NIGHTS[-1]}T07:00:00.000Z", skills[1])])
    built, again = run_night(ddb, models["count"], lakes["incremental"], MASTERY, NIGHTS[-1], incremental=True)
    run_night(ddb, models["count"], lakes["full"], MASTERY_FULL, NIGHTS[-1], incremental=False)
    assert built["late"] == 1 and again.written == 1
    after = rows(ddb, MASTERY)
    assert after["u0"]["as_of"] == before["u0"]["as_of"] and after["u0"]["n_interactions"] == 40 * len(NIGHTS) + 2
    assert_equal_masteries(after, rows(ddb, MASTERY_FULL))


def test_a_crashed_load_then_a_rerun_equals_a_clean_night(ddb, models, tmp_path):
    dynamo.ensure_tables(ddb, HISTORY, MASTERY_FULL)
    lakes = {"incremental": str(tmp_path / "incremental"), "full": str(tmp_path / "full")}
    rng = random.Random(11)
    model = models["seed"]
    for night in NIGHTS[:2]:
        dynamo.put_history(ddb, HISTORY, answers_of_night(night, rng, model.skill_ids))
        run_night(ddb, model, lakes["full"], MASTERY_FULL, night, incremental=False)
        if night == NIGHTS[0]:
            run_night(ddb, model, lakes["incremental"], MASTERY, night, incremental=True)
    # the second night's load dies half way: half the users have the new row and state, half the old ones
    days = refresh.days_to_refresh(refresh.read_watermark(lakes["incremental"], NIGHTS[1]), NIGHTS[1])
    refresh.build_inputs(ddb, HISTORY, lakes["incremental"], NIGHTS[1], days, known_skills=set(model.skill_ids),
                         model_version=model.version, mastery_table=MASTERY)
    transform(model, lakes["incremental"], NIGHTS[1])
    items = refresh.read_outputs(lakes["incremental"], NIGHTS[1], "2026-11-22T02:00:00+00:00").items
    dynamo.write_mastery(ddb, MASTERY, items[: len(items) // 2])
    assert refresh.read_watermark(lakes["incremental"]) == NIGHTS[0]
    built, loaded = run_night(ddb, model, lakes["incremental"], MASTERY, NIGHTS[1], incremental=True)
    assert loaded.skipped_stale == len(items) // 2  # those users: zero new answers on their state, same row
    assert_equal_masteries(rows(ddb, MASTERY), rows(ddb, MASTERY_FULL))


def test_a_null_state_means_a_full_recompute_next_night(ddb, models, tmp_path):
    root, model, rng = str(tmp_path / "lake"), models["seed"], random.Random(5)
    dynamo.put_history(ddb, HISTORY, answers_of_night(NIGHTS[0], rng, model.skill_ids))
    run_night(ddb, model, root, MASTERY, NIGHTS[0], incremental=True, stateless_users={"u0"})
    assert "dkt_state" not in rows(ddb, MASTERY)["u0"] and "dkt_state" in rows(ddb, MASTERY)["u1"]
    second = [{"user_id": u, "answer_id": f"n2-{u}", "skill_id": model.skill_ids[0], "correct": 1,
               "answered_at": f"{NIGHTS[1]}T09:00:00.000Z"} for u in ("u0", "u1")]
    dynamo.put_history(ddb, HISTORY, second)
    built, _ = run_night(ddb, model, root, MASTERY, NIGHTS[1], incremental=True)
    assert (built["full"], built["incremental"]) == (1, 1)
    assert built["answers_fed"] == 1 + rows(ddb, MASTERY)["u0"]["n_interactions"]


def test_the_state_attributes_are_the_contracts(ddb, models, tmp_path):
    root, model = str(tmp_path / "lake"), models["seed"]
    dynamo.put_history(ddb, HISTORY, answers_of_night(NIGHTS[0], random.Random(3), model.skill_ids))
    run_night(ddb, model, root, MASTERY, NIGHTS[0], incremental=True)
    row = dynamo.get_mastery(ddb, MASTERY, "u0")
    item = dynamo.serialize(row)
    documented = [(r["attribute"].strip("`"), r["type"]) for r in table("7.2", 1)]
    assert [(k, next(iter(item[k]))) for k, _ in documented] == documented
    assert len(json.dumps(row)) < 400_000 // 20  # DynamoDB's item limit, with room


# --- throttling -------------------------------------------------------------------------------------------------


def throttled_client(k: int, operation: str = "UpdateItem") -> tuple[object, dict]:
    """A DynamoDB client (inside the ddb fixture's moto) whose every k-th ``operation`` call gets DynamoDB's
    throttling error instead of reaching moto (botocore's before-call hook). botocore's own retries are off:
    kt.dynamo's backoff is under test."""
    ddb = boto3.client("dynamodb", region_name="us-east-1", config=Config(retries={"max_attempts": 1}))
    calls = {"n": 0, "throttled": 0}
    error = {"Error": {"Code": "ProvisionedThroughputExceededException",
                       "Message": "The level of configured provisioned throughput for the table was exceeded."},
             "ResponseMetadata": {"HTTPStatusCode": 400}}

    def maybe_throttle(**kwargs):
        calls["n"] += 1
        if calls["n"] % k:
            return None
        calls["throttled"] += 1
        return AWSResponse("https://dynamodb.us-east-1.amazonaws.com/", 400, {}, None), error

    ddb.meta.events.register_first(f"before-call.dynamodb.{operation}", maybe_throttle)
    return ddb, calls


def test_throttled_writes_are_retried_and_nothing_is_lost(ddb, models, tmp_path, monkeypatch):
    monkeypatch.setattr(dynamo, "THROTTLE_BACKOFF_S", 0.001)
    root, model = str(tmp_path / "lake"), models["seed"]
    dynamo.put_history(ddb, HISTORY, answers_of_night(NIGHTS[0], random.Random(9), model.skill_ids))
    throttled, calls = throttled_client(2)  # every other write throttled, retries included
    built, loaded = run_night(throttled, model, root, MASTERY, NIGHTS[0], incremental=True)
    assert calls["throttled"] > built["users"] / 2
    assert loaded.written == built["users"] and set(rows(ddb, MASTERY)) == {f"u{u}" for u in range(8)}


def test_writes_throttled_past_every_retry_fail_the_load_and_the_watermark_stays(ddb, models, tmp_path, monkeypatch):
    monkeypatch.setattr(dynamo, "THROTTLE_BACKOFF_S", 0.001)
    root, model = str(tmp_path / "lake"), models["seed"]
    dynamo.put_history(ddb, HISTORY, answers_of_night(NIGHTS[0], random.Random(9), model.skill_ids))
    throttled, calls = throttled_client(1)  # every write throttled
    with pytest.raises(ClientError, match="ProvisionedThroughputExceeded"):
        run_night(throttled, model, root, MASTERY, NIGHTS[0], incremental=True)
    assert calls["throttled"] >= dynamo.THROTTLE_ATTEMPTS
    assert refresh.read_watermark(root) is None and rows(ddb, MASTERY) == {}
    _, loaded = run_night(ddb, model, root, MASTERY, NIGHTS[0], incremental=True)  # the rerun: all of them
    assert loaded.written == 8 == len(rows(ddb, MASTERY))


def test_by_day_and_histories_are_read_page_by_page(ddb):
    """Three items a page (DynamoDB stops a page at 1 MB): every active user and every answer still comes back."""
    pages = {"n": 0}

    def small_pages(params, **kwargs):
        params["Limit"] = 3
        pages["n"] += 1

    ddb.meta.events.register("provide-client-params.dynamodb.Query", small_pages)
    dynamo.put_history(ddb, HISTORY, answers_of_night(NIGHTS[0], random.Random(1), [1, 2, 3]))
    active = {f"u{u}" for u in range(8) if dynamo.user_history(ddb, HISTORY, f"u{u}")}
    pages["n"] = 0
    assert refresh.active_users(ddb, HISTORY, [NIGHTS[0]]) == sorted(active) and pages["n"] > 3
    assert len(dynamo.user_history(ddb, HISTORY, "u0")) == 40
    assert dynamo.count_answers_until(ddb, HISTORY, "u0", f"{NIGHTS[0]}T08:09:00.000Z#~") == 10
    assert len(dynamo.user_history(ddb, HISTORY, "u0", after_ts=f"{NIGHTS[0]}T08:09:00.000Z#~")) == 30
