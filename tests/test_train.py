"""The training entry point: hyperparameter parsing, metric lines, failure file, spot-interruption resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import fields

import pytest
import torch

from kt.train import METRIC_REGEXES, Hyperparameters, argument_parser, parse_hyperparameters, read_hyperparameters

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_hyperparameters_arrive_as_strings():
    hp = parse_hyperparameters({"epochs": "3", "lr": "0.01", "hidden": "64.0", "sagemaker_program": "x.py"})
    assert (hp.epochs, hp.lr, hp.hidden) == (3, 0.01, 64)
    assert isinstance(hp.epochs, int) and isinstance(hp.lr, float)


def test_unknown_and_malformed_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="Unknown hyperparameter: epoch"):
        parse_hyperparameters({"epoch": "3"})
    with pytest.raises(ValueError, match="hyperparameter epochs: expected int"):
        parse_hyperparameters({"epochs": "2.5"})
    with pytest.raises(ValueError, match="hyperparameter lr"):
        parse_hyperparameters({"lr": "fast"})
    for decay in ("1", "-0.1"):
        with pytest.raises(ValueError, match=r"hyperparameter ema: expected a decay in \[0, 1\)"):
            parse_hyperparameters({"ema": decay})


def test_the_model_hyperparameter_names_a_known_architecture():
    assert Hyperparameters().model == "dkt"
    assert parse_hyperparameters({"model": " attn "}).model == "attn"
    assert set(parse_hyperparameters({"model": "attn", "hidden": "64"}).model_config(5)) == {
        "num_skills", "hidden", "layers", "max_seq_len", "dropout", "heads"}
    assert parse_hyperparameters({"model": "ensemble"}).model_config(5)["members"] == ("dkt", "attn")
    assert parse_hyperparameters({"model": "ensemble", "members": "dkt+ dkt_counts+attn"}).model_config(5)["members"] == (
        "dkt", "dkt_counts", "attn")
    with pytest.raises(ValueError, match=r"members: expected names among dkt, dkt_counts, attn, gru joined by '\+', got 'dkt,attn'"):
        parse_hyperparameters({"model": "ensemble", "members": "dkt,attn"})
    with pytest.raises(ValueError, match="hyperparameter model: expected one of dkt, attn, ensemble, got 'sakt'"):
        parse_hyperparameters({"model": "sakt"})
    for model in ("attn", "ensemble"):
        with pytest.raises(ValueError, match=f"count_features: dkt only .* not {model}"):
            parse_hyperparameters({"model": model, "count_features": "1"})


def test_cli_arguments_override_the_json_file(tmp_path):
    path = tmp_path / "hyperparameters.json"
    path.write_text(json.dumps({"epochs": "4", "batch_size": "8"}))
    hp = read_hyperparameters(str(path), ["--epochs=2", "--lr", "0.1"])
    assert (hp.epochs, hp.batch_size, hp.lr) == (2, 8, 0.1)
    assert read_hyperparameters(str(tmp_path / "missing.json"), []) == Hyperparameters()


@pytest.mark.parametrize("name", [f.name for f in fields(Hyperparameters)])
def test_every_hyperparameter_reaches_the_hyperparameters_not_an_option_it_prefixes(name):
    """The toolkit passes `--model ensemble`: argparse's prefix matching once read it as --model-dir."""
    for argv in (["--" + name, "x"], [f"--{name}=x"]):
        args, rest = argument_parser().parse_known_args(argv)
        assert rest == argv and not any(vars(args).values()), (argv, vars(args))


def test_metric_regexes_capture_the_printed_lines():
    log = ("epoch=2; train_loss=0.61234; valid_auc=0.77120; valid_ece=0.01000; interactions_per_s=45012;\n"
           "test_auc=0.76500; current_test_auc=0.75000;\n")  # an epoch's line, then kt.job_evaluation's
    captured = {name: re.findall(regex, log) for name, regex in METRIC_REGEXES.items()}
    assert captured == {"train_loss": ["0.61234"], "valid_auc": ["0.77120"], "interactions_per_s": ["45012"],
                        "test_auc": ["0.76500"]}


