"""Reference ETL in pure Python (pyarrow): raw EdNet -> per-user sequences (docs/contracts.md §4).

    kt etl --engine python --lake .kt/lake [--format riiid|kt1]

Out-of-core in two passes so memory stays flat whatever the input size:
1. stream the raw CSV in blocks, validate (bad rows -> ``_quarantine/``), and
   append the valid interactions to one of N temporary buckets by user id;
2. per bucket, sort by (user_id, timestamp, task_container_id, row_id), cut
   the rows into one list per user, assign the split, and write parquet.

The Glue/Spark job (``glue/ednet_preprocessor.py``) must produce the same rows.

``run_etl`` writes one processed directory; ``publish`` (both engines: ``kt etl``,
the Glue job) writes it as a new version of processed/ednet and switches the
pointer only once ``check_manifest`` accepts it (docs/contracts.md §3.1).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kt import lake
from kt.readers import INTERACTION_SCHEMA, Questions, read_kt1, read_kt1_questions, read_riiid, read_riiid_questions
from kt.schema import (
    DEFAULT_SKILL_TOPICS,
    OTHER_TOPIC,
    QUARANTINE_REASONS,
    QUARANTINE_SCHEMA,
    QUESTION_QUARANTINE_REASONS,
    SCHEMA_VERSION,
    SEQUENCES_SCHEMA,
    SKILLS_SCHEMA,
    SPLITS,
    split_of,
    topic_of,
)
from kt.topics import check_skill_mappings

log = logging.getLogger(__name__)

BUCKET_BYTES = 256 << 20  # raw CSV bytes per bucket: ~6M rows, well under 1 GiB in memory
FORMATS = ("riiid", "kt1")


def raw_paths(raw: str, fmt: str) -> dict[str, str]:
    """Where each format's files sit under raw/ednet/."""
    if fmt == "riiid":
        return {"interactions": lake.join(raw, "train.csv"), "questions": lake.join(raw, "questions.csv")}
    if fmt == "kt1":
        return {"interactions": lake.join(raw, "KT1"), "questions": lake.join(raw, "contents", "questions.csv")}
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")


def detect_format(raw: str) -> str:
    """riiid when train.csv is there, else kt1."""
    return "riiid" if lake.exists(lake.join(raw, "train.csv")) else "kt1"


class ManifestError(RuntimeError):
    """A processed dataset whose manifest is missing or does not check out: never served, never trained on."""


def check_manifest(processed: str) -> dict:
    """The manifest of one processed directory, refused unless the output is complete and every row accounted for.

    The one rule shared by both engines (before switching the pointer), ednet_etl's
    check and dkt_train's (docs/contracts.md §4.4).
    """
    uri = lake.join(processed, "_manifest.json")
    if not lake.exists(uri):
        raise ManifestError(f"no {uri}: the ETL run did not finish")
    manifest = json.loads(lake.read_text(uri))
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ManifestError(f"{uri}: schema_version {manifest.get('schema_version')!r}, this code reads {SCHEMA_VERSION}")
    if manifest["rows_in"] != manifest["rows_out"] + manifest["lectures"] + manifest["quarantined"]:
        raise ManifestError(f"{uri}: rows_in != rows_out + lectures + quarantined: "
                            f"{ {k: manifest[k] for k in ('rows_in', 'rows_out', 'lectures', 'quarantined')} }")
    for part in ("sequences.parquet", "skills.parquet"):
        if not lake.list_files(lake.join(processed, part)):
            raise ManifestError(f"{uri}: {lake.join(processed, part)} is missing")
    return manifest


def publish(processed_root: str, write: Callable[[str], dict], keep: int) -> dict:
    """One ETL run (``write(version_uri) -> manifest``) as a new version of processed/ednet, then the switch."""
    return lake.publish_version(processed_root, write, check_manifest, "_manifest.json", keep)


def load_skill_topics(uri: str | None) -> dict[str, str]:
    """The skill->topic JSON (skill_mappings), checked; the seed's mapping when there is none."""
    if not (uri and lake.exists(uri)):
        return dict(DEFAULT_SKILL_TOPICS)

    def unique_keys(pairs: list[tuple[str, object]]) -> dict:
        repeated = [k for k, n in Counter(k for k, _ in pairs).items() if n > 1]
        if repeated:
            raise ValueError(f"{uri}: key {repeated[0]!r} appears more than once")
        return dict(pairs)

    try:
        mapping = json.loads(lake.read_text(uri), object_pairs_hook=unique_keys)
    except UnicodeDecodeError as e:
        raise ValueError(f"{uri}: skill_mappings is not UTF-8 text: {e}") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{uri}: skill_mappings is not JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    except RecursionError as e:
        raise ValueError(f"{uri}: skill_mappings is nested too deeply to be a skill id -> topic object") from e
    return check_skill_mappings(mapping, uri)


