"""The model artifact (docs/contracts.md §5.4): ``model.tar.gz`` = model.pth + model.json + code/.

``code/`` follows the PyTorch inference container convention: ``inference.py``
(the four handler functions) and ``requirements.txt``. The handlers live in the
``kt`` package, so the few modules serving needs are bundled as ``code/kt/``.
``MAR-INF/MANIFEST.json`` (TorchServe's model-archive manifest) names the handler
service TorchServe runs in the PyTorch inference container: ``kt.handler_service``,
the toolkit's, answering errors by the contract.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile

import torch

from kt import lake

SERVING_MODULES = ("__init__.py", "model.py", "mastery.py", "topics.py", "calibration.py", "bounds.py",
                   "inference.py", "handler_service.py")
INFERENCE_SHIM = '''"""SageMaker PyTorch serving entry point: the handlers live in the bundled kt package."""

from kt.inference import input_fn, model_fn, output_fn, predict_fn  # noqa: F401
'''
# The PyTorch inference containers ship torch, numpy and sagemaker-inference already.
SERVING_REQUIREMENTS = ""
# TorchServe reads a model directory's handler from here (the fields its archive validation needs);
# the model name and version are the ones the container registers ("model", "1.0").
MANIFEST_PATH = os.path.join("MAR-INF", "MANIFEST.json")
MANIFEST = {"runtime": "python", "model": {"modelName": "model", "modelVersion": "1.0",
                                           "handler": "kt.handler_service:handle"}}


def write_model_dir(model_dir: str, state_dict: dict, info: dict) -> None:
    """model.pth, model.json and code/ into a directory (SageMaker tars SM_MODEL_DIR itself)."""
    os.makedirs(os.path.join(model_dir, "code", "kt"), exist_ok=True)
    torch.save(state_dict, os.path.join(model_dir, "model.pth"))
    with open(os.path.join(model_dir, "model.json"), "w") as f:
        json.dump(info, f, indent=1)
    with open(os.path.join(model_dir, "code", "inference.py"), "w") as f:
        f.write(INFERENCE_SHIM)
    with open(os.path.join(model_dir, "code", "requirements.txt"), "w") as f:
        f.write(SERVING_REQUIREMENTS)
    os.makedirs(os.path.join(model_dir, "MAR-INF"), exist_ok=True)
    with open(os.path.join(model_dir, MANIFEST_PATH), "w") as f:
        json.dump(MANIFEST, f, indent=1)
    package_dir = os.path.dirname(os.path.abspath(__file__))
    for name in SERVING_MODULES:
        shutil.copyfile(os.path.join(package_dir, name), os.path.join(model_dir, "code", "kt", name))


def pack(model_dir: str, tar_uri: str) -> None:
    """Tar a model directory into model.tar.gz at a lake URI (members relative, like SageMaker)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "model.tar.gz")
        with tarfile.open(local, "w:gz") as tar:
            for name in sorted(os.listdir(model_dir)):
                tar.add(os.path.join(model_dir, name), arcname=name)
        lake.publish(local, tar_uri)


def unpack(tar_uri: str, dest: str) -> str:
    """Extract model.tar.gz (from the lake) into dest; return dest."""
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        local = lake.stage(tar_uri, tmp)
        with tarfile.open(local, "r:gz") as tar:
            tar.extractall(dest, filter="data")
    return dest


def read_info(model_dir: str) -> dict:
    with open(os.path.join(model_dir, "model.json")) as f:
        return json.load(f)
