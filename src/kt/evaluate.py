"""Evaluation on the test split: the model (DKT or attention) next to the baselines it must beat.

    kt evaluate --lake .kt/lake [--model .kt/lake/models/dkt/<job>/output/model.tar.gz]

Two protocols (``protocol``), both predicting each answer of a user but the first:

- "served" (the default): as the stateless endpoint predicts, from up to
  max_seq_len answers before it, at least half of that past a user's first
  window (overlapping windows, ``served_windows``).
- "pykt": pyKT's (``pykt.preprocess.split_datasets``, evaluation at concept
  level): non-overlapping windows of max_seq_len, each from a cold state,
  positions 1..L-1 of each, windows under 3 answers dropped. For figures
  compared with pyKT's on the same users.

Every method is scored on the same targets. Baselines: the per-skill base rate
of the training split, the Phase-1 Bayesian estimate from the user's earlier
answers, and on sample data the simulator's true P(correct) (the oracle).
Metrics: AUC, accuracy, log loss and expected calibration error (15 bins);
on a split of fewer than BOOTSTRAP_BELOW users (or when asked, ``intervals``)
the model's AUC and ECE also get 95% bootstrap intervals over users
(``auc_interval``, ``ece_interval``). The model is scored as served,
through model.json's temperature (``kt.calibration``); its key is "dkt" whatever
the architecture, so callers read one name.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow.parquet as pq
import torch
from sklearn.metrics import log_loss, roc_auc_score

from kt import bayes, lake
from kt.calibration import (  # noqa: F401
    ECE_BINS, apply_temperature, expected_calibration_error, reliability_diagram,
)
from kt.data import SkillVocab, Window, bucketed_batches, collate, make_windows, read_sequences
from kt.model import AttentionKT, DKT

log = logging.getLogger(__name__)

PROTOCOLS = ("served", "pykt")
PYKT_MIN_WINDOW = 3  # pyKT's generate_sequences(min_seq_len=3)
BOOTSTRAP_BELOW = 100  # test users under which the AUC and ECE get bootstrap intervals by default


def served_windows(sequences, vocab: SkillVocab, max_seq_len: int) -> list[Window]:
    """Every answer with up to max_seq_len answers before it, at least half of that past a user's first
    window: what the stateless endpoint and the batch transform feed (the last max_seq_len answers)."""
    return make_windows(sequences, vocab, max_seq_len, context=max_seq_len // 2)


def protocol_windows(sequences, vocab: SkillVocab, max_seq_len: int, protocol: str) -> list[Window]:
    """The windows a protocol scores (module docstring)."""
    if protocol == "served":
        return served_windows(sequences, vocab, max_seq_len)
    if protocol == "pykt":
        return make_windows(sequences, vocab, max_seq_len, min_len=PYKT_MIN_WINDOW)
    raise ValueError(f"unknown protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC, NaN when y holds one class (a resample or a tiny split may)."""
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return {
        "auc": auc(y, p),
        "accuracy": float(((p >= 0.5) == (y == 1)).mean()),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "ece": expected_calibration_error(y, p),
        "n": int(len(y)),
    }


def bootstrap_interval(statistic, y: np.ndarray, p: np.ndarray, users: np.ndarray, resamples: int = 1000,
                       seed: int = 0) -> list[float]:
    """[2.5%, 97.5%] percentiles of ``statistic(y, p)`` over resamples of whole users, with replacement:
    one user's answers are not independent of each other, so users, not answers, are the sample."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    _, of_answer, counts = np.unique(np.asarray(users), return_inverse=True, return_counts=True)
    rows = np.split(np.argsort(of_answer, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        picked = np.concatenate([rows[i] for i in rng.integers(0, len(rows), len(rows))])
        values.append(statistic(y[picked], p[picked]))
    return [float(v) for v in np.nanpercentile(values, [2.5, 97.5])]


@torch.no_grad()
def predict_windows(model: DKT | AttentionKT, windows: list[Window], batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Next-step predictions of the model for every target, in window order: (y, p)."""
    model.eval()
    device = next(model.parameters()).device  # the GPU while training there, else the CPU
    ys, ps = [], []
    order = bucketed_batches(windows, batch_size, seed=0, epoch=0, shuffle=False)
    by_window: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for batch in order:
        b = collate([windows[i] for i in batch])
        probs, _ = model(b["tokens"].to(device))  # (B, T, S)
        picked = probs.gather(-1, b["targets"][..., 0:1].to(device)).squeeze(-1).cpu()  # (B, T)
        for row, i in enumerate(batch):
            scored = b["mask"][row]
            by_window[i] = (b["targets"][row, scored, 1].numpy(), picked[row, scored].numpy())
    for i in range(len(windows)):
        y, p = by_window[i]
        ys.append(y)
        ps.append(p)
    return np.concatenate(ys).astype(np.float64), np.concatenate(ps).astype(np.float64)