def questions_manifest(questions: Questions) -> dict:
    """The manifest's account of the questions file's quarantined rows (both engines write these fields)."""
    reasons = Counter(questions.quarantine["reason"].to_pylist())
    return {
        "questions_quarantined": sum(reasons.values()),
        "questions_quarantined_by_reason": {r: reasons[r] for r in QUESTION_QUARANTINE_REASONS if reasons[r]},
    }


def skills_table(questions: Questions, skill_topics: dict[str, str]) -> pa.Table:
    """skills.parquet: one row per tagged question, topic from the mapping."""
    tagged = questions.skill_id >= 0
    skill_ids = questions.skill_id[tagged]
    return pa.table(
        {
            "content_id": pa.array(questions.content_id[tagged], pa.int32()),
            "skill_id": pa.array(skill_ids, pa.int32()),
            "tags": pa.array([t for t, ok in zip(questions.tags, tagged) if ok], pa.list_(pa.int32())),
            "part": pa.array(questions.part[tagged], pa.int8()),
            "topic": pa.array([topic_of(int(s), skill_topics) for s in skill_ids], pa.string()),
        },
        schema=SKILLS_SCHEMA,
    )


def input_files(paths: dict[str, str]) -> list[str]:
    files = []
    for uri in paths.values():
        files.extend(lake.list_files(uri) if not uri.endswith(".csv") else ([uri] if lake.exists(uri) else []))
    return files


def sequences_of(interactions: pa.Table, questions: Questions) -> pa.Table:
    """One row per user from interactions of whole users: sorted, listed, split."""
    if interactions.num_rows == 0:
        return SEQUENCES_SCHEMA.empty_table()
    order = pc.sort_indices(
        interactions,
        sort_keys=[("user_id", "ascending"), ("timestamp", "ascending"),
                   ("task_container_id", "ascending"), ("row_id", "ascending")],
    )
    rows = interactions.take(order)
    user_ids = rows["user_id"].to_numpy()
    starts = np.concatenate([[0], np.flatnonzero(np.diff(user_ids)) + 1])
    offsets = pa.array(np.concatenate([starts, [len(user_ids)]]).astype(np.int32))
    content = rows["content_id"].combine_chunks()
    skill = pa.array(questions.skill_of(content.to_numpy()), pa.int32())

    def listed(values: pa.Array) -> pa.ListArray:
        return pa.ListArray.from_arrays(offsets, values)

    users = user_ids[starts]
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "split": pa.array([split_of(u) for u in users], pa.string()),
            "n": pa.array(np.diff(offsets.to_numpy()), pa.int32()),
            "content_id": listed(content),
            "skill_id": listed(skill),
            "correct": listed(rows["correct"].combine_chunks()),
            "timestamp": listed(rows["timestamp"].combine_chunks()),
            "elapsed_ms": listed(rows["elapsed_ms"].combine_chunks()),
            "had_explanation": listed(rows["had_explanation"].combine_chunks()),
        },
        schema=SEQUENCES_SCHEMA,
    )


def write_skills(processed: str, skills: pa.Table) -> None:
    """skills.parquet as both engines write it: one part file (the table is small)."""
    with lake.open_write(lake.join(processed, "skills.parquet", "part-00000.parquet")) as f:
        pq.write_table(skills, f)


