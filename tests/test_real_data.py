"""The readers and both ETL engines on real EdNet KT1 and Riiid rows (``../shared/data/real``, see its README).

The data stays where it is (research licences: never copied into the repo);
the ETL output goes to tmp_path. Every expected number and sequence is derived
here with plain pandas from the files themselves, following docs/contracts.md §3-4, not
from what our code prints: users, answers, lectures and quarantined rows by
reason, and each user's lists. The two folders of ednet_kt1 hold the same
104 students in both formats (``KT1/`` and its Riiid conversion ``riiid/``),
so both must give the same sequences.
"""

from __future__ import annotations

import json
import os
import pandas as pd
import pytest

from kt_testing import SHARED_DATA
from kt import etl, lake
from kt.data import read_sequences
from test_spark_etl import assert_same_output  # the parity check of the two engines

EDNET = os.path.join(SHARED_DATA, "ednet_kt1")
KAGGLE = os.path.join(SHARED_DATA, "riiid_kaggle_users", "riiid")
NO_SKILL_MAPPINGS = os.path.join(SHARED_DATA, "no-skill-mappings.json")  # absent: the seed's mapping
LISTS = ("content_id", "skill_id", "correct", "timestamp")
# EdNet marks a question without tags with the tag "-1" (797 questions); the Riiid conversion writes
# no tags for them: both are untagged_content.

pytestmark = pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason=f"no real data at {SHARED_DATA}")


def run_python_etl(raw: str, processed: str, fmt: str) -> dict:
    return etl.run_etl(raw, processed, fmt=fmt, skill_mappings=NO_SKILL_MAPPINGS, progress=False)


def etl_sequences(processed: str) -> dict[int, dict[str, list]]:
    """user_id -> the lists of sequences.parquet (all splits)."""
    return {row["user_id"]: {k: row[k] for k in LISTS} for row in read_sequences(processed).to_pylist()}


def first_tag(tags: str, sep: str) -> int | None:
    """The skill of a question: its first tag; None when it has none (EdNet writes "-1" for none)."""
    tags = [t for t in str(tags).split(sep) if t.strip() and t.strip() != "-1"]
    return int(tags[0]) if tags else None


def listed(rows: pd.DataFrame, order: list[str]) -> dict[int, dict[str, list]]:
    """Kept rows (user_id + LISTS columns) as one dict of lists per user, in the contract's order."""
    rows = rows.sort_values(["user_id", *order], kind="stable")
    return {int(u): {k: [int(v) for v in g[k]] for k in LISTS} for u, g in rows.groupby("user_id", sort=True)}


def expected_riiid(raw: str) -> tuple[dict, dict]:
    """Counts and sequences of a Riiid train.csv + questions.csv, by docs/contracts.md §3-4."""
    rows = pd.read_csv(os.path.join(raw, "train.csv"))
    questions = pd.read_csv(os.path.join(raw, "questions.csv"), dtype={"tags": str}, keep_default_na=False)
    skill = {int(q): first_tag(t, " ") for q, t in zip(questions["question_id"], questions["tags"])}
    lectures = rows["content_type_id"] == 1
    answers = rows[~lectures].copy()
    answers["skill_id"] = answers["content_id"].map(skill)
    unknown = ~answers["content_id"].isin(list(skill))
    untagged = ~unknown & answers["skill_id"].isna()
    kept = answers[~unknown & ~untagged].rename(columns={"answered_correctly": "correct"})
    counts = {
        "rows_in": len(rows), "lectures": int(lectures.sum()), "rows_out": len(kept), "users": kept["user_id"].nunique(),
        "quarantined_by_reason": {r: n for r, n in (("unknown_content_id", int(unknown.sum())),
                                                    ("untagged_content", int(untagged.sum()))) if n},
    }
    return counts, listed(kept, ["timestamp", "task_container_id", "row_id"])


def expected_kt1(root: str) -> tuple[dict, dict, dict[int, int]]:
    """Counts and sequences of EdNet KT1 files + contents/questions.csv; also each user's first timestamp."""
    frames = []
    for name in sorted(os.listdir(os.path.join(root, "KT1"))):
        frame = pd.read_csv(os.path.join(root, "KT1", name), dtype=str, keep_default_na=False)
        frame["user_id"] = int(name[1:-4])  # u<id>.csv
        frame["position"] = range(len(frame))
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    questions = pd.read_csv(os.path.join(root, "contents", "questions.csv"), dtype=str, keep_default_na=False)
    key = dict(zip(questions["question_id"], questions["correct_answer"]))
    skill = {q: first_tag(t, ";") for q, t in zip(questions["question_id"], questions["tags"])}
    bad_answer = ~rows["user_answer"].isin(list("abcd"))
    unknown = ~bad_answer & ~rows["question_id"].isin(list(key))
    rows["skill_id"] = rows["question_id"].map(skill)
    untagged = ~bad_answer & ~unknown & rows["skill_id"].isna()
    kept = rows[~bad_answer & ~unknown & ~untagged].copy()
    kept["content_id"] = kept["question_id"].str[1:].astype(int)
    kept["correct"] = (kept["user_answer"] == kept["question_id"].map(key)).astype(int)
    for column in ("timestamp", "solving_id"):
        kept[column] = kept[column].astype(int)
    counts = {
        "rows_in": len(rows), "lectures": 0, "rows_out": len(kept), "users": kept["user_id"].nunique(),
        "quarantined_by_reason": {r: int(m.sum()) for r, m in (("bad_user_answer", bad_answer),
                                                              ("unknown_content_id", unknown),
                                                              ("untagged_content", untagged)) if m.sum()},
    }
    first_timestamp = rows.groupby("user_id")["timestamp"].first().astype(int).to_dict()  # the file's first row
    return counts, listed(kept, ["timestamp", "solving_id", "position"]), first_timestamp


