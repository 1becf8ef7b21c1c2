"""Local SageMaker: run the same CreateTrainingJob / CreateModel / CreateTransformJob requests on this machine.

    from kt import aws_requests, local_sagemaker
    describe = local_sagemaker.run_training_job(aws_requests.training_job(settings, run, hp), work_dir)

moto accepts these requests but runs no compute, so locally the ``plugins/``
operators hand them to these runners, which honour the container contracts:

Training (``run_training_job``), in ``<work_dir>/training-jobs/<name>/opt_ml`` (the job's ``/opt/ml``):
- each ``S3Prefix`` channel is staged to ``input/data/<channel>`` (copied from
  an s3:// lake; a symlink to a local lake directory; a prefix that is one
  object's key, as the ``current`` model channel, gives that one file under its
  name), and ``SM_CHANNEL_<NAME>`` and ``SM_CHANNELS`` name only the request's
  channels, as SageMaker's; ``input/config`` gets
  ``hyperparameters.json`` (all strings), ``inputdataconfig.json`` and
  ``resourceconfig.json``, and the ``SM_*`` variables point at them;
- the code is script mode's: when ``sagemaker_submit_directory`` exists, the
  sourcedir tarball is extracted to ``code/`` and ``sagemaker_program`` runs
  there with ``--key value`` hyperparameters (the training toolkit's
  arguments), importing the tarball's ``kt``; otherwise ``python -m kt.job_evaluation``
  (what the entry point runs: kt.train, then the job's evaluation) from this installation;
- ``CheckpointConfig.S3Uri`` is copied into the checkpoint LocalPath before
  the start and back after the end (SageMaker also syncs during the run), so a
  rerun of a stopped or interrupted job resumes there;
- ``MaxRuntimeInSeconds`` and ``stop_training_job`` send SIGTERM (status Stopped);
- ``model/`` is tarred to ``S3OutputPath/<job>/output/model.tar.gz``; the
  status, ``FinalMetricDataList`` (the request's MetricDefinitions over the
  log) and ``FailureReason`` (from ``output/failure``) go to describe.json.

Transform (``run_transform_job``): the model's tarball is served by
``kt.serve`` exactly as the inference container serves it (a child process
whose path starts with the tarball's ``code/``, the model's Environment), and
each input file is split by line, grouped into MultiRecord payloads under
MaxPayloadInMB and POSTed to ``/invocations``; the responses, assembled by
line, go to ``<S3OutputPath>/<input name>.out``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from datetime import datetime, timezone
from typing import Callable

import httpx
import pyarrow.fs as pafs

from kt import artifact, lake, package

log = logging.getLogger(__name__)

DEFAULT_WORK_DIR = ".kt/sagemaker"
CONTAINER_ROOT = "/opt/ml/"
STOP_GRACE_S = 120  # SageMaker waits this long after SIGTERM before it kills the algorithm
JSON_LINES = "application/jsonlines"
TRANSFORM_TIMEOUT_S = 600.0  # per mini-batch request
ENTRY_MODULE = f"kt.{package.ENTRY_MODULE}"  # what kt_train_entry.py runs, when there is no sourcedir

_running: dict[str, "_Job"] = {}  # training jobs started by this process, by name
_running_lock = threading.Lock()


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


# --- training ------------------------------------------------------------------


class _Job:
    """A running training process and why it was asked to stop."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.stop_reason: str | None = None

    def stop(self, reason: str) -> None:
        if self.process.poll() is None:
            self.stop_reason = self.stop_reason or reason
            self.process.send_signal(signal.SIGTERM)


def describe_training_job(name: str, work_dir: str = DEFAULT_WORK_DIR) -> dict | None:
    return _load(os.path.join(work_dir, "training-jobs", name, "describe.json"))


def stop_training_job(name: str) -> bool:
    """StopTrainingJob for a job this process runs: SIGTERM (the job checkpoints and ends Stopped)."""
    with _running_lock:
        job = _running.get(name)
    if job is None:
        return False
    job.stop("Stopped")
    return True


