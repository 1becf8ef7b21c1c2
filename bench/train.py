"""Training throughput and valid AUC: our loop (kt.train.Trainer) vs the straightforward loop, same data, same run.

    .venv/bin/python bench/train.py                        # ASSIST2009 (real), 3 epochs each, 1 torch thread
    .venv/bin/python bench/train.py --epochs 1 --users 800  # a quick look

The data (Riiid-format files, by default ../shared/data/real/assist2009_dkt/riiid)
goes through the reference ETL into a temporary lake. Both loops train the
seed's model (kt.model.DKT, same hyperparameters, same seed) on the same
windows of max_seq_len answers:

- straightforward: windows in random order, each batch padded to its longest
  window, no bucketing, no loader workers (the seed's loop);
- ours: ``kt.train.Trainer.train_epoch`` (length-bucketed, masked batches,
  checkpoints and validation included in its timing).

Epochs are interleaved (theirs, ours, theirs, ...) so load from other
processes hits both alike. Throughput counts answered (unpadded) positions per
second of training loop; AUC is on the valid split after the last epoch.
Targets (issue 7): ours >= 2x the straightforward loop, AUC within 0.005.

``--model`` trains another architecture (kt.model.build_model) in both loops.
``--peer`` also trains pyKT 0.0.38's DKT with pyKT's own windows, loader, model
and training loop (bench/pykt_peer.py, in .venv-pykt: ``make
.venv-pykt/.installed``) on the same train and valid users, after our epochs
in the same run and with the same threads, and prints ours / pyKT's answers
per second (issue 20: >= 1.2x, 2 threads, idle machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))

from kt import etl  # noqa: E402
from kt.config import TrainingPaths  # noqa: E402
from kt.data import Window, collate  # noqa: E402
from kt.evaluate import metrics, predict_windows  # noqa: E402
from kt.model import MODELS, build_model  # noqa: E402
from kt.train import Hyperparameters, Trainer  # noqa: E402

DEFAULT_DATA = os.path.join(REPO, "..", "shared", "data", "real", "assist2009_dkt", "riiid")
PYKT_PYTHON = os.path.join(REPO, ".venv-pykt", "bin", "python")  # make .venv-pykt/.installed


class StraightforwardLoop:
    """The seed's loop: shuffled windows, each batch padded to its longest window, plain Adam steps."""

    def __init__(self, hp: Hyperparameters, num_skills: int, windows: list[Window], valid: list[Window]):
        self.hp, self.windows, self.valid = hp, windows, valid
        torch.manual_seed(hp.seed)
        self.model = build_model(hp.model, hp.model_config(num_skills))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        self.rng = np.random.default_rng(hp.seed)
        self.padded = 0

    def train_epoch(self) -> dict:
        started = time.monotonic()
        order = self.rng.permutation(len(self.windows))
        self.model.train()
        answers = 0
        for i in range(0, len(order), self.hp.batch_size):
            batch = collate([self.windows[j] for j in order[i : i + self.hp.batch_size]])
            _, loss = self.model(batch["tokens"], batch["targets"], batch["mask"])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.hp.grad_clip)
            self.optimizer.step()
            answers += int(batch["mask"].sum())
            self.padded += batch["mask"].numel()
        seconds = time.monotonic() - started
        return {"answers": answers, "seconds": seconds, "valid": metrics(*predict_windows(self.model, self.valid))}


def prepare_lake(data: str, root: str, users: int | None) -> str:
    """The Riiid files (optionally the first N users) through the reference ETL; return the processed prefix."""
    raw = os.path.join(root, "raw", "ednet")
    os.makedirs(raw)
    shutil.copyfile(os.path.join(data, "questions.csv"), os.path.join(raw, "questions.csv"))
    if users:
        import pandas as pd

        rows = pd.read_csv(os.path.join(data, "train.csv"))
        keep = rows["user_id"].drop_duplicates().iloc[:users]
        rows[rows["user_id"].isin(keep)].to_csv(os.path.join(raw, "train.csv"), index=False)
    else:
        shutil.copyfile(os.path.join(data, "train.csv"), os.path.join(raw, "train.csv"))
    processed = os.path.join(root, "processed", "ednet")
    etl.run_etl(raw, processed, progress=False)
    return processed


def write_pykt_input(trainer: Trainer, out: str) -> None:
    """Our train and valid users as pyKT's 6-line data.txt (skill indices as concepts) and folds.json."""
    os.makedirs(out, exist_ok=True)
    folds = {}
    with open(os.path.join(out, "data.txt"), "w") as f:
        for fold, sequences in ((1, trainer.train_sequences), (0, trainer.valid_sequences)):
            for user, skills, correct in zip(sequences["user_id"].to_pylist(), sequences["skill_id"].to_pylist(),
                                             sequences["correct"].to_pylist()):
                folds[str(user)] = fold
                f.write(f"{user},{len(skills)}\nNA\n{','.join(map(str, trainer.vocab.indices(skills)))}\n"
                        f"{','.join(map(str, correct))}\nNA\nNA\n")
    with open(os.path.join(out, "folds.json"), "w") as f:
        json.dump(folds, f)


