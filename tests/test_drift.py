"""Drift checks: PSI and friends, the report on a real lake and model, and the CloudWatch metric (moto)."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import os
import shutil
import uuid
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
    assert report["drift_score"] == max(v for v in report["psi"].values() if v is not None)
    assert report["drift_score"] < drift.DEFAULT_THRESHOLD
    assert report["endpoint_inputs"]["status"].startswith("not captured: serverless")  # the default endpoint mode
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


# SageMaker data capture (realtime endpoints): the documented layout and record format.


def _capture_record(body: str, encoding: str, at: datetime, content_type: str = "application/json") -> dict:
    """One line of a capture file as SageMaker writes it: captureData, eventMetadata, eventVersion."""

    def captured(text: str, mode: str, observed: str) -> dict:
        data = base64.b64encode(text.encode()).decode() if encoding == "BASE64" else text
        return {"observedContentType": observed, "mode": mode, "data": data, "encoding": encoding}

    return {"captureData": {"endpointInput": captured(body, "INPUT", content_type),
                            "endpointOutput": captured('{"mastery": {}}', "OUTPUT", "application/json")},
            "eventMetadata": {"eventId": str(uuid.uuid4()), "inferenceTime": at.strftime("%Y-%m-%dT%H:%M:%SZ")},
            "eventVersion": "0"}


def _write_captures(settings: Settings, histories: list[tuple[list[int], list[int]]], at: datetime,
                    extra_lines: tuple[str, ...] = ()) -> str:
    """The requests a tutor sent the endpoint, one user_sequence each, alternately JSON and BASE64 encoded,
    in <DestinationS3Uri><endpoint>/AllTraffic/yyyy/mm/dd/hh/<file>.jsonl."""
    lines = []
    for n, (skills, correct) in enumerate(histories):
        body = json.dumps({"user_sequence": [{"skill_id": int(s), "correct": int(c)} for s, c in zip(skills, correct)]})
        lines.append(json.dumps(_capture_record(body, ("JSON", "BASE64")[n % 2], at)))
    uri = lake.join(drift.capture_prefix(settings), at.strftime("%Y/%m/%d/%H"), f"{at:%M-%S}-{uuid.uuid4()}.jsonl")
    lake.write_text(uri, "\n".join([*lines, *extra_lines]) + "\n")
    return uri


def test_captured_bodies_decode_per_encoding_and_content_type():
    at = datetime(2026, 11, 24, 10, tzinfo=timezone.utc)
    body = '{"user_sequence": [{"skill_id": 3, "correct": 1}, {"skill_id": 9, "correct": 0}]}'
    for encoding in ("JSON", "BASE64"):
        (request,) = drift.captured_requests(_capture_record(body, encoding, at))
        assert drift.request_answers(request) == [(3, 1), (9, 0)]
    batch = _capture_record(body + "\n" + body.replace("9", "7") + "\n", "BASE64", at, "application/jsonlines")
    assert [drift.request_answers(r) for r in drift.captured_requests(batch)] == [[(3, 1), (9, 0)], [(3, 1), (7, 0)]]
    with pytest.raises(ValueError, match="encoding"):
        drift.decode_captured({"data": body, "encoding": "GZIP"})
    with pytest.raises(ValueError, match="content type"):
        drift.captured_requests(_capture_record("3,1", "CSV", at, "text/csv"))
    for bad in ({"user_sequence": [{"skill_id": 3, "correct": 2}]}, {"user_sequence": [{"skill_id": "3", "correct": 1}]},
                {"user_sequence": [{"skill_id": 3, "correct": True}]}, {"state": {}}):
        with pytest.raises(ValueError):
            drift.request_answers(bad)


def _training_histories(settings: Settings, split: str) -> list[tuple[list[int], list[int]]]:
    table = read_sequences(lake.join(settings.lake, "processed", "ednet"), split)
    return list(zip(table["skill_id"].to_pylist(), table["correct"].to_pylist()))


def test_captured_requests_like_the_training_data_show_no_endpoint_drift(drift_lake):
    realtime = dataclasses.replace(drift_lake, endpoint_mode="realtime")
    histories = _training_histories(drift_lake, "test")
    run_date, start = _after_training(drift_lake)
    _write_events(drift_lake, histories, start)
    _write_captures(realtime, histories, start, extra_lines=("not json", json.dumps(
        _capture_record('{"user_sequence": "x"}', "JSON", start))))
    long_ago = start - timedelta(days=drift.RECENT_DAYS + 1)  # outside the window: never read
    _write_captures(realtime, [([1] * 50, [0] * 50)], long_ago)
    report = drift.compute(realtime, run_date)
    inputs = report["endpoint_inputs"]
    assert inputs["status"] == "ok" and inputs["files"] == 1 and inputs["unreadable"] == 2
    assert inputs["requests"] == len(histories) and inputs["answers"] == sum(len(s) for s, _ in histories)
    assert inputs["unknown_skill_answers"] == 0
    assert 0 <= report["psi"]["endpoint_skill_mix"] < drift.DEFAULT_THRESHOLD
    assert 0 <= report["psi"]["endpoint_correct_rate"] < drift.DEFAULT_THRESHOLD
    assert report["status"] == "ok" and not report["retrain"], report
    assert {"EndpointSkillMixPSI", "EndpointCorrectRatePSI"} <= {d["MetricName"] for d in drift.metric_data(realtime, report)}


def test_shifted_captured_requests_cross_the_threshold_alone(drift_lake):
    """Tutor answers like the training data, but the endpoint is asked about one skill, always wrong."""
    realtime = dataclasses.replace(drift_lake, endpoint_mode="realtime")
    run_date, start = _after_training(drift_lake)
    _write_events(drift_lake, _training_histories(drift_lake, "test"), start)
    one_skill = _training_histories(drift_lake, "train")[0][0][0]
    _write_captures(realtime, [([one_skill] * 30, [0] * 30) for _ in range(10)], start + timedelta(hours=2))
    report = drift.compute(realtime, run_date)
    assert report["psi"]["endpoint_skill_mix"] > drift.DEFAULT_THRESHOLD
    assert report["psi"]["endpoint_correct_rate"] > drift.DEFAULT_THRESHOLD
    assert report["psi"]["skill_mix"] < drift.DEFAULT_THRESHOLD  # the tutor's answers alone show nothing
    assert report["retrain"] and report["drift_score"] == report["psi"]["endpoint_skill_mix"]
    assert any(r.startswith("endpoint_skill_mix PSI") for r in report["reasons"])
    serverless = drift.compute(drift_lake, run_date)  # same lake, serverless: AWS captures nothing, nothing is read
    assert serverless["endpoint_inputs"]["files"] == 0 and serverless["psi"]["endpoint_skill_mix"] is None