def _train_cmd(lake: str, root: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kt.train", "--train", f"{lake}/processed/ednet", "--model-dir", f"{root}/model",
            "--checkpoint-dir", f"{root}/checkpoints", "--output-dir", f"{root}/output", "--job-name", "t",
            "--hidden=16", "--epochs=1", "--batch_size=16", "--max_seq_len=40", "--checkpoint_every=1000",
            "--patience=5", *extra]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.path.join(REPO, "src")}


def test_failure_reason_is_written(tmp_path):
    result = subprocess.run(_train_cmd(str(tmp_path / "no-lake"), str(tmp_path)), env=_env(), capture_output=True, text=True)
    assert result.returncode == 1
    assert "no parquet dataset" in (tmp_path / "output" / "failure").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--ema=0.9"]], ids=["weights", "moving-average"])
def test_sigterm_mid_epoch_then_resume_gives_the_same_weights(sample_lake, tmp_path, extra):
    """A spot interruption: SIGTERM during epoch 1, a restart, and bitwise the weights of an uninterrupted run
    (with ``ema``, the moving average is in the checkpoint too)."""
    clean = tmp_path / "clean"
    subprocess.run(_train_cmd(sample_lake, str(clean), *extra), env=_env(), check=True, capture_output=True)

    spot = tmp_path / "spot"
    process = subprocess.Popen(_train_cmd(sample_lake, str(spot), *extra, "--checkpoint_every=3"), env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:  # wait for the first periodic checkpoint, then interrupt
        if "checkpoint saved at epoch 0 step 3" in line:
            process.send_signal(signal.SIGTERM)
            break
    output = process.stdout.read()
    assert process.wait() == 143, output
    interrupted_at = torch.load(spot / "checkpoints" / "checkpoint.pt", weights_only=False)
    assert interrupted_at["epoch"] == 0 and interrupted_at["step_in_epoch"] >= 3  # mid-epoch
    assert not (spot / "model" / "model.pth").exists()

    resumed = subprocess.run(_train_cmd(sample_lake, str(spot), *extra, "--checkpoint_every=3"), env=_env(),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from" in resumed.stderr + resumed.stdout
    a = torch.load(clean / "model" / "model.pth", weights_only=True)
    b = torch.load(spot / "model" / "model.pth", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_with_ema_the_moving_average_is_validated_and_kept(sample_lake, tmp_path):
    """The weights validated, kept as the best epoch's and written are the average, not the last step's."""
    from kt.config import TrainingPaths
    from kt.train import Trainer

    paths = TrainingPaths(train_channel=f"{sample_lake}/processed/ednet", model_dir=str(tmp_path / "m"),
                          checkpoint_dir=str(tmp_path / "c"), output_dir=str(tmp_path / "o"))
    trainer = Trainer(Hyperparameters(hidden=8, layers=1, epochs=1, batch_size=16, max_seq_len=50, ema=0.9), paths)
    trainer.train_epoch()
    average = trainer.averaged.module.state_dict()
    assert trainer.best_state.keys() == average.keys()
    assert all(torch.equal(trainer.best_state[k], average[k]) for k in average)
    assert not all(torch.equal(trainer.best_state[k], v) for k, v in trainer.model.state_dict().items())
    trainer.run()
    assert all(torch.equal(trainer.model.state_dict()[k], average[k]) for k in average)


def test_model_directory_is_the_artifact_contract(tiny_model_dir):
    info = json.load(open(os.path.join(tiny_model_dir, "model.json")))
    for key in ("config", "skill_ids", "skill_topics", "base_rates", "training_manifest_sha256", "metrics", "reference",
                "hyperparameters", "model_version"):
        assert key in info
    assert info["config"]["num_skills"] == len(info["skill_ids"]) == len(info["base_rates"])
    assert sorted(os.listdir(os.path.join(tiny_model_dir, "code"))) == ["inference.py", "kt", "requirements.txt"]


def test_skill_vocab_maps_any_int32_id_without_sizing_an_array():
    """A tag of 2^31 - 1 is a valid skill id: the vocabulary must not allocate an entry per id below it."""
    import tracemalloc

    from kt.data import SkillVocab

    tracemalloc.start()
    vocab = SkillVocab([2**31 - 1, 5, 0, 5])
    indices = vocab.indices([5, -1, 2**31 - 1, 6, 0, 2**40]).tolist()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert indices == [1, -1, 2, -1, 0, -1] and len(vocab) == 3
    assert peak < 1 << 20
    assert SkillVocab([]).indices([0, 1]).tolist() == [-1, -1]
