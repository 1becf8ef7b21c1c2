"""Local SageMaker: run the same CreateTrainingJob / CreateModel / CreateTransformJob requests on this machine.

moto accepts these requests but runs no compute, so locally the ``plugins/``
operators hand them to these runners. The training runner honours the
training container contract (``/opt/ml``-like root, hyperparameters.json of
strings, SM_* variables, checkpoints synced to CheckpointConfig.S3Uri, the
model tarred to ``S3OutputPath/<job>/output/model.tar.gz``, metrics parsed
with the request's MetricDefinitions, FailureReason from output/failure).
The transform runner honours SplitType=Line, BatchStrategy=MultiRecord,
AssembleWith=Line and writes ``<input name>.out`` under S3OutputPath.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone

from kt import artifact, inference, lake

log = logging.getLogger(__name__)

DEFAULT_WORK_DIR = ".kt/sagemaker"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _save(path: str, record: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(path + ".tmp", path)


def _load(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def describe_training_job(name: str, work_dir: str = DEFAULT_WORK_DIR) -> dict | None:
    return _load(os.path.join(work_dir, "training-jobs", name, "describe.json"))


def run_training_job(request: dict, work_dir: str = DEFAULT_WORK_DIR, stream_logs: bool = True) -> dict:
    """Execute a CreateTrainingJob request here; return a DescribeTrainingJob-like dict."""
    name = request["TrainingJobName"]
    root = os.path.abspath(os.path.join(work_dir, "training-jobs", name))
    describe_path = os.path.join(root, "describe.json")
    describe = {**{k: v for k, v in request.items() if k != "HyperParameters"}, "HyperParameters": request.get("HyperParameters", {}),
                "TrainingJobStatus": "InProgress", "CreationTime": _now()}
    _save(describe_path, describe)
    opt_ml = os.path.join(root, "opt_ml")
    config_dir = os.path.join(opt_ml, "input", "config")
    os.makedirs(config_dir, exist_ok=True)
    with open(os.path.join(config_dir, "hyperparameters.json"), "w") as f:
        json.dump({k: str(v) for k, v in request.get("HyperParameters", {}).items()}, f)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    for channel in request.get("InputDataConfig", []):
        uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
        local = os.path.join(opt_ml, "input", "data", channel["ChannelName"])
        if lake.is_s3(uri):
            lake.stage(uri, local)
        else:  # a local lake: point the channel at it, as a staged copy would
            local = os.path.abspath(uri)
        env[f"SM_CHANNEL_{channel['ChannelName'].upper()}"] = local
    checkpoint_uri = (request.get("CheckpointConfig") or {}).get("S3Uri")
    checkpoint_dir = os.path.join(opt_ml, "checkpoints")
    if checkpoint_uri and lake.exists(checkpoint_uri):
        lake.stage(checkpoint_uri, checkpoint_dir)  # a restarted (spot) job resumes from here
    model_dir = os.path.join(opt_ml, "model")
    output_dir = os.path.join(opt_ml, "output")
    for d in (model_dir, output_dir, checkpoint_dir):
        os.makedirs(d, exist_ok=True)
    env.update({
        "SM_MODEL_DIR": model_dir, "SM_OUTPUT_DIR": output_dir, "KT_CHECKPOINT_DIR": checkpoint_dir,
        "KT_HYPERPARAMETERS_FILE": os.path.join(config_dir, "hyperparameters.json"), "TRAINING_JOB_NAME": name,
    })
    log_path = os.path.join(root, "training.log")
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "kt.train"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            log_file.write(line)
            if stream_logs:
                log.info("[%s] %s", name, line.rstrip())
        code = process.wait()
    if checkpoint_uri:
        lake.publish(checkpoint_dir, checkpoint_uri)
    metrics = _final_metrics(log_path, request.get("AlgorithmSpecification", {}).get("MetricDefinitions", []))
    describe.update({"FinalMetricDataList": metrics, "TrainingEndTime": _now()})
    if code == 0:
        tar_uri = lake.join(request["OutputDataConfig"]["S3OutputPath"], name, "output", "model.tar.gz")
        artifact.pack(model_dir, tar_uri)
        describe.update({"TrainingJobStatus": "Completed", "ModelArtifacts": {"S3ModelArtifacts": tar_uri}})
    else:
        failure_file = os.path.join(output_dir, "failure")
        reason = open(failure_file).read() if os.path.exists(failure_file) else f"exit code {code}, see {log_path}"
        describe.update({"TrainingJobStatus": "Stopped" if code == 143 else "Failed", "FailureReason": reason[:1024]})
    _save(describe_path, describe)
    return describe


def _final_metrics(log_path: str, definitions: list[dict]) -> list[dict]:
    """The last value each MetricDefinition regex captured, as SageMaker reports it."""
    with open(log_path) as f:
        text = f.read()
    out = []
    for d in definitions:
        values = re.findall(d["Regex"], text)
        if values:
            out.append({"MetricName": d["Name"], "Value": float(values[-1]), "Timestamp": _now()})
    return out


def create_model(request: dict, work_dir: str = DEFAULT_WORK_DIR) -> dict:
    """Record a CreateModel request (the transform runner looks models up by name)."""
    _save(os.path.join(work_dir, "models", f"{request['ModelName']}.json"), request)
    return request


def describe_model(name: str, work_dir: str = DEFAULT_WORK_DIR) -> dict | None:
    return _load(os.path.join(work_dir, "models", f"{name}.json"))


def run_transform_job(request: dict, work_dir: str = DEFAULT_WORK_DIR) -> dict:
    """Execute a CreateTransformJob request (or {"Model":..., "Transform":...}) with the model's handlers."""
    if "Transform" in request:
        if "Model" in request:
            create_model(request["Model"], work_dir)
        request = request["Transform"]
    model_request = describe_model(request["ModelName"], work_dir)
    if model_request is None:
        raise ValueError(f"model {request['ModelName']!r} does not exist (CreateModel first)")
    model_url = model_request["PrimaryContainer"]["ModelDataUrl"]
    source = request["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    output = request["TransformOutput"]["S3OutputPath"]
    content_type = request["TransformInput"].get("ContentType", inference.JSON_LINES)
    accept = request["TransformOutput"].get("Accept", inference.JSON_LINES)
    max_payload = int(request.get("MaxPayloadInMB", 6)) << 20
    if request["TransformInput"].get("SplitType") != "Line" or request.get("BatchStrategy") != "MultiRecord":
        raise ValueError("the local transform runner supports SplitType=Line with BatchStrategy=MultiRecord")
    describe = {**request, "TransformJobStatus": "InProgress", "CreationTime": _now()}
    records = 0
    with tempfile.TemporaryDirectory(prefix="kt-transform-") as tmp:
        model = inference.model_fn(artifact.unpack(model_url, os.path.join(tmp, "model")))
        inputs = [source] if not lake.exists(source) or source.endswith(".jsonl") else lake.list_files(source)
        prefix = source.rstrip("/")
        for uri in inputs:
            name = uri[len(prefix):].lstrip("/") or uri.rsplit("/", 1)[-1]
            lines = lake.read_text(uri).splitlines(keepends=True)
            out_parts = []
            for chunk in _mini_batches(lines, max_payload):
                data = inference.input_fn("".join(chunk), content_type)
                out_parts.append(inference.output_fn(inference.predict_fn(data, model), accept))
                records += len(chunk)
            lake.write_text(lake.join(output, f"{name}.out"), "".join(out_parts))
    describe.update({"TransformJobStatus": "Completed", "TransformEndTime": _now(), "RecordsProcessed": records})
    _save(os.path.join(work_dir, "transform-jobs", request["TransformJobName"], "describe.json"), describe)
    return describe


def _mini_batches(lines: list[str], max_bytes: int) -> list[list[str]]:
    """Group lines into MultiRecord payloads under MaxPayloadInMB."""
    batches, current, size = [], [], 0
    for line in lines:
        if current and size + len(line) > max_bytes:
            batches.append(current)
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        batches.append(current)
    return batches


def clean(work_dir: str = DEFAULT_WORK_DIR) -> None:
    shutil.rmtree(work_dir, ignore_errors=True)
