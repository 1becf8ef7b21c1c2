"""Drift checks: PSI and friends, the report on a real lake and model, and the CloudWatch metric (moto)."""

from __future__ import annotations

import json
import math
import os
import shutil
from datetime import datetime, timedelta, timezone

import boto3
import numpy as np
import pytest
from moto import mock_aws

from kt import artifact, drift, lake, pipeline
from kt.config import Settings
from kt.data import read_sequences


def test_psi_of_identical_distributions_is_zero_and_grows_with_the_shift():
    assert drift.psi(np.array([1, 2, 3]), np.array([10, 20, 30])) == pytest.approx(0.0, abs=1e-12)
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert drift.psi(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(expected)
    assert drift.psi(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(
        drift.psi(np.array([0.25, 0.75]), np.array([0.5, 0.5])))
    small = drift.psi(np.array([0.5, 0.5]), np.array([0.45, 0.55]))
    assert 0 < small < expected


def test_psi_stays_finite_with_empty_bins_and_refuses_mismatched_shapes():
    value = drift.psi(np.array([0.0, 1.0]), np.array([1.0, 0.0]))
    assert math.isfinite(value) and value > 10
    with pytest.raises(ValueError, match="same shape"):
        drift.psi(np.array([1.0, 1.0]), np.array([1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="non-empty"):
        drift.psi(np.array([0.0, 0.0]), np.array([1.0, 1.0]))


def test_skill_mix_counts_known_skills_in_model_order_and_unknown_apart():
    counts, unknown = drift.skill_mix([3, 7, 9], np.array([7, 7, 3, 42, 9, 42]))
    assert counts.tolist() == [1, 2, 1] and unknown == 2


def test_correctness_psi_and_the_prediction_histogram():
    assert drift.correctness_psi(0.7, np.array([1] * 7 + [0] * 3)) == pytest.approx(0.0, abs=1e-12)
    assert drift.correctness_psi(0.7, np.array([0] * 10)) > 1
    assert drift.prediction_histogram(np.array([0.0, 0.05, 0.95, 1.0])).tolist() == [2, 0, 0, 0, 0, 0, 0, 0, 0, 2]


def test_recent_answers_are_the_last_days_up_to_the_run_date():
    answers = [{"answered_at": f"2026-11-{d:02d}T10:00:00.000Z"} for d in (17, 18, 19, 24, 25, 26)]
    kept = drift.recent_answers(answers, "2026-11-25", days=7)
    assert [a["answered_at"][:10] for a in kept] == ["2026-11-19", "2026-11-24", "2026-11-25"]


@pytest.fixture
def drift_lake(sample_lake, tiny_model_dir, tmp_path) -> Settings:
    """The sample lake's processed data with the tiny model promoted, and no answer events yet."""
    root = str(tmp_path / "lake")
    shutil.copytree(os.path.join(sample_lake, "processed"), os.path.join(root, "processed"))
    settings = Settings(lake=root)
    url = lake.join(root, "models", "dkt", "tiny", "output", "model.tar.gz")
    artifact.pack(tiny_model_dir, url)
    pipeline.promote(settings, "tiny", url, {"dkt": {"auc": 0.0}})
    return settings


def _write_events(settings: Settings, histories: list[tuple[list[int], list[int]]], start: datetime) -> int:
    """Tutor answers, one user per history, a few seconds apart from start, in the lake's events/."""
    by_day: dict[str, list[str]] = {}
    for u, (skills, correct) in enumerate(histories):
        for i, (s, c) in enumerate(zip(skills, correct)):
            at = start + timedelta(seconds=i, milliseconds=u)
            stamp = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
            by_day.setdefault(stamp[:10], []).append(json.dumps(
                {"user_id": f"tutor-{u}", "answer_id": f"{u}-{i}", "skill_id": int(s), "correct": int(c),
                 "answered_at": stamp}))
    for day, lines in by_day.items():
        lake.write_text(lake.join(settings.lake, "events", "answers", f"day={day}", "part.jsonl"), "\n".join(lines) + "\n")
    return sum(len(lines) for lines in by_day.values())


def _after_training(settings: Settings) -> tuple[str, datetime]:
    """A run date and a start time later than the model's created_at, so the answers count for the AUC."""
    created = datetime.fromisoformat(pipeline.current_model(settings)["promoted_at"]).astimezone(timezone.utc)
    start = created + timedelta(minutes=1)
    return (start + timedelta(days=1)).date().isoformat(), start


def test_answers_like_the_training_data_show_no_drift_and_get_an_auc(drift_lake):
    test = read_sequences(lake.join(drift_lake.lake, "processed", "ednet"), "test")
    histories = list(zip(test["skill_id"].to_pylist(), test["correct"].to_pylist()))
    run_date, start = _after_training(drift_lake)
    n = _write_events(drift_lake, histories, start)
    report = drift.compute(drift_lake, run_date)
    assert report["answers"] == n and report["users"] == len(histories)
    assert report["status"] == "ok" and not report["retrain"], report
    assert report["drift_score"] == max(v for v in report["psi"].values())
    assert report["drift_score"] < drift.DEFAULT_THRESHOLD
    assert report["unknown_skill_answers"] == 0
    auc = report["auc_since_training"]
    assert auc["n"] > drift.MIN_LABELLED and 0.5 < auc["auc"] < 1


def test_a_shifted_skill_mix_and_correctness_cross_the_threshold(drift_lake):
    run_date, start = _after_training(drift_lake)
    one_skill = int(read_sequences(lake.join(drift_lake.lake, "processed", "ednet"), "train")["skill_id"][0][0].as_py())
    _write_events(drift_lake, [([one_skill] * 30, [0] * 30) for _ in range(10)], start)
    report = drift.compute(drift_lake, run_date)
    assert report["retrain"] and report["status"] == "drift"
    assert report["psi"]["skill_mix"] > drift.DEFAULT_THRESHOLD
    assert report["psi"]["correct_rate"] > drift.DEFAULT_THRESHOLD
    assert any(r.startswith("skill_mix PSI") for r in report["reasons"])


def test_too_few_answers_or_no_model_conclude_nothing(drift_lake, tmp_path):
    run_date, start = _after_training(drift_lake)
    _write_events(drift_lake, [([1, 2, 3], [1, 0, 1])], start)
    report = drift.compute(drift_lake, run_date)
    assert report["drift_score"] is None and not report["retrain"] and report["status"].startswith("too few answers")
    assert drift.metric_data(drift_lake, report) == []
    empty = drift.compute(Settings(lake=str(tmp_path / "empty")), run_date)
    assert empty["status"] == "no promoted model" and not empty["retrain"]


def test_check_publishes_drift_score_for_the_endpoint_and_writes_the_report(drift_lake):
    run_date, start = _after_training(drift_lake)
    one_skill = int(read_sequences(lake.join(drift_lake.lake, "processed", "ednet"), "train")["skill_id"][0][0].as_py())
    _write_events(drift_lake, [([one_skill] * 30, [0] * 30) for _ in range(10)], start)
    with mock_aws():
        report = drift.check(drift_lake, run_date)
        cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
        metrics = cloudwatch.list_metrics(Namespace="KT", MetricName="DriftScore")["Metrics"]
        assert metrics[0]["Dimensions"] == [{"Name": "EndpointName", "Value": drift_lake.endpoint_name}]
        stats = cloudwatch.get_metric_statistics(
            Namespace="KT", MetricName="DriftScore", Dimensions=metrics[0]["Dimensions"],
            StartTime=datetime.now(timezone.utc) - timedelta(hours=1), EndTime=datetime.now(timezone.utc) + timedelta(hours=1),
            Period=3600, Statistics=["Maximum"])["Datapoints"]
        assert stats[0]["Maximum"] == pytest.approx(report["drift_score"])
    assert "DriftScore" in report["metrics_published"] and "SkillMixPSI" in report["metrics_published"]
    saved = json.loads(lake.read_text(lake.join(drift_lake.lake, "monitoring", "drift", f"{run_date}.json")))
    assert saved["drift_score"] == report["drift_score"] and saved["retrain"]


def test_main_prints_the_report(drift_lake, capsys):
    run_date, start = _after_training(drift_lake)
    _write_events(drift_lake, [([1] * 5, [1] * 5)], start)
    assert drift.main(drift_lake, run_date) == 0  # locally with no AWS_ENDPOINT_URL: an embedded moto server
    assert json.loads(capsys.readouterr().out)["run_date"] == run_date
