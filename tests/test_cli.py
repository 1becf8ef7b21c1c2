"""The `kt` command as a user runs it: help, predict (valid and invalid), bad settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kt import artifact

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _kt(*args: str, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kt.cli", *args], input=stdin, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.path.join(REPO, "src"), **(env or {})})


@pytest.fixture(scope="module")
def model_tar(tiny_model_dir, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("cli") / "model.tar.gz")
    artifact.pack(tiny_model_dir, path)
    return path


def test_help_lists_every_command():
    out = _kt("--help")
    assert out.returncode == 0
    for command in ("demo", "sample", "etl", "train", "evaluate", "predict", "refresh", "chart", "api", "endpoint", "lake"):
        assert command in out.stdout


def test_predict_answers_the_design_response(model_tar):
    out = _kt("predict", "--model", model_tar, stdin=json.dumps({"user_sequence": []}))
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert set(body) == {"mastery", "next_skill_recommendation", "predicted_accuracy", "topic_mastery", "model_version"}
    skill = int(next(iter(body["mastery"])))
    out = _kt("predict", "--model", model_tar, stdin=json.dumps({"user_sequence": [{"skill_id": skill, "correct": 0}]}))
    body = json.loads(out.stdout)
    assert body["next_skill_recommendation"] == skill  # the only practiced skill
    assert abs(body["predicted_accuracy"] - sum(body["mastery"].values()) / len(body["mastery"])) < 1e-3


@pytest.mark.parametrize(
    "body,field",
    [
        ("{not json", "body"),
        ('{"user_sequence": [{"skill_id": 1, "correct": 2}]}', "user_sequence[0].correct"),
        ('{"user_sequence": [{"skill_id": 99999, "correct": 1}]}', "user_sequence[0].skill_id"),
        ("{}", "user_sequence"),
    ],
)
def test_predict_errors_are_4xx_json_naming_the_field(model_tar, body, field):
    out = _kt("predict", "--model", model_tar, stdin=body)
    assert out.returncode == 2
    assert json.loads(out.stdout)["field"] == field
    assert "HTTP 4" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_setting_names_the_variable():
    out = _kt("sample", "--users", "1", env={"KT_RUNTIME": "moon"})
    assert out.returncode == 2
    assert "KT_RUNTIME" in out.stderr
