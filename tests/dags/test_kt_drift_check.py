"""kt_drift_check end to end in the local runtime: the metric in CloudWatch (moto), and a threshold crossing triggers dkt_train."""

from __future__ import annotations

import json
import os

import boto3
import pytest
from dagtest import copy_lake, dag_runs, promote_model, run_dag, write_events

from kt import lake
from kt.data import read_sequences

pytestmark = pytest.mark.slow


@pytest.fixture
def drift_lake(local_lake, sample_lake, tiny_model_dir) -> str:
    copy_lake(sample_lake, local_lake, "processed")
    promote_model(local_lake, tiny_model_dir)
    return local_lake


def _drift_score() -> float:
    cloudwatch = boto3.client("cloudwatch")
    metrics = cloudwatch.list_metrics(Namespace="KT", MetricName="DriftScore")["Metrics"]
    assert metrics[0]["Dimensions"] == [{"Name": "EndpointName", "Value": "pythagoras-dkt-endpoint"}]
    return len(metrics)


def test_answers_like_the_training_data_publish_the_metric_and_trigger_nothing(drift_lake):
    test = read_sequences(lake.join(drift_lake, "processed", "ednet"), "test")
    write_events(drift_lake, list(zip(test["skill_id"].to_pylist(), test["correct"].to_pylist())), "2026-11-24")
    before = len(dag_runs("dkt_train"))
    run, states, _ = run_dag("kt_drift_check")
    assert run.state == "success", states
    assert states["check_drift"] == "success" and states["trigger_retraining"] == "skipped"
    assert _drift_score() == 1
    report = json.load(open(os.path.join(drift_lake, "monitoring", "drift", "2026-11-25.json")))
    assert report["status"] == "ok" and report["drift_score"] < 0.2
    assert len(dag_runs("dkt_train")) == before


def test_a_threshold_crossing_triggers_dkt_train(drift_lake):
    skill = int(read_sequences(lake.join(drift_lake, "processed", "ednet"), "train")["skill_id"][0][0].as_py())
    write_events(drift_lake, [([skill] * 30, [0] * 30) for _ in range(10)], "2026-11-24")
    run, states, _ = run_dag("kt_drift_check")
    assert run.state == "success", states
    assert states["retraining_due"] == "success" and states["trigger_retraining"] == "success"
    triggered = [(run_id, conf) for run_id, conf in dag_runs("dkt_train") if run_id == f"drift__{run.run_id}"]
    assert len(triggered) == 1
    assert triggered[0][1]["reason"] == "drift"
    assert triggered[0][1]["drift_report"].endswith("monitoring/drift/2026-11-25.json")
    assert _drift_score() == 1
