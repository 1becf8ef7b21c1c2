"""Data contracts shared by both ETL engines, training and serving (docs/contracts.md §3-4).

Pure Python plus pyarrow: the Glue job imports this module through
``--extra-py-files``, so nothing here may import torch, pandas or Airflow.
"""

from __future__ import annotations

import zlib

import pyarrow as pa

from kt.topics import DEFAULT_SKILL_TOPICS, OTHER_TOPIC, TOPICS, topic_of  # noqa: F401  (re-exported)

SCHEMA_VERSION = 1

SPLITS = ("train", "valid", "test")

# Every reason an input row can be quarantined for, in the order checks run.
# The first failing check names the reason. A row_id seen before (file order)
# makes the later row a duplicate; lectures are counted after the id checks.
QUARANTINE_REASONS = (
    "wrong_column_count",
    "bad_row_id",
    "duplicate_row_id",
    "bad_user_id",
    "bad_timestamp",
    "bad_content_id",
    "bad_content_type_id",
    "bad_task_container_id",
    "bad_answered_correctly",
    "bad_user_answer",
    "unknown_content_id",
    "untagged_content",
)
# Every reason a row of the questions file can be quarantined for, in the order checks run. The first row
# with a valid question id claims it; a later row with that id is a duplicate. A missing header column is
# not a reason: it stops the run (kt.readers.QuestionsFileError names the file, line and column).
QUESTION_QUARANTINE_REASONS = (
    "wrong_column_count",
    "bad_question_id",
    "duplicate_question_id",
    "bad_correct_answer",
    "bad_part",
    "bad_tags",
)

RIIID_COLUMNS = (
    "row_id",
    "timestamp",
    "user_id",
    "content_id",
    "content_type_id",
    "task_container_id",
    "user_answer",
    "answered_correctly",
    "prior_question_elapsed_time",
    "prior_question_had_explanation",
)
RIIID_QUESTION_COLUMNS = ("question_id", "bundle_id", "correct_answer", "part", "tags")
KT1_COLUMNS = ("timestamp", "solving_id", "question_id", "user_answer", "elapsed_time")
# Consolidated KT1 (``kt ingest`` with consolidation): KT1/part-NNNNN.csv shards whose rows are the users' rows,
# each prefixed with the user id that per-user files carry in their name (u<id>.csv).
KT1_SHARD_COLUMNS = ("user_id",) + KT1_COLUMNS
KT1_SHARD_FILE = r"^part-[0-9]{5,}\.csv$"
KT1_QUESTION_COLUMNS = (
    "question_id",
    "bundle_id",
    "explanation_id",
    "correct_answer",
    "part",
    "tags",
    "deployed_at",
)

SEQUENCES_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("split", pa.string()),
        ("n", pa.int32()),
        ("content_id", pa.list_(pa.int32())),
        ("skill_id", pa.list_(pa.int32())),
        ("correct", pa.list_(pa.int8())),
        ("timestamp", pa.list_(pa.int64())),
        ("elapsed_ms", pa.list_(pa.int32())),
        ("had_explanation", pa.list_(pa.bool_())),
    ]
)

SKILLS_SCHEMA = pa.schema(
    [
        ("content_id", pa.int32()),
        ("skill_id", pa.int32()),
        ("tags", pa.list_(pa.int32())),
        ("part", pa.int8()),
        ("topic", pa.string()),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("source", pa.string()),  # input file, relative to the raw prefix
        ("reason", pa.string()),
        ("raw", pa.string()),  # the row as read, comma-joined
    ]
)


def split_of(user_id: int) -> str:
    """Train/valid/test by CRC32 of the decimal user id (Spark's ``crc32`` agrees)."""
    bucket = zlib.crc32(str(int(user_id)).encode()) % 10
    return "train" if bucket < 8 else ("valid" if bucket == 8 else "test")