def _container_path(opt_ml: str, path: str) -> str:
    """A path inside the container's /opt/ml, on this machine."""
    if not path.startswith(CONTAINER_ROOT):
        raise ValueError(f"{path}: the local runner maps only paths under {CONTAINER_ROOT}")
    return os.path.join(opt_ml, path[len(CONTAINER_ROOT):])


def _copy_prefix(uri: str, local: str) -> None:
    """Copy a lake prefix (s3:// or a directory) into a local directory, replacing it."""
    shutil.rmtree(local, ignore_errors=True)
    uri = uri.rstrip("/")
    if lake.is_s3(uri):
        if lake.exists(uri):
            lake.stage(uri, local)
    elif os.path.isdir(uri):
        shutil.copytree(uri, local)
    os.makedirs(local, exist_ok=True)


def _stage_channel(channel: dict, opt_ml: str) -> str:
    source = channel["DataSource"].get("S3DataSource")
    if source is None or source.get("S3DataType", "S3Prefix") != "S3Prefix":
        raise ValueError(f"channel {channel['ChannelName']}: the local runner stages S3Prefix sources only")
    uri = source["S3Uri"].rstrip("/")
    local = os.path.join(opt_ml, "input", "data", channel["ChannelName"])
    os.makedirs(os.path.dirname(local), exist_ok=True)
    if lake.is_s3(uri):
        lake.stage(uri, local)  # a prefix that is one object's key: that object, under its own name
    elif os.path.isfile(uri):  # one object's key on a local lake, e.g. the current model's model.tar.gz
        os.makedirs(local)
        os.symlink(os.path.abspath(uri), os.path.join(local, os.path.basename(uri)))
    else:  # a local lake: the channel is a read-only view of it, like a copy but free
        if not os.path.isdir(uri):
            raise FileNotFoundError(f"channel {channel['ChannelName']}: {uri} does not exist")
        os.symlink(os.path.abspath(uri), local)
    return local


def _hyperparameter_args(hyperparameters: dict[str, str]) -> list[str]:
    """The entry point's arguments as the training toolkit builds them: --key value, sagemaker_* left out."""
    args = []
    for key in sorted(hyperparameters):
        if not key.startswith("sagemaker_"):
            args += [f"--{key}", str(hyperparameters[key])]
    return args


def _code(hyperparameters: dict[str, str], opt_ml: str) -> tuple[list[str], str | None]:
    """The command and working directory: script mode from the sourcedir when it exists, else the entry
    point's module (kt.job_evaluation: training, then the job's evaluation) from this installation."""
    submit = hyperparameters.get("sagemaker_submit_directory")
    program = hyperparameters.get("sagemaker_program")
    if submit and program and lake.exists(submit):
        code_dir = os.path.join(opt_ml, "code")
        with tempfile.TemporaryDirectory() as tmp, tarfile.open(lake.stage(submit, tmp), "r:gz") as tar:
            tar.extractall(code_dir, filter="data")
        if not os.path.exists(os.path.join(code_dir, program)):
            raise FileNotFoundError(f"{submit} has no {program}")
        log.info("script mode: %s from %s", program, submit)
        return [sys.executable, program], code_dir
    if submit:
        log.info("no sourcedir at %s (`kt package` builds one): running %s from this installation", submit,
                 ENTRY_MODULE)
    return [sys.executable, "-m", ENTRY_MODULE], None


