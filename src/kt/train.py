"""Training entry point (``--model=dkt|attn|ensemble``, kt.model), following the SageMaker training contract.

    python -m kt.train                      # in the container: everything from SM_* and /opt/ml
    kt train --train .kt/lake/processed/ednet --model-dir /tmp/model --epochs=5

Hyperparameters come from ``/opt/ml/input/config/hyperparameters.json`` (all
strings, as SageMaker writes them) and/or ``--key=value`` or ``--key value``
arguments (the training toolkit passes ``--key value``), through one parser
that converts types and rejects unknown keys. Data is the
processed prefix (``SM_CHANNEL_TRAINING``); the model directory
(``SM_MODEL_DIR``) receives model.pth, model.json and code/. Every
``checkpoint_every`` steps, and on SIGTERM (a spot interruption), the whole
training state goes to ``/opt/ml/checkpoints``; a restart resumes there and
ends with the same weights as an uninterrupted run. Metric lines such as
``valid_auc=0.7712;`` are printed for the job's MetricDefinitions
(``kt.aws_requests.METRIC_REGEXES``); a failure reason goes to
``/opt/ml/output/failure``.

Efficiency: histories are cut into windows of ``max_seq_len``; batches group
windows of similar length (little padding, masked loss, every answer weighted
alike whatever its window's length); ``num_workers`` DataLoader
processes pad batches beside the training step; early stopping on valid AUC
(``patience``), optionally of a moving average of the weights (``ema``); the
GPU when there is one, else the CPU (``threads``: on a shared machine 1 beats
torch's default by far, see bench/train.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import random
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from kt import artifact, calibration, lake
from kt.aws_requests import METRIC_REGEXES  # noqa: F401 - the lines printed below must match them
from kt.config import TrainingPaths, training_paths
from kt.data import BatchDataset, SkillVocab, bucketed_batches, make_windows, read_sequences, read_skills
from kt.evaluate import base_rates, metrics, predict_windows, served_windows
from kt.model import ENSEMBLE_MEMBERS, MODELS, build_model

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
INTERRUPTED_EXIT_CODE = 143  # 128 + SIGTERM


@dataclass
class Hyperparameters:
    # model
    # one of kt.model.MODELS: dkt (LSTM), attn (self-attention, kt.model.AttentionKT) or ensemble (both, averaged)
    model: str = "dkt"
    hidden: int = 128
    layers: int = 2
    max_seq_len: int = 200
    # answers a window after a user's first repeats from the previous one, fed but not scored: long
    # histories are then learned and validated with a warm LSTM state, as they are served
    window_context: int = 0
    dropout: float = 0.2
    count_features: int = 0  # 1: the model also reads running per-skill answer counts (kt.model; dkt only)
    heads: int = 4  # attention heads (attn, ensemble)
    # ensemble only: its models joined by "+", names may repeat (kt.model.ENSEMBLE_MEMBERS),
    # e.g. dkt+dkt_counts+attn+gru
    members: str = "dkt+attn"
    # optimisation
    epochs: int = 20
    batch_size: int = 64  # windows per batch
    lr: float = 2e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    patience: int = 3  # epochs without a better valid AUC before stopping
    # 0 < ema < 1: validate and keep an exponential moving average of the weights (this decay per step): it sits
    # nearer the loss's valley floor than the last step's weights (0.99: +0.0017 valid AUC for a DKT on ASSIST2009
    # and STATICS, -0.0018 on the small EdNet sample of 11 valid users; bench/quality.md)
    ema: float = 0.0
    seed: int = 1024
    # I/O
    checkpoint_every: int = 200  # steps
    num_workers: int = 0  # DataLoader workers padding batches beside training
    threads: int = 0  # torch intra-op threads; 0 = torch's default

    @property
    def ensemble_members(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.members.split("+") if name.strip())

    def model_config(self, num_skills: int) -> dict:
        """The config dict of ``kt.model.build_model(self.model, ...)``: only the fields that model reads."""
        config = {"num_skills": num_skills, "hidden": self.hidden, "layers": self.layers,
                  "max_seq_len": self.max_seq_len, "dropout": self.dropout}
        if self.model == "attn":
            return {**config, "heads": self.heads}
        if self.model == "ensemble":
            return {**config, "heads": self.heads, "members": self.ensemble_members}
        return {**config, "count_features": bool(self.count_features)}


def _convert(kind: str, raw: object) -> int | float | str:
    if kind == "str":
        return str(raw).strip()
    number = float(str(raw).strip())
    if kind == "float":
        return number
    if not number.is_integer():
        raise ValueError("not a whole number")
    return int(number)


def parse_hyperparameters(values: dict[str, object], base: Hyperparameters | None = None) -> Hyperparameters:
    """Convert string values to each field's type; unknown keys raise (SageMaker's own keys are ignored)."""
    hp = copy.copy(base) if base else Hyperparameters()
    types = {f.name: f.type for f in fields(Hyperparameters)}
    for key, raw in values.items():
        if key.startswith("sagemaker_"):
            continue  # sagemaker_program, sagemaker_submit_directory, ... belong to the container
        name = key.replace("-", "_")
        if name not in types:
            raise ValueError(f"Unknown hyperparameter: {key} (known: {', '.join(sorted(types))})")
        try:
            value = _convert(types[name], raw)
        except ValueError as e:
            raise ValueError(f"hyperparameter {key}: expected {types[name]}, got {raw!r}") from e
        setattr(hp, name, value)
    if hp.model not in MODELS:
        raise ValueError(f"hyperparameter model: expected one of {', '.join(MODELS)}, got {hp.model!r}")
    unknown = sorted(set(hp.ensemble_members) - set(ENSEMBLE_MEMBERS))
    if hp.model == "ensemble" and (unknown or not hp.ensemble_members):
        raise ValueError(f"hyperparameter members: expected names among "
                         f"{', '.join(ENSEMBLE_MEMBERS)} joined by '+', got {hp.members!r}")
    if not 0 <= hp.ema < 1:
        raise ValueError(f"hyperparameter ema: expected a decay in [0, 1) (0: off), got {hp.ema}")
    if hp.model != "dkt" and hp.count_features:
        raise ValueError(f"hyperparameter count_features: dkt only (an ensemble names dkt_counts members), "
                         f"not {hp.model}")
    return hp


def read_hyperparameters(path: str, argv: list[str]) -> Hyperparameters:
    """hyperparameters.json if present, then --key=value arguments on top."""
    values: dict[str, object] = {}
    if os.path.exists(path):
        with open(path) as f:
            values.update(json.load(f))
    pairs: dict[str, object] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ValueError(f"expected --key=value, got {arg!r}")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
        else:
            if i + 1 >= len(argv):
                raise ValueError(f"{arg} needs a value")
            key, value = arg[2:], argv[i + 1]
            i += 1
        pairs[key] = value
        i += 1
    values.update(pairs)
    return parse_hyperparameters(values)


class Interrupted(Exception):
    """SIGTERM arrived (spot interruption): the state was checkpointed."""


def pick_device() -> torch.device:
    """The GPU when the instance has one (ml.g4dn.*), the CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Trainer:
    """Training state and the loop; every field needed to resume sits in ``state_dict``."""

    def __init__(self, hp: Hyperparameters, paths: TrainingPaths, device: torch.device | None = None):
        self.hp = hp
        self.paths = paths
        self.device = device or pick_device()
        self.stop_requested = False
        processed = lake.current(paths.train_channel)  # a dataset root by hand; SageMaker's channel is one version
        skills = read_skills(processed)
        self.vocab = SkillVocab(skills["skill_id"].to_pylist())
        self.skill_topics = {int(s): t for s, t in zip(skills["skill_id"].to_pylist(), skills["topic"].to_pylist())}
        self.train_sequences = read_sequences(processed, "train")
        self.train_windows = make_windows(self.train_sequences, self.vocab, hp.max_seq_len, context=hp.window_context)
        self.valid_sequences = read_sequences(processed, "valid")
        self.valid_windows = make_windows(self.valid_sequences, self.vocab, hp.max_seq_len, context=hp.window_context)
        if not self.train_windows or not self.valid_windows:
            raise ValueError(f"{processed}: the train and valid splits need sequences of two or more answers")
        # answers in a batch of batch_size windows on average: the loss's fixed denominator (see train_epoch)
        scored = sum(len(w.skills) - max(1, w.scored_from) for w in self.train_windows)
        self.answers_per_batch = hp.batch_size * scored / len(self.train_windows)
        manifest_uri = lake.join(processed, "_manifest.json")
        self.manifest_sha256 = lake.sha256(manifest_uri) if lake.exists(manifest_uri) else None
        torch.manual_seed(hp.seed)
        random.seed(hp.seed)
        np.random.seed(hp.seed)
        self.model = build_model(hp.model, hp.model_config(len(self.vocab))).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        self.averaged = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(hp.ema)) if hp.ema
                         else None)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best_auc = -1.0
        self.best_state = self._cpu_state()
        self.bad_epochs = 0
        self.history: list[dict] = []

    @property
    def evaluated(self) -> torch.nn.Module:
        """The weights validated and kept: the moving average with ``ema``, else the model's own."""
        return self.averaged.module if self.averaged is not None else self.model

    def _cpu_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.evaluated.state_dict().items()}

    # --- checkpoints -------------------------------------------------------
    @property
    def checkpoint_path(self) -> str:
        return os.path.join(self.paths.checkpoint_dir, CHECKPOINT_FILE)

    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "averaged": None if self.averaged is None else self.averaged.state_dict(),
            "hyperparameters": asdict(self.hp),
            "model_args": self.model.config.to_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best_auc": self.best_auc,
            "best_state": self.best_state,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "rng": rng,
        }

    def save_checkpoint(self) -> None:
        os.makedirs(self.paths.checkpoint_dir, exist_ok=True)
        tmp = self.checkpoint_path + ".tmp"
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, self.checkpoint_path)  # a kill mid-save leaves the previous checkpoint whole
        log.info("checkpoint saved at epoch %d step %d", self.epoch, self.step_in_epoch)

    def resume(self) -> bool:
        """Load the checkpoint if there is one (spot restart); True when resumed."""
        if not os.path.exists(self.checkpoint_path):
            return False
        state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        if state["model_args"] != self.model.config.to_dict():
            raise ValueError(f"checkpoint {self.checkpoint_path} is for another model: {state['model_args']}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])  # moves its state to the parameters' device
        if self.averaged is not None:
            self.averaged.load_state_dict(state["averaged"])
        for key in ("epoch", "step_in_epoch", "global_step", "best_auc", "best_state", "bad_epochs", "history"):
            setattr(self, key, state[key])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        log.info("resumed from %s at epoch %d step %d", self.checkpoint_path, self.epoch, self.step_in_epoch)
        return True

    # --- loop ----------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.epoch >= self.hp.epochs or self.bad_epochs >= self.hp.patience

    def run(self) -> dict:
        """Train until the epoch budget or early stopping; end with the best epoch's weights on the CPU."""
        while not self.finished:
            self.train_epoch()
        self.model.load_state_dict(self.best_state)  # with ema, the best epoch's averaged weights
        self.averaged = None  # the model now holds the weights kept: what follows scores it (``evaluated``)
        self.model.to("cpu")
        self.device = torch.device("cpu")
        # The best epoch's valid predictions made as serving makes them (warm context): the temperature is
        # fitted on these, so it calibrates what the endpoint and the batch transform return. "valid" stays
        # the figure early stopping chose by (the epochs' metric lines), on the training windows.
        served = served_windows(self.valid_sequences, self.vocab, self.hp.max_seq_len)
        return {"valid": self.valid_metrics(), "valid_predictions": predict_windows(self.model, served),
                "epochs": self.epoch, "history": self.history}

    def train_epoch(self) -> dict:
        """The rest of the current epoch (all of it, unless resumed mid-epoch), validation, checkpoint."""
        hp = self.hp
        started = time.monotonic()
        batches = bucketed_batches(self.train_windows, hp.batch_size, hp.seed, self.epoch)
        remaining = BatchDataset(self.train_windows, batches[self.step_in_epoch :])
        # Its own generator: a loader drawing from the global RNG would shift dropout on resume.
        loader = torch.utils.data.DataLoader(
            remaining, batch_size=None, shuffle=False, num_workers=hp.num_workers,
            pin_memory=self.device.type == "cuda", generator=torch.Generator().manual_seed(hp.seed + self.epoch),
        )
        self.model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)  # no device sync per step
        answers = 0
        for batch in loader:
            n = int(batch["mask"].sum())  # on the host copy
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            _, loss = self.model(batch["tokens"], batch["targets"], batch["mask"])  # mean over the batch's answers
            # Bucketed batches of short windows hold few answers; their mean would weigh each answer up to
            # max_seq_len times more than a batch of long windows does. A fixed denominator weighs all alike.
            self.optimizer.zero_grad(set_to_none=True)
            (loss * (n / self.answers_per_batch)).backward()
            for part in getattr(self.model, "members", [self.model]):  # an ensemble's members each as if alone
                torch.nn.utils.clip_grad_norm_(part.parameters(), hp.grad_clip)
            self.optimizer.step()
            if self.averaged is not None:
                self.averaged.update_parameters(self.model)
            loss_sum += loss.detach() * n
            answers += n
            self.step_in_epoch += 1
            self.global_step += 1
            if self.stop_requested:
                self.save_checkpoint()
                raise Interrupted(f"checkpointed at epoch {self.epoch} step {self.step_in_epoch}")
            if self.global_step % hp.checkpoint_every == 0:
                self.save_checkpoint()
        seconds = time.monotonic() - started
        valid = self.valid_metrics()
        record = {"epoch": self.epoch + 1, "train_loss": float(loss_sum) / max(1, answers), "valid": valid,
                  "answers": answers, "interactions_per_s": answers / max(seconds, 1e-9), "seconds": seconds}
        self.history.append(record)
        print(
            f"epoch={self.epoch + 1}; train_loss={record['train_loss']:.5f}; valid_auc={valid['auc']:.5f}; "
            f"valid_ece={valid['ece']:.5f}; interactions_per_s={record['interactions_per_s']:.0f};",
            flush=True,
        )
        if valid["auc"] > self.best_auc + 1e-4:
            self.best_auc = valid["auc"]
            self.best_state = self._cpu_state()
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        self.epoch += 1
        self.step_in_epoch = 0
        self.save_checkpoint()
        return record

    def valid_metrics(self) -> dict[str, float]:
        return metrics(*predict_windows(self.evaluated, self.valid_windows))

    # --- artifact --------------------------------------------------------------
    def model_info(self, result: dict) -> dict:
        """model.json: what serving, evaluation and drift checks need to know."""
        train_skills = np.concatenate([np.asarray(s) for s in self.train_sequences["skill_id"].to_pylist()])
        train_correct = np.concatenate([np.asarray(c) for c in self.train_sequences["correct"].to_pylist()])
        skill_mix = np.bincount(self.vocab.indices(train_skills), minlength=len(self.vocab)) / len(train_skills)
        valid_y, valid_pred = result["valid_predictions"]
        return {
            "model_version": self.paths.job_name,
            "model": self.hp.model,  # kt.model.build_model's name; absent in models trained before it: dkt
            "config": self.model.config.to_dict(),
            "skill_ids": self.vocab.skill_ids,
            "skill_topics": {str(s): self.skill_topics.get(s, "other") for s in self.vocab.skill_ids},
            "base_rates": base_rates(self.train_sequences, self.vocab).round(6).tolist(),
            "hyperparameters": asdict(self.hp),
            "training_manifest_sha256": self.manifest_sha256,
            "metrics": {"valid": result["valid"], "epochs": result["epochs"], "history": result["history"]},
            **calibration.calibrate(valid_y, valid_pred),  # "temperature" (1.0 unless it lowers valid ECE), "calibration"
            "reference": {  # what drift checks compare new data with
                "skill_mix": skill_mix.round(6).tolist(),
                "correct_rate": float(train_correct.mean()),
                "prediction_histogram": np.histogram(valid_pred, bins=10, range=(0, 1))[0].tolist(),
            },
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def train(hp: Hyperparameters, paths: TrainingPaths) -> dict:
    """Train (resuming when a checkpoint exists) and write the model directory; return model.json."""
    if hp.threads:
        torch.set_num_threads(hp.threads)
    trainer = Trainer(hp, paths)
    log.info("training on %s (%d threads), %d train windows, %d valid windows", trainer.device,
             torch.get_num_threads(), len(trainer.train_windows), len(trainer.valid_windows))

    def on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
        trainer.stop_requested = True

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        trainer.resume()
        result = trainer.run()
    except BrokenPipeError as e:
        if not trainer.stop_requested:
            raise
        # The same SIGTERM ended the training toolkit, which read our stdout: a metric line printed between the
        # signal and the next step's check has nowhere to go. The last checkpoint is whole; resume from there.
        raise Interrupted(f"stdout closed after SIGTERM; resume from {trainer.checkpoint_path}") from e
    finally:
        signal.signal(signal.SIGTERM, previous)
    info = trainer.model_info(result)
    artifact.write_model_dir(paths.model_dir, trainer.model.state_dict(), info)
    return info


def write_failure(paths: TrainingPaths, message: str) -> None:
    """SageMaker shows the content of /opt/ml/output/failure as the job's FailureReason."""
    try:
        os.makedirs(paths.output_dir, exist_ok=True)
        with open(os.path.join(paths.output_dir, "failure"), "w") as f:
            f.write(message[:1024])
    except OSError:
        log.exception("cannot write the failure file")


def argument_parser() -> argparse.ArgumentParser:
    """The entry point's own options; everything else on the command line is a hyperparameter.

    allow_abbrev=False because the training toolkit passes each hyperparameter as ``--name value``: with
    argparse's prefix matching, ``--model ensemble`` was read as ``--model-dir ensemble``.
    """
    parser = argparse.ArgumentParser(
        prog="kt train", allow_abbrev=False,
        description="Train a kt.model model (SageMaker training contract). Unknown --key=value pairs are hyperparameters: "
        + ", ".join(f.name for f in fields(Hyperparameters)),
    )
    parser.add_argument("--train", help="processed data directory (default: SM_CHANNEL_TRAINING)")
    parser.add_argument("--model-dir", help="where the model goes (default: SM_MODEL_DIR)")
    parser.add_argument("--checkpoint-dir", help="checkpoints (default: /opt/ml/checkpoints)")
    parser.add_argument("--output-dir", help="failure file (default: /opt/ml/output)")
    parser.add_argument("--hyperparameters", help="hyperparameters.json (default: /opt/ml/input/config/...)")
    parser.add_argument("--job-name", help="model version to record (default: TRAINING_JOB_NAME)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args, rest = argument_parser().parse_known_args(argv)
    paths = training_paths(
        train_channel=args.train, model_dir=args.model_dir, checkpoint_dir=args.checkpoint_dir,
        output_dir=args.output_dir, hyperparameters_file=args.hyperparameters, job_name=args.job_name,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        hp = read_hyperparameters(paths.hyperparameters_file, rest)
        info = train(hp, paths)
    except Interrupted as e:
        # Through logging, which never raises: under the training toolkit the same SIGTERM has already killed
        # the toolkit, whose pipes were our stdout and stderr (a print raised BrokenPipeError: exit 1, not 143).
        log.warning("interrupted: %s", e)
        return INTERRUPTED_EXIT_CODE
    except Exception as e:  # noqa: BLE001 - report any failure to SageMaker, then fail
        write_failure(paths, f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        log.exception("training failed")
        return 1
    print(f"final valid_auc={info['metrics']['valid']['auc']:.5f}; model_dir={paths.model_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