def assert_counts(manifest: dict, counts: dict) -> None:
    got = {k: manifest[k] for k in counts}
    assert got == counts
    assert manifest["quarantined"] == sum(counts["quarantined_by_reason"].values())


@pytest.fixture(scope="module")
def kaggle_processed(tmp_path_factory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("kaggle") / "processed")
    return out, run_python_etl(KAGGLE, out, "riiid")


@pytest.fixture(scope="module")
def ednet_riiid_processed(tmp_path_factory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("ednet-riiid") / "processed")
    return out, run_python_etl(os.path.join(EDNET, "riiid"), out, "riiid")


@pytest.fixture(scope="module")
def ednet_kt1_processed(tmp_path_factory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("ednet-kt1") / "processed")
    return out, run_python_etl(EDNET, out, "kt1")


@pytest.fixture(scope="module")
def ednet_kt1_expected() -> tuple[dict, dict, dict[int, int]]:
    return expected_kt1(EDNET)


def test_kaggle_riiid_rows(kaggle_processed):
    """22 real Kaggle users with their lectures: lectures counted, every question row kept, in order."""
    processed, manifest = kaggle_processed
    counts, sequences = expected_riiid(KAGGLE)
    assert counts["users"] == 22 and counts["lectures"] > 0  # the README's description of the folder
    assert_counts(manifest, counts)
    assert etl_sequences(processed) == sequences


def test_ednet_riiid_conversion_rows(ednet_riiid_processed):
    processed, manifest = ednet_riiid_processed
    counts, sequences = expected_riiid(os.path.join(EDNET, "riiid"))
    assert counts["users"] == 104 and counts["quarantined_by_reason"]["untagged_content"] > 0
    assert_counts(manifest, counts)
    assert etl_sequences(processed) == sequences


def test_ednet_kt1_rows(ednet_kt1_processed, ednet_kt1_expected):
    """The per-user KT1 files: empty answers and untagged questions quarantined, the rest in order."""
    processed, manifest = ednet_kt1_processed
    counts, sequences, _ = ednet_kt1_expected
    assert counts["users"] == 104 and counts["quarantined_by_reason"]["bad_user_answer"] > 0
    assert_counts(manifest, counts)
    assert etl_sequences(processed) == sequences


def test_kt1_and_riiid_formats_give_the_same_sequences(ednet_kt1_processed, ednet_riiid_processed, ednet_kt1_expected):
    """The same 104 students read from KT1/ and from riiid/: same users, splits and lists.

    The conversion's timestamps count from the user's first KT1 row (README), so KT1's are shifted by it.
    """
    _, _, first_timestamp = ednet_kt1_expected
    from_kt1 = read_sequences(ednet_kt1_processed[0]).to_pylist()
    from_riiid = read_sequences(ednet_riiid_processed[0]).to_pylist()
    assert [(r["user_id"], r["split"]) for r in from_kt1] == [(r["user_id"], r["split"]) for r in from_riiid]
    for a, b in zip(from_kt1, from_riiid):
        shifted = [t - first_timestamp[a["user_id"]] for t in a["timestamp"]]
        assert ({k: a[k] for k in ("content_id", "skill_id", "correct")}, shifted) == (
            {k: b[k] for k in ("content_id", "skill_id", "correct")}, b["timestamp"]), a["user_id"]


@pytest.mark.slow
def test_spark_etl_matches_python_on_kt1(ednet_kt1_processed, spark, tmp_path):
    """The Spark engine on the 104 real KT1 files: same manifest counts, sequences, skills and quarantine."""
    from kt import spark_etl

    processed, manifest = ednet_kt1_processed
    out = str(tmp_path / "spark")
    spark_manifest = spark_etl.run(EDNET, out, fmt="kt1", skill_mappings=NO_SKILL_MAPPINGS, spark=spark)
    assert_same_output(processed, out, manifest, spark_manifest)
    assert spark_manifest == json.loads(lake.read_text(lake.join(out, "_manifest.json")))


def test_consolidated_kt1_gives_the_same_output(ednet_kt1_processed, tmp_path):
    """The 104 real KT1 files packed into shards (as `kt ingest` does by default) give the per-user files' counts
    and sequences (Spark on shards: tests/test_spark_etl.py, on crafted files of every kind)."""
    from kt import ingest

    raw = str(tmp_path / "raw")
    shards = ingest.KT1Shards(raw, shard_bytes=2 << 20)  # 8 MB of files: a few shards
    for name in sorted(os.listdir(os.path.join(EDNET, "KT1"))):
        with open(os.path.join(EDNET, "KT1", name), "rb") as f:
            shards.add(name, f.read())
    shards.close()
    assert len(shards.files) > 1
    lake.write_bytes(lake.join(raw, "contents", "questions.csv"),
                     open(os.path.join(EDNET, "contents", "questions.csv"), "rb").read())
    per_user, per_user_manifest = ednet_kt1_processed
    manifest = run_python_etl(raw, str(tmp_path / "python"), "kt1")
    for key in ("rows_in", "rows_out", "quarantined_by_reason", "users_by_split", "rows_by_split", "skills"):
        assert manifest[key] == per_user_manifest[key], key
    assert read_sequences(str(tmp_path / "python")).to_pylist() == read_sequences(per_user).to_pylist()
