"""From processed sequences to padded, masked, length-bucketed DKT batches.

A user's history is cut into windows of ``max_seq_len`` answers. Windows of
similar length share a batch, so padding stays small; the batch order is a
pure function of (seed, epoch), so training resumes at any step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import torch

from kt import lake
from kt.model import encode


@dataclass
class Window:
    """A slice of one user's history: skill indices and correctness, aligned."""

    user_row: int  # row of the user in the sequences table
    start: int  # position of the first answer in the user's sequence
    skills: np.ndarray  # (L,) int64 skill indices
    correct: np.ndarray  # (L,) int64 0/1
    scored_from: int = 0  # answers before this index are context only: fed, not predicted


class SkillVocab:
    """Skill ids (as the data and the API speak them) <-> dense indices for the model."""

    def __init__(self, skill_ids: list[int]):
        self.skill_ids = sorted(int(s) for s in set(skill_ids))
        self.index = {s: i for i, s in enumerate(self.skill_ids)}
        self.ordered = np.array(self.skill_ids, dtype=np.int64)  # searched, not indexed: an int32 id sizes nothing

    def __len__(self) -> int:
        return len(self.skill_ids)

    def indices(self, skill_ids: np.ndarray) -> np.ndarray:
        """Dense indices; -1 for ids the vocabulary does not know."""
        skill_ids = np.asarray(skill_ids, dtype=np.int64)
        if len(self.ordered) == 0:
            return np.full(len(skill_ids), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.ordered, skill_ids), len(self.ordered) - 1)
        return np.where(self.ordered[at] == skill_ids, at, -1)


def read_skills(processed: str) -> pa.Table:
    return _read_dataset(lake.join(processed, "skills.parquet"))


def read_sequences(processed: str, split: str | None = None) -> pa.Table:
    """The sequences of one split (or all), sorted by user_id so every reader sees one order."""
    table = _read_dataset(lake.join(processed, "sequences.parquet"))
    if split is not None:
        table = table.filter(pc.equal(table["split"], split))
    return table.take(pc.sort_indices(table, [("user_id", "ascending")]))


def _read_dataset(uri: str) -> pa.Table:
    """A parquet directory (hive-partitioned or not) as one table; `_`-prefixed files are skipped."""
    fs, path = lake.filesystem(uri)
    if not lake.exists(uri):
        raise FileNotFoundError(f"no parquet dataset at {uri}")
    table = ds.dataset(path, filesystem=fs, format="parquet", partitioning="hive").to_table()
    if "split" in table.column_names:  # from the path: dictionary-typed; the contract says string
        table = table.set_column(table.schema.get_field_index("split"), "split", pc.cast(table["split"], pa.string()))
    return table


def make_windows(
    sequences: pa.Table, vocab: SkillVocab, max_seq_len: int, min_len: int = 2, context: int = 0
) -> list[Window]:
    """Cut every history into windows of at most max_seq_len; drop windows too short to predict.

    ``context``: each window after a user's first starts that many answers early and
    predicts only the answers after them, so no answer is predicted from a cold
    LSTM state past the first window (as a stateless request sees the last
    max_seq_len answers). Every answer is still predicted exactly once, in order.
    """
    if not 0 <= context < max_seq_len:
        raise ValueError(f"context must be in [0, max_seq_len): {context}")
    stride = max_seq_len - context
    out: list[Window] = []
    skill_lists = sequences["skill_id"].to_pylist()
    correct_lists = sequences["correct"].to_pylist()
    for row, (skills, correct) in enumerate(zip(skill_lists, correct_lists)):
        skills_idx = vocab.indices(np.asarray(skills, dtype=np.int64))
        correct_np = np.asarray(correct, dtype=np.int64)
        for start in range(0, max(1, len(skills_idx) - context), stride):
            piece = skills_idx[start : start + max_seq_len]
            scored_from = context if start else 0
            if len(piece) >= max(min_len, scored_from + 1) and (piece >= 0).all():
                out.append(Window(row, start, piece, correct_np[start : start + max_seq_len], scored_from))
    return out


def collate(windows: list[Window]) -> dict[str, torch.Tensor]:
    """Pad to the longest window: tokens (B, T), targets (B, T, 2), mask (B, T)."""
    longest = max(len(w.skills) for w in windows) - 1
    b = len(windows)
    tokens = torch.zeros(b, longest, dtype=torch.long)
    targets = torch.zeros(b, longest, 2, dtype=torch.long)
    mask = torch.zeros(b, longest, dtype=torch.bool)
    for i, w in enumerate(windows):
        n = len(w.skills) - 1
        skills = torch.from_numpy(w.skills)
        correct = torch.from_numpy(w.correct)
        tokens[i, :n] = encode(skills[:-1], correct[:-1])
        targets[i, :n, 0] = skills[1:]
        targets[i, :n, 1] = correct[1:]
        mask[i, max(0, w.scored_from - 1) : n] = True  # target t is answer t + 1
    return {"tokens": tokens, "targets": targets, "mask": mask}


def bucketed_batches(windows: list[Window], batch_size: int, seed: int, epoch: int, shuffle: bool = True) -> list[list[int]]:
    """Batches of window indices with similar lengths; order fixed by (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    lengths = np.array([len(w.skills) for w in windows])
    jitter = rng.random(len(windows)) if shuffle else np.zeros(len(windows))
    order = np.lexsort((jitter, lengths))  # by length, random among equals
    batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return batches


class BatchDataset(torch.utils.data.Dataset):
    """One item = one collated batch, so DataLoader workers pad in parallel with training."""

    def __init__(self, windows: list[Window], batches: list[list[int]]):
        self.windows = windows
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return collate([self.windows[j] for j in self.batches[i]])