def run_pykt(trainer: Trainer, out: str, epochs: int, threads: int) -> dict:
    """pyKT's DKT on the same users, by bench/pykt_peer.py in .venv-pykt; its figures."""
    if not os.path.exists(PYKT_PYTHON):
        raise SystemExit("--peer needs pyKT's venv: make .venv-pykt/.installed")
    write_pykt_input(trainer, out)
    result = os.path.join(out, "result.json")
    subprocess.run([PYKT_PYTHON, os.path.join(REPO, "bench", "pykt_peer.py"), out, "--epochs", str(epochs),
                    "--threads", str(threads), "--json", result], check=True,
                   env={**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")})
    with open(result) as f:
        return json.load(f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DEFAULT_DATA, help="directory with Riiid-format train.csv + questions.csv")
    parser.add_argument("--users", type=int, help="only the first N users of train.csv")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=Hyperparameters.batch_size)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both loops (1: steady on a shared 2-core box; 0: torch's default)")
    parser.add_argument("--model", choices=MODELS, default="dkt", help="the architecture both loops train")
    parser.add_argument("--peer", action="store_true",
                        help="also train pyKT's DKT with pyKT's own loop on the same users (needs .venv-pykt)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="kt-bench-train-") as tmp:
        processed = prepare_lake(os.path.abspath(args.data), tmp, args.users)
        hp = Hyperparameters(model=args.model, epochs=args.epochs, patience=args.epochs + 1, batch_size=args.batch_size,
                             checkpoint_every=10**9, threads=args.threads)
        paths = TrainingPaths(train_channel=processed, model_dir=f"{tmp}/model", checkpoint_dir=f"{tmp}/ckpt",
                              output_dir=f"{tmp}/out", job_name="bench")
        ours = Trainer(hp, paths, device=torch.device("cpu"))
        theirs = StraightforwardLoop(hp, len(ours.vocab), ours.train_windows, ours.valid_windows)
        lengths = np.array([len(w.skills) - 1 for w in ours.train_windows])
        print(f"data: {args.data} | {len(ours.train_windows):,} train windows of <= {hp.max_seq_len} answers "
              f"(median {np.median(lengths):.0f}), {lengths.sum():,} train targets, {len(ours.vocab)} skills | "
              f"model {hp.model}, batch {hp.batch_size}, hidden {hp.hidden}, layers {hp.layers}, "
              f"{torch.get_num_threads()} torch threads",
              flush=True)
        rows = {"straightforward": [], "ours": []}
        for epoch in range(args.epochs):
            rows["straightforward"].append(theirs.train_epoch())
            rows["ours"].append(ours.train_epoch())
            for name, history in rows.items():
                r = history[-1]
                print(f"  epoch {epoch + 1} {name:<16} {r['answers'] / r['seconds']:>9,.0f} answers/s  "
                      f"valid AUC {r['valid']['auc']:.4f}  ({r['seconds']:.0f}s)", flush=True)
        # pyKT's own loop on the same users after ours, in this run: a subprocess of its venv, same threads
        peer = run_pykt(ours, os.path.join(tmp, "pykt"), args.epochs, args.threads) if args.peer else None

    summary = {}
    for name, history in rows.items():
        summary[name] = {
            "answers_per_s": sum(r["answers"] for r in history) / sum(r["seconds"] for r in history),
            "valid_auc": history[-1]["valid"]["auc"],
            "seconds": sum(r["seconds"] for r in history),
        }
    ratio = summary["ours"]["answers_per_s"] / summary["straightforward"]["answers_per_s"]
    auc_gap = summary["ours"]["valid_auc"] - summary["straightforward"]["valid_auc"]
    fill = sum(r["answers"] for r in rows["straightforward"]) / theirs.padded
    print(f"\n{'loop':<16} {'answers/s':>10} {'valid AUC':>10} {'train s':>8}")
    for name, s in summary.items():
        print(f"{name:<16} {s['answers_per_s']:>10,.0f} {s['valid_auc']:>10.4f} {s['seconds']:>8.0f}")
    print(f"\nthroughput ratio ours/straightforward: {ratio:.2f}x (target >= 2x); "
          f"valid AUC difference {auc_gap:+.4f} (target within +-0.005); "
          f"straightforward batches are {fill:.0%} real answers, {1 - fill:.0%} padding")
    if peer:
        ours_rate = summary["ours"]["answers_per_s"]
        print(f"pyKT DKT (its loop, 1 x {peer['model']['emb_size']} LSTM, {peer['threads']} threads) "
              f"{peer['answers_per_s']:>10,.0f} answers/s, valid AUC {peer['valid_auc'][-1]:.4f} after "
              f"{peer['epochs']} epochs ({peer['train_seconds']:.0f}s)")
        print(f"ours / pyKT DKT: {ours_rate:,.0f} / {peer['answers_per_s']:,.0f} = "
              f"{ours_rate / peer['answers_per_s']:.2f}x (target >= 1.2x: same users, same run, same threads; "
              f"load average at the end {os.getloadavg()[0]:.1f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "ratio": ratio, "auc_gap": auc_gap, "pykt": peer, "args": vars(args)}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