def run_training_job(
    request: dict,
    work_dir: str = DEFAULT_WORK_DIR,
    stream_logs: bool = True,
    on_log: Callable[[str], None] | None = None,
) -> dict:
    """Execute a CreateTrainingJob request here; return a DescribeTrainingJob-like dict.

    on_log: called with each line the algorithm prints (Airflow task logs, tests).
    """
    name = request["TrainingJobName"]
    root = os.path.abspath(os.path.join(work_dir, "training-jobs", name))
    describe_path = os.path.join(root, "describe.json")
    hyperparameters = {k: str(v) for k, v in request.get("HyperParameters", {}).items()}
    describe = {**request, "HyperParameters": hyperparameters, "TrainingJobStatus": "InProgress",
                "SecondaryStatus": "Starting", "CreationTime": _now()}
    _save(describe_path, describe)
    opt_ml = os.path.join(root, "opt_ml")
    shutil.rmtree(opt_ml, ignore_errors=True)  # a fresh container each time; checkpoints come from S3Uri
    log_path = os.path.join(root, "training.log")
    started = time.monotonic()
    try:
        env, command, cwd, checkpoint = _prepare(request, hyperparameters, opt_ml)
    except Exception as e:  # noqa: BLE001 - a request the container could not start is a failed job
        describe.update({"TrainingJobStatus": "Failed", "SecondaryStatus": "Failed",
                         "FailureReason": f"ClientError: {type(e).__name__}: {e}"[:1024], "TrainingEndTime": _now()})
        _save(describe_path, describe)
        return describe

    with open(log_path, "w") as log_file:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
        job = _Job(process)
        with _running_lock:
            _running[name] = job
        max_runtime = (request.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
        timer = threading.Timer(max_runtime, job.stop, args=("MaxRuntimeExceeded",)) if max_runtime else None
        if timer:
            timer.daemon = True
            timer.start()
        describe.update({"SecondaryStatus": "Training", "TrainingStartTime": _now()})
        _save(describe_path, describe)
        try:
            assert process.stdout is not None
            for line in process.stdout:
                log_file.write(line)
                log_file.flush()
                if stream_logs:
                    log.info("[%s] %s", name, line.rstrip())
                if on_log:
                    on_log(line)
            code = process.wait()
        finally:
            if timer:
                timer.cancel()
            if process.poll() is None:  # the runner itself is being torn down
                job.stop("Stopped")
                process.wait(STOP_GRACE_S)
            with _running_lock:
                _running.pop(name, None)
    if checkpoint:
        local, uri = checkpoint
        lake.publish(local, uri)  # a rerun of this request resumes from here
    describe.update({
        "FinalMetricDataList": _final_metrics(log_path, request.get("AlgorithmSpecification", {})
                                              .get("MetricDefinitions", [])),
        "TrainingEndTime": _now(),
        "TrainingTimeInSeconds": int(time.monotonic() - started),
    })
    model_dir = os.path.join(opt_ml, "model")
    tar_uri = lake.join(request["OutputDataConfig"]["S3OutputPath"], name, "output", "model.tar.gz")
    if code == 0:
        artifact.pack(model_dir, tar_uri)
        describe.update({"TrainingJobStatus": "Completed", "SecondaryStatus": "Completed",
                         "ModelArtifacts": {"S3ModelArtifacts": tar_uri}})
    elif job.stop_reason or code == 128 + signal.SIGTERM:
        reason = job.stop_reason or "Interrupted"
        describe.update({"TrainingJobStatus": "Stopped", "SecondaryStatus": reason,
                         "FailureReason": f"{reason}: SIGTERM; the job checkpointed, rerun the request to resume"})
        if os.listdir(model_dir):  # SageMaker uploads what the model directory holds when a job is stopped
            artifact.pack(model_dir, tar_uri)
            describe["ModelArtifacts"] = {"S3ModelArtifacts": tar_uri}
    else:
        failure_file = os.path.join(opt_ml, "output", "failure")
        detail = open(failure_file).read() if os.path.exists(failure_file) else f"exit code {code}, see {log_path}"
        describe.update({"TrainingJobStatus": "Failed", "SecondaryStatus": "Failed",
                         "FailureReason": f"AlgorithmError: {detail}"[:1024]})
    _save(describe_path, describe)
    return describe


def _prepare(request: dict, hyperparameters: dict[str, str], opt_ml: str):
    """The container's filesystem and environment for one run: (env, command, cwd, (checkpoint dir, S3Uri))."""
    config_dir = os.path.join(opt_ml, "input", "config")
    os.makedirs(config_dir)
    for sub in ("model", "output/data"):
        os.makedirs(os.path.join(opt_ml, sub))
    hyperparameters_file = os.path.join(config_dir, "hyperparameters.json")
    _save(hyperparameters_file, hyperparameters)
    channels = request.get("InputDataConfig", [])
    _save(os.path.join(config_dir, "inputdataconfig.json"),
          {c["ChannelName"]: {k: v for k, v in c.items() if k != "ChannelName"} for c in channels})
    resources = request.get("ResourceConfig", {})
    _save(os.path.join(config_dir, "resourceconfig.json"),
          {"current_host": "algo-1", "hosts": ["algo-1"], "instance_type": resources.get("InstanceType", "local")})
    # The training toolkit's variables (the subset an entry point reads), pointing into this opt_ml.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    for channel in channels:
        env[f"SM_CHANNEL_{channel['ChannelName'].upper()}"] = _stage_channel(channel, opt_ml)
    env.update({
        "SM_CHANNELS": json.dumps(sorted(c["ChannelName"] for c in channels)),
        "SM_HPS": json.dumps(hyperparameters),
        "SM_MODEL_DIR": os.path.join(opt_ml, "model"),
        "SM_OUTPUT_DIR": os.path.join(opt_ml, "output"),
        "SM_OUTPUT_DATA_DIR": os.path.join(opt_ml, "output", "data"),
        "SM_INPUT_DIR": os.path.join(opt_ml, "input"),
        "SM_INPUT_CONFIG_DIR": config_dir,
        "SM_CURRENT_HOST": "algo-1",
        "SM_HOSTS": json.dumps(["algo-1"]),
        "SM_NUM_CPUS": str(os.cpu_count() or 1),
        "TRAINING_JOB_NAME": request["TrainingJobName"],
        # kt.config's overrides of the two fixed container paths (/opt/ml/... is not writable here)
        "KT_HYPERPARAMETERS_FILE": hyperparameters_file,
        # Locally the job shares the cores with Airflow and the API: spinning OpenMP threads starve them (issue 7).
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
    })
    checkpoint = None
    config = request.get("CheckpointConfig")
    if config:
        local = _container_path(opt_ml, config.get("LocalPath", "/opt/ml/checkpoints"))
        _copy_prefix(config["S3Uri"], local)
        env["KT_CHECKPOINT_DIR"] = local
        checkpoint = (local, config["S3Uri"].rstrip("/"))
    command, cwd = _code(hyperparameters, opt_ml)
    if cwd is not None:
        env["SM_MODULE_DIR"] = hyperparameters["sagemaker_submit_directory"]
        env["SM_USER_ENTRY_POINT"] = hyperparameters["sagemaker_program"]
    return env, command + _hyperparameter_args(hyperparameters), cwd, checkpoint


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


# --- models and transform ------------------------------------------------------------


def create_model(request: dict, work_dir: str = DEFAULT_WORK_DIR) -> dict:
    """Record a CreateModel request (the transform runner looks models up by name)."""
    _save(os.path.join(work_dir, "models", f"{request['ModelName']}.json"), request)
    return request


def describe_model(name: str, work_dir: str = DEFAULT_WORK_DIR) -> dict | None:
    return _load(os.path.join(work_dir, "models", f"{name}.json"))


def _input_files(source: str) -> list[tuple[str, str]]:
    """(uri, name relative to the S3Prefix) of every input object."""
    prefix = source.rstrip("/")
    fs, path = lake.filesystem(prefix)
    if fs.get_file_info(path).type == pafs.FileType.File:
        return [(prefix, prefix.rsplit("/", 1)[-1])]
    base = prefix if lake.is_s3(prefix) else os.path.abspath(prefix)
    return [(uri, uri[len(base):].lstrip("/")) for uri in lake.list_files(prefix)]


def run_transform_job(request: dict, work_dir: str = DEFAULT_WORK_DIR) -> dict:
    """Execute a CreateTransformJob request (or {"Model":..., "Transform":...}) with the model's container contract."""
    from kt import serve

    if "Transform" in request:
        if "Model" in request:
            create_model(request["Model"], work_dir)
        request = request["Transform"]
    model_request = describe_model(request["ModelName"], work_dir)
    if model_request is None:
        raise ValueError(f"model {request['ModelName']!r} does not exist (CreateModel first)")
    transform_input = request["TransformInput"]
    if transform_input.get("SplitType") != "Line" or request.get("BatchStrategy") != "MultiRecord":
        raise ValueError("the local transform runner supports SplitType=Line with BatchStrategy=MultiRecord")
    if request["TransformOutput"].get("AssembleWith", "Line") != "Line":
        raise ValueError("the local transform runner assembles outputs by line (AssembleWith=Line)")
    source = transform_input["DataSource"]["S3DataSource"]
    if source.get("S3DataType", "S3Prefix") != "S3Prefix":
        raise ValueError("the local transform runner reads S3Prefix sources only")
    output = request["TransformOutput"]["S3OutputPath"]
    content_type = transform_input.get("ContentType", JSON_LINES)
    accept = request["TransformOutput"].get("Accept", JSON_LINES)
    max_payload_mb = int(request.get("MaxPayloadInMB", 6))
    container = model_request["PrimaryContainer"]
    environment = {**container.get("Environment", {}), **request.get("Environment", {}),
                   "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(max_payload_mb)}
    describe_path = os.path.join(work_dir, "transform-jobs", request["TransformJobName"], "describe.json")
    describe = {**request, "TransformJobStatus": "InProgress", "CreationTime": _now()}
    _save(describe_path, describe)
    records = 0
    try:
        with serve.running(container["ModelDataUrl"], environment_vars=environment) as endpoint, \
                httpx.Client(base_url=endpoint.url, timeout=TRANSFORM_TIMEOUT_S) as client:
            for uri, name in _input_files(source["S3Uri"]):
                lines = [line for line in lake.read_text(uri).splitlines(keepends=True) if line.strip()]
                parts = []
                for chunk in _mini_batches(lines, max_payload_mb << 20):
                    reply = client.post("/invocations", content="".join(chunk).encode("utf-8"),
                                        headers={"Content-Type": content_type, "Accept": accept})
                    if reply.status_code != 200:
                        raise RuntimeError(f"ClientError: {name}: /invocations answered {reply.status_code}: "
                                           f"{reply.text[:500]}")
                    out = reply.text if reply.text.endswith("\n") else reply.text + "\n"
                    if out.count("\n") != len(chunk):
                        raise RuntimeError(f"ClientError: {name}: {len(chunk)} records in, {out.count(chr(10))} out")
                    parts.append(out)
                    records += len(chunk)
                lake.write_text(lake.join(output, f"{name}.out"), "".join(parts))
    except Exception as e:  # noqa: BLE001 - the job fails with the reason, as SageMaker reports it
        log.exception("transform job %s failed", request["TransformJobName"])
        describe.update({"TransformJobStatus": "Failed", "FailureReason": str(e)[:1024], "TransformEndTime": _now()})
        _save(describe_path, describe)
        return describe
    describe.update({"TransformJobStatus": "Completed", "TransformEndTime": _now(), "RecordsProcessed": records})
    _save(describe_path, describe)
    return describe


def _mini_batches(lines: list[str], max_bytes: int) -> list[list[str]]:
    """Group lines into MultiRecord payloads under MaxPayloadInMB; a single larger record fails the job."""
    batches, current, size = [], [], 0
    for line in lines:
        n = len(line.encode("utf-8"))
        if n > max_bytes:
            raise RuntimeError(f"ClientError: a record of {n} bytes exceeds MaxPayloadInMB")
        if current and size + n > max_bytes:
            batches.append(current)
            current, size = [], 0
        current.append(line)
        size += n
    if current:
        batches.append(current)
    return batches


def clean(work_dir: str = DEFAULT_WORK_DIR) -> None:
    shutil.rmtree(work_dir, ignore_errors=True)