def base_rates(train, vocab: SkillVocab, smoothing: float = 1.0) -> np.ndarray:
    """Per-skill correct rate on the training split (smoothed toward the global rate)."""
    skills = vocab.indices(np.concatenate([np.asarray(s) for s in train["skill_id"].to_pylist()] or [np.array([], int)]))
    correct = np.concatenate([np.asarray(c) for c in train["correct"].to_pylist()] or [np.array([], int)])
    known = skills >= 0
    skills, correct = skills[known], correct[known].astype(np.float64)
    global_rate = correct.mean() if len(correct) else 0.5
    right = np.bincount(skills, weights=correct, minlength=len(vocab))
    seen = np.bincount(skills, minlength=len(vocab))
    return (right + smoothing * global_rate) / (seen + smoothing)


def target_positions(windows: list[Window]) -> tuple[np.ndarray, np.ndarray]:
    """(user row, position in the user's sequence) of every target, in window order."""
    first = [max(1, w.scored_from) for w in windows]  # answer 0 of a history is never a target
    rows = np.concatenate([np.full(len(w.skills) - f, w.user_row) for w, f in zip(windows, first)])
    positions = np.concatenate([np.arange(w.start + f, w.start + len(w.skills)) for w, f in zip(windows, first)])
    return rows, positions


def baseline_predictions(sequences, windows: list[Window], vocab: SkillVocab, rates: np.ndarray) -> dict[str, np.ndarray]:
    """Base-rate and Bayesian predictions aligned with the DKT targets."""
    rows, positions = target_positions(windows)
    skill_lists = sequences["skill_id"].to_pylist()
    correct_lists = sequences["correct"].to_pylist()
    bayes_by_row = {}
    for row in np.unique(rows):
        bayes_by_row[row] = bayes.next_step_predictions(np.asarray(skill_lists[row]), np.asarray(correct_lists[row]))
    target_skill = np.array([vocab.index[skill_lists[r][p]] for r, p in zip(rows, positions)])
    return {
        "base_rate": rates[target_skill],
        "bayes": np.array([bayes_by_row[r][p] for r, p in zip(rows, positions)]),
    }


def oracle_predictions(oracle_uri: str, sequences, windows: list[Window]) -> np.ndarray | None:
    """The simulator's true P(correct) for every target, when the data is simulated."""
    if not lake.exists(oracle_uri):
        return None
    with lake.open_read(oracle_uri) as f:
        oracle = pq.read_table(f)
    truth = {
        (u, t, c): p
        for u, t, c, p in zip(*(oracle[k].to_numpy() for k in ("user_id", "timestamp", "content_id", "p_correct")))
    }
    rows, positions = target_positions(windows)
    users = sequences["user_id"].to_numpy()
    ts = sequences["timestamp"].to_pylist()
    content = sequences["content_id"].to_pylist()
    out = np.array([truth.get((users[r], ts[r][p], content[r][p]), np.nan) for r, p in zip(rows, positions)])
    if np.isnan(out).any():
        log.warning("oracle misses %d of %d targets: not reported", int(np.isnan(out).sum()), len(out))
        return None
    return out


def evaluate(model: DKT | AttentionKT, vocab: SkillVocab, processed: str, split: str = "test",
             oracle_uri: str | None = None, temperature: float = 1.0, reliability_png: str | None = None,
             protocol: str = "served", intervals: bool | None = None) -> dict:
    """Metrics of the model (key "dkt") and every baseline on one split, the model through model.json's temperature.

    ``reliability_png``: also draw every method's reliability diagram there (a lake URI).
    ``intervals``: add the model's ``auc_interval`` and ``ece_interval`` (``bootstrap_interval``); by default
    on splits of fewer than BOOTSTRAP_BELOW users, where one figure says little.
    """
    sequences = read_sequences(processed, split)
    windows = protocol_windows(sequences, vocab, model.config.max_seq_len, protocol)
    if not windows:
        raise ValueError(f"the {split} split has no sequence of two or more answers")
    y, p = predict_windows(model, windows)
    rates = base_rates(read_sequences(processed, "train"), vocab)
    predictions = {"dkt": apply_temperature(p, temperature), **baseline_predictions(sequences, windows, vocab, rates)}
    if oracle_uri:
        truth = oracle_predictions(oracle_uri, sequences, windows)
        if truth is not None:
            predictions["oracle"] = truth
    if reliability_png:
        reliability_diagram({name: (y, pred) for name, pred in predictions.items()}, reliability_png,
                            f"Reliability on the {split} split (DKT temperature {temperature:.3g})")
    report = {name: metrics(y, pred) for name, pred in predictions.items()}
    if intervals or (intervals is None and sequences.num_rows < BOOTSTRAP_BELOW):
        users = target_positions(windows)[0]
        report["dkt"]["auc_interval"] = bootstrap_interval(auc, y, predictions["dkt"], users)
        report["dkt"]["ece_interval"] = bootstrap_interval(expected_calibration_error, y, predictions["dkt"], users)
    return report


def format_report(report: dict) -> str:
    """A small table: one line per method."""
    lines = [f"{'method':<10} {'AUC':>7} {'acc':>7} {'logloss':>8} {'ECE':>7} {'n':>9}"]
    for name, m in report.items():
        lines.append(f"{name:<10} {m['auc']:>7.4f} {m['accuracy']:>7.4f} {m['log_loss']:>8.4f} {m['ece']:>7.4f} {m['n']:>9}")
    return "\n".join(lines)

