"""The local runners on the request dicts the DAGs send: script-mode training, failures, spot resume, transform, S3."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile

import boto3
import pytest
import torch

from kt import artifact, aws_requests, inference, job_evaluation, lake, local_sagemaker, package
from kt.config import Settings

RUN = "2026-11-25-0200"
RUN_DATE = "2026-11-25"
# Small and single-threaded: three of these jobs run in the resume test on a shared 2-core machine.
TINY = {"hidden": 8, "layers": 1, "epochs": 2, "batch_size": 32, "max_seq_len": 40, "patience": 5, "threads": 1,
        "checkpoint_every": 1000}


@pytest.fixture
def local_lake(sample_lake, tmp_path) -> str:
    """A lake of our own (the session's sample lake stays untouched) with the sample's processed data."""
    root = str(tmp_path / "lake")
    shutil.copytree(f"{sample_lake}/processed", f"{root}/processed")
    return root


def _model_tar_members(uri: str) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(lake.read_bytes(uri)), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


@pytest.mark.slow
def test_training_runs_script_mode_from_the_sourcedir(local_lake, tiny_model_dir, tmp_path):
    """The request names sagemaker_program + sagemaker_submit_directory: the runner runs the tarball's code,
    which trains, then scores the model and the current one (its channel: one object's key) on the test split."""
    code = tmp_path / "kt-src"
    shutil.copytree(package.PACKAGE_DIR, code, ignore=shutil.ignore_patterns("__pycache__"))
    with open(code / "train.py", "a") as f:  # a marker only the sourcedir's kt has, and the job's channels
        f.write('\nprint(f"kt.train from {__file__}; channels {os.environ[\'SM_CHANNELS\']} '
                'current {os.environ.get(\'SM_CHANNEL_CURRENT\')}", flush=True)\n')
    settings = Settings(lake=local_lake)
    package.build_sourcedir(str(tmp_path / package.SOURCEDIR), str(code))
    lake.publish(str(tmp_path / package.SOURCEDIR), lake.uris(settings)["sourcedir"])
    current_url = f"{local_lake}/models/dkt/tiny/output/model.tar.gz"
    artifact.pack(tiny_model_dir, current_url)
    request = aws_requests.training_job(settings, RUN, TINY, current_model_url=current_url)
    lines: list[str] = []
    work_dir = str(tmp_path / "sagemaker")
    describe = local_sagemaker.run_training_job(request, work_dir, stream_logs=False, on_log=lines.append)

    assert describe["TrainingJobStatus"] == "Completed", describe.get("FailureReason")
    opt_ml = os.path.join(work_dir, "training-jobs", request["TrainingJobName"], "opt_ml")
    current_channel = os.path.join(opt_ml, "input", "data", "current")
    assert f"kt.train from {os.path.join(opt_ml, 'code', 'kt', 'train.py')}; " \
           f"channels [\"current\", \"training\"] current {current_channel}\n" in lines
    assert os.listdir(current_channel) == ["model.tar.gz"]
    assert os.path.realpath(os.path.join(current_channel, "model.tar.gz")) == current_url
    with open(os.path.join(opt_ml, "input", "config", "hyperparameters.json")) as f:
        assert json.load(f) == request["HyperParameters"]  # strings, sagemaker_* included, as SageMaker writes it
    assert os.path.realpath(os.path.join(opt_ml, "input", "data", "training")) == f"{local_lake}/processed/ednet"
    tar_uri = describe["ModelArtifacts"]["S3ModelArtifacts"]
    assert tar_uri == f"{local_lake}/models/dkt/{request['TrainingJobName']}/output/model.tar.gz"
    members = _model_tar_members(tar_uri)
    assert {"model.pth", "model.json", "code/inference.py", "code/kt/inference.py", "evaluation.json",
            "reliability.png"} <= set(members)
    info = json.loads(members["model.json"])
    metrics = {m["MetricName"]: m["Value"] for m in describe["FinalMetricDataList"]}
    assert set(metrics) == {"train_loss", "valid_auc", "interactions_per_s", "test_auc"}
    assert metrics["valid_auc"] == pytest.approx(info["metrics"]["history"][-1]["valid"]["auc"], abs=1e-5)
    report = json.loads(members["evaluation.json"])
    assert metrics["test_auc"] == pytest.approx(report["candidate"]["dkt"]["auc"], abs=1e-5)
    assert report["candidate"]["dkt"]["n"] == report["current"]["dkt"]["n"] > 0  # the same test split
    assert report["current_model_version"] == artifact.read_info(tiny_model_dir)["model_version"]
    here = job_evaluation.score(tiny_model_dir, f"{local_lake}/processed/ednet")  # the current model, scored here
    assert report["current"]["dkt"]["auc"] == pytest.approx(here["dkt"]["auc"], abs=1e-6)
    assert local_sagemaker.describe_training_job(request["TrainingJobName"], work_dir) == describe


def test_a_failing_job_records_the_failure_reason(local_lake, tmp_path):
    request = aws_requests.training_job(Settings(lake=local_lake), RUN, {**TINY, "epoch": 3})  # a typo
    describe = local_sagemaker.run_training_job(request, str(tmp_path), stream_logs=False)
    assert describe["TrainingJobStatus"] == "Failed"
    assert describe["FailureReason"].startswith("AlgorithmError: ValueError: Unknown hyperparameter: epoch")
    assert "ModelArtifacts" not in describe
    assert local_sagemaker.describe_training_job(request["TrainingJobName"], str(tmp_path))["TrainingJobStatus"] == "Failed"


def test_a_job_whose_channel_is_missing_fails_before_it_starts(tmp_path):
    request = aws_requests.training_job(Settings(lake=str(tmp_path / "empty-lake")), RUN, TINY)
    describe = local_sagemaker.run_training_job(request, str(tmp_path), stream_logs=False)
    assert describe["TrainingJobStatus"] == "Failed"
    assert describe["FailureReason"].startswith("ClientError: FileNotFoundError: channel training")


def test_max_runtime_stops_the_job(local_lake, tmp_path):
    request = aws_requests.training_job(Settings(lake=local_lake), RUN, TINY)
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": 1}
    describe = local_sagemaker.run_training_job(request, str(tmp_path), stream_logs=False)
    assert (describe["TrainingJobStatus"], describe["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")


@pytest.fixture
def s3_lake(sample_lake, monkeypatch):
    """A lake on moto's S3 server; pyarrow, boto3 and the training child process reach it via AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "local",
                       "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3").create_bucket(Bucket="kt-lake")
    root = "s3://kt-lake/lake"
    lake.publish(f"{sample_lake}/processed/ednet", f"{root}/processed/ednet")
    yield root
    server.stop()


@pytest.mark.slow
def test_a_stopped_job_resumes_from_its_s3_checkpoints_and_ends_like_an_uninterrupted_one(s3_lake, tmp_path):
    """Spot interruption on an S3 lake: SIGTERM mid-epoch, checkpoints synced to S3, rerun, bitwise equal weights."""
    settings = Settings(lake=s3_lake)
    hp = {**TINY, "epochs": 1, "checkpoint_every": 3}
    work_dir = str(tmp_path / "sagemaker")
    clean = local_sagemaker.run_training_job(aws_requests.training_job(settings, "2026-11-25-0100", hp), work_dir,
                                             stream_logs=False)
    assert clean["TrainingJobStatus"] == "Completed", clean.get("FailureReason")

    # The clean job's model as the current one: a channel on one S3 object's key.
    request = aws_requests.training_job(settings, RUN, hp,
                                        current_model_url=clean["ModelArtifacts"]["S3ModelArtifacts"])
    name = request["TrainingJobName"]

    def interrupt(line: str) -> None:  # the first periodic checkpoint of epoch 1: stop, as a spot reclaim does
        if "checkpoint saved at epoch 0 step 3" in line:
            assert local_sagemaker.stop_training_job(name)

    stopped = local_sagemaker.run_training_job(request, work_dir, stream_logs=False, on_log=interrupt)
    assert stopped["TrainingJobStatus"] == "Stopped" and "ModelArtifacts" not in stopped
    checkpoint_uri = f"{request['CheckpointConfig']['S3Uri']}/checkpoint.pt"
    synced = torch.load(io.BytesIO(lake.read_bytes(checkpoint_uri)), weights_only=False)
    assert synced["epoch"] == 0 and synced["step_in_epoch"] >= 3  # mid-epoch, in S3

    lines: list[str] = []
    resumed = local_sagemaker.run_training_job(request, work_dir, stream_logs=False, on_log=lines.append)
    assert resumed["TrainingJobStatus"] == "Completed", resumed.get("FailureReason")
    assert any("resumed from" in line for line in lines)
    a = torch.load(io.BytesIO(_model_tar_members(clean["ModelArtifacts"]["S3ModelArtifacts"])["model.pth"]))
    b = torch.load(io.BytesIO(_model_tar_members(resumed["ModelArtifacts"]["S3ModelArtifacts"])["model.pth"]))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    without = json.loads(_model_tar_members(clean["ModelArtifacts"]["S3ModelArtifacts"])["evaluation.json"])
    assert without["current"] is None  # no current channel in its request
    report = json.loads(_model_tar_members(resumed["ModelArtifacts"]["S3ModelArtifacts"])["evaluation.json"])
    assert report["current"] == report["candidate"] == without["candidate"]  # the same weights, the same split

    # the batch transform on the same S3 lake, with the model just trained
    model_request = aws_requests.model(settings, RUN, resumed["ModelArtifacts"]["S3ModelArtifacts"])
    transform = aws_requests.transform_job(settings, RUN, RUN_DATE, model_request["ModelName"])
    batch = lake.uris(settings, RUN_DATE)
    lake.write_text(f"{batch['batch_input']}/part-0.jsonl", json.dumps({"user_id": "u", "user_sequence": []}) + "\n")
    done = local_sagemaker.run_transform_job({"Model": model_request, "Transform": transform}, work_dir)
    assert done["TransformJobStatus"] == "Completed", done.get("FailureReason")
    (line,) = lake.read_text(f"{batch['batch_output']}/part-0.jsonl.out").splitlines()
    assert json.loads(line)["model_version"] == name


def _users(skills: list[int], n: int, offset: int = 0) -> list[dict]:
    return [{"user_id": f"u{offset + i}", "as_of": "2026-11-24T10:00:00.000Z",
             "user_sequence": [{"skill_id": skills[(i + j) % len(skills)], "correct": (i * j) % 2} for j in range(i)]}
            for i in range(n)]


def test_transform_writes_one_out_file_per_input_with_a_line_per_record(tiny_model_dir, local_lake, tmp_path):
    settings = Settings(lake=local_lake)
    model_url = f"{local_lake}/models/dkt/tiny/output/model.tar.gz"
    artifact.pack(tiny_model_dir, model_url)
    model_request = aws_requests.model(settings, RUN, model_url)
    transform = aws_requests.transform_job(settings, RUN, RUN_DATE, model_request["ModelName"])
    uris = lake.uris(settings, RUN_DATE)
    skills = artifact.read_info(tiny_model_dir)["skill_ids"]
    first, second = _users(skills, 5), _users(skills, 3, offset=5)
    lake.write_text(f"{uris['batch_input']}/part-0.jsonl", "".join(json.dumps(u) + "\n" for u in first))
    bad = json.dumps({"user_id": "bad", "user_sequence": [{"skill_id": 10**6, "correct": 1}]})
    lake.write_text(f"{uris['batch_input']}/more/part-1.jsonl",
                    "".join(json.dumps(u) + "\n" for u in second[:2]) + bad + "\n\n" + json.dumps(second[2]) + "\n")

    describe = local_sagemaker.run_transform_job({"Model": model_request, "Transform": transform}, str(tmp_path))
    assert describe["TransformJobStatus"] == "Completed", describe.get("FailureReason")
    assert sorted(lake.list_files(uris["batch_output"])) == [f"{uris['batch_output']}/more/part-1.jsonl.out",
                                                            f"{uris['batch_output']}/part-0.jsonl.out"]
    out0 = [json.loads(x) for x in lake.read_text(f"{uris['batch_output']}/part-0.jsonl.out").splitlines()]
    out1 = [json.loads(x) for x in lake.read_text(f"{uris['batch_output']}/more/part-1.jsonl.out").splitlines()]
    assert [o["user_id"] for o in out0] == [u["user_id"] for u in first]
    assert [o["user_id"] for o in out1] == ["u5", "u6", "bad", "u7"]
    assert out1[2]["error"] == "unknown skill ids: [1000000]"
    loaded = inference.model_fn(tiny_model_dir)
    expected = json.loads(inference.output_fn(inference.predict_fn(
        inference.input_fn(json.dumps(first[4]), inference.JSON), loaded), inference.JSON))
    assert max(abs(out0[4]["mastery"][k] - v) for k, v in expected["mastery"].items()) <= 1e-4
    assert describe["RecordsProcessed"] == 9


def test_transform_with_a_missing_model_fails_with_the_reason(local_lake, tmp_path):
    settings = Settings(lake=local_lake)
    model_request = aws_requests.model(settings, RUN, f"{local_lake}/models/dkt/none/output/model.tar.gz")
    transform = aws_requests.transform_job(settings, RUN, RUN_DATE, model_request["ModelName"])
    lake.write_text(f"{lake.uris(settings, RUN_DATE)['batch_input']}/part-0.jsonl", "{}\n")
    describe = local_sagemaker.run_transform_job({"Model": model_request, "Transform": transform}, str(tmp_path))
    assert describe["TransformJobStatus"] == "Failed" and "model.tar.gz" in describe["FailureReason"]


def test_transform_requests_outside_the_contract_are_refused(tmp_path):
    local_sagemaker.create_model({"ModelName": "m", "PrimaryContainer": {"ModelDataUrl": "x"}}, str(tmp_path))
    request = aws_requests.transform_job(Settings(lake=str(tmp_path)), RUN, RUN_DATE, "m")
    request["BatchStrategy"] = "SingleRecord"
    with pytest.raises(ValueError, match="SplitType=Line with BatchStrategy=MultiRecord"):
        local_sagemaker.run_transform_job(request, str(tmp_path))
    with pytest.raises(ValueError, match="CreateModel first"):
        local_sagemaker.run_transform_job({**request, "ModelName": "other"}, str(tmp_path))


def test_mini_batches_respect_max_payload():
    lines = ["a" * 400 + "\n"] * 5
    assert [len(b) for b in local_sagemaker._mini_batches(lines, 1000)] == [2, 2, 1]
    with pytest.raises(RuntimeError, match="exceeds MaxPayloadInMB"):
        local_sagemaker._mini_batches(["b" * 2000 + "\n"], 1000)
