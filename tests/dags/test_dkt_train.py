"""dkt_train end to end in the local runtime: train, evaluate, gate, deploy, promote; a failed job changes nothing."""

from __future__ import annotations

import json
import os

import pendulum
import pytest
from dagtest import copy_lake, job_output, refuse_dataset_reads, run_dag

from kt import artifact, aws_requests, job_evaluation, lake, pipeline, runtime
from kt.config import Settings

pytestmark = pytest.mark.slow
TINY = {"epochs": 1, "hidden": 16, "layers": 1, "batch_size": 32, "max_seq_len": 50}


def _current(lake_root: str) -> dict | None:
    path = os.path.join(lake_root, "models", "dkt", "current.json")
    return json.load(open(path)) if os.path.exists(path) else None


@pytest.fixture
def worker_cannot_read_data(monkeypatch):
    refuse_dataset_reads(monkeypatch)


def test_train_promotes_a_first_model_and_the_gate_keeps_it_against_an_equal_one(local_lake, sample_lake,
                                                                               worker_cannot_read_data):
    """The job (a child process) scores the models; the worker, which cannot read the data, only reads its report."""
    copy_lake(sample_lake, local_lake, "processed", "sample")
    run, states, _ = run_dag("dkt_train", conf={"hyperparameters": TINY}, run_after=pendulum.datetime(2026, 11, 25, 2))
    assert run.state == "success", states
    assert set(states.values()) == {"success"}
    current = _current(local_lake)
    assert current["job_name"] == "pythagoras-dkt-2026-11-25-0200"
    assert os.path.exists(current["model_data_url"])
    assert current["metrics"]["dkt"]["auc"] > 0.5
    work = os.path.join(os.path.dirname(local_lake), "sagemaker")
    endpoint = json.load(open(os.path.join(work, "endpoints", "pythagoras-dkt-endpoint.json")))
    assert endpoint["EndpointConfigName"] == "pythagoras-dkt-2026-11-25-0200" and endpoint["EndpointStatus"] == "InService"
    training = json.load(open(os.path.join(work, "training-jobs", current["job_name"], "describe.json")))
    assert training["EnableManagedSpotTraining"] and training["CheckpointConfig"]["S3Uri"].endswith(current["job_name"])
    assert [c["ChannelName"] for c in training["InputDataConfig"]] == ["training"]  # nothing promoted yet
    _, first = job_evaluation.read_report(current["model_data_url"])
    assert first["current"] is None and current["metrics"] == first["candidate"]
    assert os.path.exists(pipeline.reliability_uri(current["model_data_url"]))  # published by the evaluate task

    # Same data, same seed: the same AUC, which does not beat the current model by the tolerance.
    again, states, _ = run_dag("dkt_train", conf={"hyperparameters": TINY}, run_after=pendulum.datetime(2026, 11, 26, 2))
    assert again.state == "success"
    assert states["gate"] == "success" and states["evaluate"] == "success"
    for task_id in ("deployment_requests", "create_model", "create_endpoint_config", "deploy_endpoint", "promote"):
        assert states[task_id] == "skipped", task_id
    assert _current(local_lake) == current
    second = json.load(open(os.path.join(work, "training-jobs", "pythagoras-dkt-2026-11-26-0200", "describe.json")))
    assert second["InputDataConfig"][1] == {**second["InputDataConfig"][0], "ChannelName": "current", "DataSource": {
        "S3DataSource": {**second["InputDataConfig"][0]["DataSource"]["S3DataSource"],
                         "S3Uri": current["model_data_url"]}}}
    _, report = job_evaluation.read_report(second["ModelArtifacts"]["S3ModelArtifacts"])
    assert report["current_model_version"] == current["job_name"]
    assert report["current"] == report["candidate"] == first["candidate"]  # the same model on the same split


def test_a_failing_training_job_fails_the_run_and_leaves_the_current_model(local_lake, sample_lake, tiny_model_dir):
    from dagtest import promote_model

    copy_lake(sample_lake, local_lake, "processed")
    promote_model(local_lake, tiny_model_dir)
    current = _current(local_lake)
    run, states, _ = run_dag("dkt_train", conf={"hyperparameters": {**TINY, "not_a_hyperparameter": 1}}, retries=0)
    assert run.state == "failed"
    assert states["train_model"] == "failed"
    assert states["promote"] == "upstream_failed"
    assert _current(local_lake) == current


def test_a_dataset_whose_manifest_does_not_check_out_is_not_trained_on(local_lake, sample_lake):
    copy_lake(sample_lake, local_lake, "processed")
    manifest_path = os.path.join(local_lake, "processed", "ednet", "_manifest.json")
    manifest = json.load(open(manifest_path))
    json.dump({**manifest, "quarantined": manifest["quarantined"] + 1}, open(manifest_path, "w"))  # does not add up
    run, states, _ = run_dag("dkt_train", conf={"hyperparameters": TINY}, retries=0)
    assert run.state == "failed"
    assert states["check_dataset"] == "failed"
    assert states["training_request"] == states["train_model"] == "upstream_failed"
    assert not os.path.exists(os.path.join(os.path.dirname(local_lake), "sagemaker", "training-jobs"))
    assert _current(local_lake) is None


def test_the_gate_reads_the_jobs_report_and_refuses_one_it_cannot_trust(sample_lake, tiny_model_dir, tmp_path):
    """The report must be against the model promoted now, and the model trained on the checked manifest."""
    settings = Settings(lake=str(tmp_path / "lake"))
    copy_lake(sample_lake, settings.lake, "processed")
    url = f"{settings.lake}/models/dkt/{aws_requests.names(settings, 'run')['training_job']}/output/model.tar.gz"
    job_output(tiny_model_dir, f"{settings.lake}/processed/ednet", url, str(tmp_path))
    request = aws_requests.training_job(settings, "run", TINY)
    training = {"Training": {**request, "ModelArtifacts": {"S3ModelArtifacts": url}}}
    dataset = runtime.check_dataset(settings)

    reliability = pipeline.reliability_uri(url)
    assert not lake.exists(reliability)
    with pytest.raises(RuntimeError, match="trained on manifest sha256 .* not the checked dataset's 0{64}"):
        runtime.evaluate_candidate(settings, training, {**dataset, "manifest_sha256": "0" * 64})
    evaluation = runtime.evaluate_candidate(settings, training, dataset)
    assert evaluation["current"] is None and evaluation["candidate"]["dkt"]["n"] > 0
    assert lake.exists(reliability)
    assert runtime.promotion_decision(evaluation)[0]

    pipeline.promote(settings, "meanwhile", url, evaluation["candidate"])  # promoted after the job started
    with pytest.raises(RuntimeError, match=f"compared its model with None, but the promoted model is {url}"):
        runtime.evaluate_candidate(settings, training, dataset)
    without_report = str(tmp_path / "without.tar.gz")
    artifact.pack(tiny_model_dir, without_report)
    with pytest.raises(RuntimeError, match="has no evaluation.json: the training job did not evaluate"):
        job_evaluation.read_report(without_report)