def run_etl(
    raw: str,
    processed: str,
    fmt: str | None = None,
    skill_mappings: str | None = None,
    buckets: int | None = None,
    progress: bool | None = None,
) -> dict:
    """Run the reference ETL from a raw prefix to a processed directory (replaced); return the manifest."""
    from tqdm import tqdm  # here, not at import: the Glue job imports this module, and Glue 5 has no tqdm

    started = time.monotonic()
    raw = lake.current(raw)  # the raw dataset's current version (its root in a lake from before versions)
    fmt = fmt or detect_format(raw)
    paths = raw_paths(raw, fmt)
    if not lake.exists(paths["questions"]):
        raise FileNotFoundError(f"no questions file at {paths['questions']}")
    skill_mappings = skill_mappings or lake.join(raw, "skill_mappings.json")
    skill_topics = load_skill_topics(skill_mappings)
    questions = read_kt1_questions(paths["questions"]) if fmt == "kt1" else read_riiid_questions(paths["questions"])
    skills = skills_table(questions, skill_topics)

    files = input_files(paths)
    total_bytes = sum(lake.size(f) for f in files)
    buckets = buckets or max(1, math.ceil(total_bytes / BUCKET_BYTES))
    counts: Counter = Counter()
    reasons: Counter = Counter()
    lake.delete(processed)
    quarantine_uri = lake.join(processed, "_quarantine", "part-00000.parquet")
    hide_progress = None if progress is None else not progress  # None: only on a terminal
    with tempfile.TemporaryDirectory(prefix="kt-etl-") as tmp:
        writers = [pq.ParquetWriter(os.path.join(tmp, f"bucket-{b:05d}.parquet"), INTERACTION_SCHEMA) for b in range(buckets)]
        with lake.open_write(quarantine_uri) as qf, pq.ParquetWriter(qf, QUARANTINE_SCHEMA) as quarantine_writer:
            if questions.quarantine.num_rows:  # the questions file's rejects come first
                quarantine_writer.write_table(questions.quarantine)
            batches = read_kt1(paths["interactions"], questions) if fmt == "kt1" else read_riiid(paths["interactions"], questions)
            with tqdm(desc="etl: read + validate", unit="row", unit_scale=True, disable=hide_progress) as bar:
                for batch in batches:
                    counts["rows_in"] += batch.rows_in
                    counts["lectures"] += batch.lectures
                    reasons.update(batch.quarantine["reason"].to_pylist())
                    if batch.quarantine.num_rows:
                        quarantine_writer.write_table(batch.quarantine)
                    if buckets == 1:
                        writers[0].write_table(batch.interactions)
                    else:
                        bucket_of = batch.interactions["user_id"].to_numpy() % buckets
                        for b in range(buckets):
                            part = batch.interactions.filter(pa.array(bucket_of == b))
                            if part.num_rows:
                                writers[b].write_table(part)
                    bar.update(batch.rows_in)
        for w in writers:
            w.close()

        users_by_split: Counter = Counter()
        rows_by_split: Counter = Counter()
        for b in tqdm(range(buckets), desc="etl: sequences", unit="bucket", disable=hide_progress):
            sequences = sequences_of(pq.read_table(os.path.join(tmp, f"bucket-{b:05d}.parquet")), questions)
            for split in SPLITS:
                part = sequences.filter(pc.equal(sequences["split"], split))
                if part.num_rows == 0:
                    continue
                users_by_split[split] += part.num_rows
                rows_by_split[split] += int(pc.sum(part["n"]).as_py())
                uri = lake.join(processed, "sequences.parquet", f"split={split}", f"part-{b:05d}.parquet")
                with lake.open_write(uri) as f:
                    pq.write_table(part, f)
    write_skills(processed, skills)

    counts["rows_out"] = sum(rows_by_split.values())
    counts["quarantined"] = sum(reasons.values())
    used_skills = set(int(s) for s in skills["skill_id"].to_pylist())
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "engine": "python",
        "format": fmt,
        "rows_in": counts["rows_in"],
        "rows_out": counts["rows_out"],
        "lectures": counts["lectures"],
        "quarantined": counts["quarantined"],
        "quarantined_by_reason": {r: reasons[r] for r in QUARANTINE_REASONS if reasons[r]},
        **questions_manifest(questions),
        "users": sum(users_by_split.values()),
        "users_by_split": {s: users_by_split[s] for s in SPLITS},
        "rows_by_split": {s: rows_by_split[s] for s in SPLITS},
        "skills": len(used_skills),
        "questions": skills.num_rows,
        "unmapped_skills": sum(1 for s in used_skills if topic_of(s, skill_topics) == OTHER_TOPIC),
        "inputs": lake.checksums([*files, *([skill_mappings] if lake.exists(skill_mappings) else [])]),
        "buckets": buckets,
        "duration_s": round(time.monotonic() - started, 3),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if manifest["rows_in"] != manifest["rows_out"] + manifest["lectures"] + manifest["quarantined"]:
        raise AssertionError(f"row accounting broken: {manifest}")
    lake.write_text(lake.join(processed, "_manifest.json"), json.dumps(manifest, indent=1))
    log.info("etl done: %s rows in, %s out, %s lectures, %s quarantined", counts["rows_in"], counts["rows_out"],
             counts["lectures"], counts["quarantined"])
    return manifest

