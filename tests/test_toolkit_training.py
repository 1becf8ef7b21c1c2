"""Training under the real SageMaker training toolkit, as the PyTorch training image runs it.

The image's command is the toolkit's ``train`` with ``SAGEMAKER_TRAINING_MODULE``
set to ``sagemaker_pytorch_container.training:main`` (PyPI ``sagemaker-training``
and ``sagemaker-pytorch-training``, in ``.venv-training``, built by ``make test``).
Here it gets a container filesystem written the way SageMaker writes ``/opt/ml``
from our CreateTrainingJob request (``kt.aws_requests.training_job``), under
``SAGEMAKER_BASE_DIR``, the toolkit's own override of ``/opt/ml``. The toolkit
extracts ``sourcedir.tar.gz`` (built by ``kt package``) into ``code/``, pip-installs
its requirements.txt (here with no index, so they must already be installed; on AWS
pip downloads them) and runs ``kt_train_entry.py`` with the hyperparameters as
``--key value`` arguments and ``SM_*`` variables.

What stays modelled: S3 (the channel is copied into ``input/data/training``, the
sourcedir is a local file, the checkpoint directory is carried over to the next
container as SageMaker's CheckpointConfig sync would), and the host name
(``SM_STUDIO_LOCAL_MODE`` skips the toolkit's wait for ``algo-1`` to resolve).
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict
from importlib import metadata

import pytest
import torch
from packaging.utils import canonicalize_name

from kt import artifact, aws_requests, package
from kt.config import Settings
from kt.train import CHECKPOINT_FILE, parse_hyperparameters
from kt.train import main as train_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLKIT_VENV = os.path.join(REPO, ".venv-training")
TRAIN = os.path.join(TOOLKIT_VENV, "bin", "train")  # the image's command
PYTORCH_TRAINING_MODULE = "sagemaker_pytorch_container.training:main"  # the PyTorch image's SAGEMAKER_TRAINING_MODULE
RUN = "2026-12-02-0200"
JOB_TIMEOUT_S = 300
# Two epochs of about 70 steps: the interruption after step 3 lands well before the end.
# lr as "2e-3": the toolkit JSON-decodes every value and passes --lr 0.002.
HYPERPARAMETERS = {"hidden": 16, "epochs": 2, "batch_size": 16, "max_seq_len": 40, "patience": 5, "threads": 1,
                   "checkpoint_every": 3, "lr": "2e-3"}


@pytest.fixture(scope="module")
def sourcedir(tmp_path_factory) -> str:
    """dist/sourcedir.tar.gz as `kt package` builds it."""
    assert os.path.exists(TRAIN), f"{TRAIN} is missing: `make test` builds {TOOLKIT_VENV} (requirements-training.txt)"
    return package.build(str(tmp_path_factory.mktemp("dist")))["sourcedir"]


def _container(base: str, request: dict, sourcedir: str, processed: str, current: str | None = None) -> None:
    """/opt/ml as SageMaker lays it out before the container starts (config files, channels, empty dirs).

    ``current``: the local file the request's ``current`` channel names (its S3Prefix is that one object's key).
    """
    config_dir = os.path.join(base, "input", "config")
    os.makedirs(config_dir)
    for sub in ("model", "output/data"):
        os.makedirs(os.path.join(base, sub))
    hyperparameters = {**request["HyperParameters"], "sagemaker_submit_directory": sourcedir}  # in place of s3://
    instance_type = request["ResourceConfig"]["InstanceType"]
    files = {
        "hyperparameters.json": hyperparameters,
        "inputdataconfig.json": {c["ChannelName"]: {
            "TrainingInputMode": c["InputMode"],
            "S3DistributionType": c["DataSource"]["S3DataSource"]["S3DataDistributionType"],
            "RecordWrapperType": "None",
        } for c in request["InputDataConfig"]},
        "resourceconfig.json": {
            "current_host": "algo-1", "current_instance_type": instance_type,
            "current_group_name": "homogeneousCluster", "hosts": ["algo-1"],
            "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": instance_type,
                                 "hosts": ["algo-1"]}],
            "network_interface_name": "eth0",
        },
    }
    for name, content in files.items():
        with open(os.path.join(config_dir, name), "w") as f:
            json.dump(content, f)
    assert [c["ChannelName"] for c in request["InputDataConfig"]] == ["training"] + (["current"] if current else [])
    shutil.copytree(processed, os.path.join(base, "input", "data", "training"))  # File mode: a copy
    if current:  # the object under its key's last part, as File mode copies a prefix that is one key
        os.makedirs(os.path.join(base, "input", "data", "current"))
        shutil.copyfile(current, os.path.join(base, "input", "data", "current", "model.tar.gz"))


def _checkpoint_dir(base: str, request: dict) -> str:
    return os.path.join(base, os.path.relpath(request["CheckpointConfig"]["LocalPath"], "/opt/ml"))


def _start(base: str, request: dict) -> subprocess.Popen:
    """The image's `train` in a process group of its own (the job), output merged as CloudWatch gets it."""
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith(("SM_", "PIP_", "KT_"))}  # only the sourcedir's kt
    env.update({
        "SAGEMAKER_BASE_DIR": base,
        "SAGEMAKER_TRAINING_MODULE": PYTORCH_TRAINING_MODULE,
        "SM_STUDIO_LOCAL_MODE": "true",
        "TRAINING_JOB_NAME": request["TrainingJobName"],
        "PYTHONUNBUFFERED": "1",  # as the image sets it: lines reach the log as they are printed
        "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull,  # no network: requirements.txt must be satisfied
        # /opt/ml/checkpoints (CheckpointConfig.LocalPath) is not writable here: kt.config's override
        "KT_CHECKPOINT_DIR": _checkpoint_dir(base, request),
    })
    return subprocess.Popen([TRAIN], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _run(base: str, request: dict) -> tuple[int, str]:
    process = _start(base, request)
    try:
        output, _ = process.communicate(timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: pytest would not end it
        raise
    return process.returncode, output


def _group(pgid: int) -> list[int]:
    """The live processes of a process group."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    members.append(int(entry))
            except ProcessLookupError:
                pass
    return members


def _state_dict(base: str) -> dict[str, torch.Tensor]:
    return torch.load(os.path.join(base, "model", "model.pth"), weights_only=True)


def test_the_sourcedir_pins_everything_the_entry_point_imports_but_torch():
    """The toolkit pip-installs requirements.txt over the image, whose versions are not ours (numpy<2 in some)."""
    distributions = metadata.packages_distributions()
    imported = package.third_party_imports(package.ENTRY_MODULE) - {"torch"}
    assert "sagemaker_inference" in imported  # the job's evaluation loads models with kt.inference.model_fn
    # matplotlib: imported where the reliability diagram is drawn (kt.calibration), not at module level
    pinned = {canonicalize_name(distributions[root][0]) for root in imported} | {"matplotlib"}
    assert pinned == set(package.TRAINING_REQUIREMENTS)


@pytest.mark.slow
def test_the_toolkit_trains_resumes_after_a_spot_interruption_and_ends_bit_identical(sample_lake, sourcedir,
                                                                                     tmp_path):
    processed = f"{sample_lake}/processed/ednet"
    request = aws_requests.training_job(Settings(), RUN, HYPERPARAMETERS)

    # An uninterrupted job.
    clean = str(tmp_path / "clean")
    _container(clean, request, sourcedir, processed)
    code, log = _run(clean, request)
    assert code == 0, log[-4000:]
    assert os.path.exists(os.path.join(clean, "output", "success"))
    assert not os.path.exists(os.path.join(clean, "output", "failure"))
    assert sorted(os.listdir(os.path.join(clean, "code"))) == ["kt", "kt_train_entry.py", "requirements.txt"]
    # kt.artifact.write_model_dir, then kt.job_evaluation's report and diagram
    assert sorted(os.listdir(os.path.join(clean, "model"))) == ["MAR-INF", "code", "evaluation.json", "model.json",
                                                                "model.pth", "reliability.png"]
    report = json.load(open(os.path.join(clean, "model", "evaluation.json")))
    assert report["current"] is None and report["candidate"]["dkt"]["n"] > 0  # no current channel: none scored
    info = json.load(open(os.path.join(clean, "model", "model.json")))
    # The toolkit's --key value arguments reached the parser: every hyperparameter of the request took effect.
    assert info["hyperparameters"] == asdict(parse_hyperparameters(request["HyperParameters"]))
    assert info["model_version"] == request["TrainingJobName"]
    # The request's MetricDefinitions find each epoch's line in the toolkit's log (valid_auc also the final line's).
    found = {d["Name"]: re.findall(d["Regex"], log) for d in request["AlgorithmSpecification"]["MetricDefinitions"]}
    history = info["metrics"]["history"]
    assert len(history) == HYPERPARAMETERS["epochs"]
    assert found["train_loss"] == [f"{h['train_loss']:.5f}" for h in history]
    assert found["valid_auc"] == [f"{h['valid']['auc']:.5f}" for h in history] + \
        [f"{info['metrics']['valid']['auc']:.5f}"]
    assert found["interactions_per_s"] == [f"{h['interactions_per_s']:.0f}" for h in history]
    assert found["test_auc"] == [f"{report['candidate']['dkt']['auc']:.5f}"]

    # The same job, interrupted: SIGTERM to its process group after the first periodic checkpoint.
    spot = str(tmp_path / "spot")
    _container(spot, request, sourcedir, processed)
    process = _start(spot, request)
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if "checkpoint saved at epoch 0 step 3" in line:
            break
    else:
        pytest.fail("no checkpoint at step 3:\n" + "".join(lines))
    members = _group(process.pid)
    waiters = [os.pidfd_open(pid) for pid in members]  # readable once that process has exited
    os.killpg(process.pid, signal.SIGTERM)
    lines.append(process.stdout.read())
    # The toolkit has no SIGTERM handler: it dies of the signal, so it writes neither success nor failure.
    assert process.wait() == -signal.SIGTERM
    assert len(members) >= 2, members  # the toolkit and the entry point
    for fd in waiters:
        assert select.select([fd], [], [], 60)[0], "a process of the job outlived SIGTERM by 60 s"
        os.close(fd)
    interrupted = torch.load(os.path.join(_checkpoint_dir(spot, request), CHECKPOINT_FILE), weights_only=False)
    assert interrupted["epoch"] == 0 and interrupted["step_in_epoch"] > 3  # the entry point's own SIGTERM checkpoint
    assert not os.path.exists(os.path.join(spot, "model", "model.pth"))
    assert not os.path.exists(os.path.join(spot, "output", "failure"))  # an interruption is no failure

    # The restarted job: a new container, the checkpoints restored into its LocalPath; the clean job's model
    # promoted meanwhile, so the request has a current channel and the job scores that model too.
    clean_tarball = str(tmp_path / "clean-model.tar.gz")
    artifact.pack(os.path.join(clean, "model"), clean_tarball)
    request = aws_requests.training_job(Settings(), RUN, HYPERPARAMETERS,
                                        current_model_url=f"s3://kt-lake/models/dkt/{RUN}/output/model.tar.gz")
    resumed = str(tmp_path / "resumed")
    _container(resumed, request, sourcedir, processed, current=clean_tarball)
    shutil.copytree(_checkpoint_dir(spot, request), _checkpoint_dir(resumed, request))
    code, log = _run(resumed, request)
    assert code == 0, log[-4000:]
    step = interrupted["step_in_epoch"]
    assert f"at epoch 0 step {step}\n" in log and "resumed from" in log, log[-4000:]
    assert not re.search(rf"checkpoint saved at epoch 0 step ({'|'.join(map(str, range(1, step + 1)))})\n", log)
    a, b = _state_dict(clean), _state_dict(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with open(os.path.join(clean, "model", "model.pth"), "rb") as f, \
            open(os.path.join(resumed, "model", "model.pth"), "rb") as g:
        assert f.read() == g.read()
    # The same weights on the same split: the job's current model scores exactly as the new one, and as the
    # clean job scored itself.
    with_current = json.load(open(os.path.join(resumed, "model", "evaluation.json")))
    assert with_current["current"] == with_current["candidate"] == report["candidate"]
    assert with_current["current_model_version"] == request["TrainingJobName"]


@pytest.mark.slow
def test_the_toolkit_trains_an_ensemble_of_every_member_kind(sample_lake, sourcedir, tmp_path):
    """model=ensemble through the same entry point: each member kind's weights under its own keys, evaluated."""
    members = "dkt+dkt_counts+attn+gru"
    request = aws_requests.training_job(Settings(), RUN, {**HYPERPARAMETERS, "epochs": 1, "model": "ensemble",
                                                          "members": members})
    base = str(tmp_path / "job")
    _container(base, request, sourcedir, f"{sample_lake}/processed/ednet")
    code, log = _run(base, request)
    assert code == 0, log[-4000:]
    info = json.load(open(os.path.join(base, "model", "model.json")))
    assert info["model"] == "ensemble" and info["config"]["members"] == members.split("+")
    keys = {".".join(k.split(".")[:3]) for k in _state_dict(base)}
    assert {"members.0.lstm", "members.1.lstm", "members.3.gru"} <= keys and not any(".2.lstm" in k for k in keys)
    report = json.load(open(os.path.join(base, "model", "evaluation.json")))
    assert report["candidate"]["dkt"]["n"] > 0


def test_a_rejected_hyperparameter_is_the_jobs_failure_reason(sample_lake, sourcedir, tmp_path):
    """Our failure file survives the toolkit (it writes its own only when there is none) and the job fails."""
    request = aws_requests.training_job(Settings(), RUN, {**HYPERPARAMETERS, "epoch": 3})
    base = str(tmp_path / "job")
    _container(base, request, sourcedir, f"{sample_lake}/processed/ednet")
    code, log = _run(base, request)
    assert code == 1, log[-4000:]
    with open(os.path.join(base, "output", "failure")) as f:
        assert f.read().startswith("ValueError: Unknown hyperparameter: epoch (known: ")
    assert not os.path.exists(os.path.join(base, "output", "success"))


@pytest.mark.slow
def test_an_interrupted_entry_point_exits_143_though_the_toolkit_is_gone(sample_lake, tmp_path):
    """A group SIGTERM kills the toolkit at once, so the entry point checkpoints with no reader on its pipes."""
    root = str(tmp_path)
    args = [f"--{k}={v}" for k, v in HYPERPARAMETERS.items()]
    process = subprocess.Popen(
        [sys.executable, "-m", "kt.train", "--train", f"{sample_lake}/processed/ednet", "--model-dir", f"{root}/model",
         "--checkpoint-dir", f"{root}/checkpoints", "--output-dir", f"{root}/output", *args],
        env={**os.environ, "PYTHONPATH": os.path.join(REPO, "src"), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if "checkpoint saved at epoch 0 step 3" in line:
            break
    process.stdout.close()  # the toolkit's end of the pipes, gone with it
    process.send_signal(signal.SIGTERM)
    assert process.wait() == 143
    assert torch.load(f"{root}/checkpoints/{CHECKPOINT_FILE}", weights_only=False)["step_in_epoch"] > 3
    assert not os.path.exists(f"{root}/output/failure")


def test_sigterm_during_validation_with_the_toolkit_gone_is_an_interruption(sample_lake, tmp_path, monkeypatch):
    """The epoch's metric line, printed after the SIGTERM that killed the toolkit, fails: no failure, exit 143."""

    class ClosedPipe(io.TextIOBase):
        def write(self, text: str) -> int:
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)  # the group's SIGTERM, during validation
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    root = str(tmp_path)
    args = [f"--{k}={v}" for k, v in {**HYPERPARAMETERS, "checkpoint_every": 20}.items()]
    code = train_main(["--train", f"{sample_lake}/processed/ednet", "--model-dir", f"{root}/model",
                       "--checkpoint-dir", f"{root}/checkpoints", "--output-dir", f"{root}/output", *args])
    assert code == 143
    assert not os.path.exists(f"{root}/output/failure")
    last = torch.load(f"{root}/checkpoints/{CHECKPOINT_FILE}", weights_only=False)  # epoch 0's last periodic one
    assert last["epoch"] == 0 and last["step_in_epoch"] > 0 and last["global_step"] % 20 == 0
