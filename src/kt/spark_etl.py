"""The ETL on Spark: raw EdNet -> per-user sequences, row for row what the reference (kt.etl) writes.

    kt etl --engine spark --lake .kt/lake [--format riiid|kt1]         (local PySpark)
    python glue/ednet_preprocessor.py --raw R --processed P ...        (AWS Glue 5, or local PySpark)

Outputs and manifest as docs/contracts.md §3-4 and ``kt.etl.run_etl`` (engine "spark"). How
each rule of the reference (``kt.readers``) is met:

- One read over the interactions, every column a string. Riiid: train.csv, one
  file, read as text lines split at commas (``read_lines``: about half the CPU
  of Spark's CSV parser; a quoted line goes through ``from_csv``).
  KT1: one CSV read over the whole KT1/ directory (``recursiveFileLookup``,
  ``pathGlobFilter=*.csv``), never a read per file: Spark packs the ~784K small
  files into a few thousand tasks, and ``_metadata.file_path`` (the successor
  of ``input_file_name()``, which also gives the split's ``file_block_start``)
  names each row's file, hence its user id and quarantine source. Consolidated
  shards (``part-NNNNN.csv``, from ``kt ingest``) are a second read, by path
  list, whose first column is the user id; the two reads are one union.
- "File order" is (file, block start, ``monotonically_increasing_id``): ids grow
  in read order inside a task, and a file split is read by one task. It decides
  which duplicate row_id wins (the first) and KT1's row_id (position among the
  parsed rows of its file, from a window).
- Rows with the wrong column count come from Spark's corrupt-record column
  (PERMISSIVE mode, CSV column pruning off so the count is checked), or from
  the field count of a split line, with their raw text. Non-UTF-8 bytes decode
  to U+FFFD, as the reference's raw text.
- Every check is a Column in the reference's order; the first failing one is the
  reason (``kt.schema.QUARANTINE_REASONS``); lectures are counted after the id
  checks. A clean Riiid row has all its fields proved by one regex over the row;
  only the others are matched field by field (``_parsed``). Duplicate row ids:
  ids grouped 64 to a group with a bit mask; only a group with more ids than
  bits is aggregated by id (``seen_twice``). Question metadata is read on the
  driver by ``kt.readers`` itself.
- One shuffle by user_id, cached; per split, users are grouped on that
  partitioning and each list is sorted explicitly by (timestamp,
  task_container_id, row_id, file) with ``sort_array`` over structs: the order
  never depends on ``collect_list``.
- The split column stays inside the files (one write per split directory), so
  ``kt.data.read_sequences`` reads exactly ``SEQUENCES_SCHEMA``.

Imports only pyspark, numpy/pyarrow (through ``kt.readers``/``kt.schema``) and
kt's pure-Python modules: the Glue job gets kt through ``--extra-py-files``.
Local Spark cannot read ``s3://`` here, so an S3 lake is staged to a temp dir
(``kt.lake.stage``) and the output published back (``kt.lake.publish``).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import math
import os
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from kt import lake
from kt.etl import (  # one definition each, shared with the reference
    FORMATS,
    load_skill_topics,
    questions_manifest,
    raw_paths,
    skills_table,
    write_skills,
)
from kt.readers import NO_SKILL, Questions, read_kt1_questions, read_riiid_questions
from kt.schema import (
    KT1_COLUMNS,
    KT1_SHARD_COLUMNS,
    KT1_SHARD_FILE,
    OTHER_TOPIC,
    QUARANTINE_REASONS,
    QUARANTINE_SCHEMA,
    RIIID_COLUMNS,
    SCHEMA_VERSION,
    SEQUENCES_SCHEMA,
    SPLITS,
    topic_of,
)

log = logging.getLogger(__name__)

# Java regexes; \z is the very end, as RE2's $ (Java's $ would also match before a final line break).
INT = r"^[0-9]{1,18}\z"
CONTENT_INT = r"^[0-9]{1,9}\z"
FLOAT = r"^[0-9]{1,12}(\.[0-9]*)?\z"
KT1_QUESTION = r"^q[0-9]{1,9}\z"
KT1_FILE = r"^u([0-9]{1,18})\.csv\z"
# Riiid's checked fields and what each must match (riiid_rows; the rest are compared to literals or not checked).
RIIID_PATTERNS = {"row_id": INT, "user_id": INT, "timestamp": INT, "content_id": CONTENT_INT,
                  "task_container_id": INT, "prior_question_elapsed_time": FLOAT}
INT32_MAX = 2**31 - 1
CORRUPT = "_corrupt_record"
LECTURE = "lecture"  # a reason-column value that is not a quarantine reason: counted, not kept
SHUFFLE_BYTES = 64 << 20  # raw CSV bytes per partition of the user shuffle
OUTPUT_FILE_BYTES = 512 << 20  # raw CSV bytes per sequences file (~100 MB of parquet)
SPLIT_SHARE = {"train": 0.8, "valid": 0.1, "test": 0.1}  # CRC32 mod 10: 8/10, 1/10, 1/10
SESSION_CONF = {
    # With CSV column pruning, a row with the wrong column count passes when not every column is read.
    "spark.sql.csv.parser.columnPruning.enabled": "false",
    # The cached rows live for one run: building them uncompressed is ~4x cheaper in CPU.
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
    # collect_list of a task's users in one hash map (a task holds ~64 MB of CSV: ~1M rows), instead of
    # spilling and sorting all its rows once it has seen 128 users.
    "spark.sql.objectHashAggregate.sortBased.fallbackThreshold": str(1 << 20),
}
# Spark writes `_SUCCESS` and, on a local disk, `.crc` files next to each part; the reference writes neither.
WRITE_OPTIONS = {"mapreduce.fileoutputcommitter.marksuccessfuljobs": "false"}
LOCAL_WRITE_OPTIONS = {"fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem", "fs.file.impl.disable.cache": "true"}


# JVM options of the local driver (it is the executor too), measured on 5M rows (bench/README.md):
# the parallel collector instead of G1 (no G1 write barriers: ~20% less CPU on a 2-core box), and JIT
# compilation of Spark's generated methods above HotSpot's 8,000-byte limit, which otherwise stay interpreted.
LOCAL_JAVA_OPTIONS = "-XX:+UseParallelGC -XX:-DontCompileHugeMethods"


def local_session(master: str = "local[*]", driver_memory: str = "3g", shuffle_partitions: int = 8) -> SparkSession:
    """A local SparkSession for `kt etl --engine spark` (a running session is reused as is).

    3g: with 2g the cached rows of 5M interactions spill and the run takes ~20% longer (bench/README.md).
    """
    return (
        SparkSession.builder.master(master)
        .appName("kt-etl")
        .config("spark.driver.memory", driver_memory)
        .config("spark.driver.extraJavaOptions", LOCAL_JAVA_OPTIONS)
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )


def spark_type(arrow_type: pa.DataType) -> T.DataType:
    """The Spark type of one kt.schema column type."""
    if pa.types.is_list(arrow_type):
        return T.ArrayType(spark_type(arrow_type.value_type), containsNull=True)
    simple = {pa.int64(): T.LongType(), pa.int32(): T.IntegerType(), pa.int8(): T.ByteType(),
              pa.string(): T.StringType(), pa.bool_(): T.BooleanType()}
    return simple[arrow_type]


def spark_schema(schema: pa.Schema) -> T.StructType:
    """A kt.schema contract as a Spark schema, every field nullable as in the contract."""
    return T.StructType([T.StructField(f.name, spark_type(f.type), nullable=True) for f in schema])


def with_schema(df: DataFrame, schema: pa.Schema) -> DataFrame:
    """The same rows typed as the contract, nullable fields included.

    Spark writes a column it knows is never null as parquet ``required``, and
    pyarrow then reads ``not null``: not the contract. ``Dataset.to`` keeps the
    nullability and a widening cast is optimized away, so the schema is
    re-applied on the JVM side (``createDataFrame(rdd, schema)``), rows unchanged.
    """
    spark = df.sparkSession
    target = spark_schema(schema)
    ordered = df.select(*[F.col(f.name).cast(f.dataType) for f in target.fields])
    jschema = spark._jsparkSession.parseDataType(target.json())
    return DataFrame(spark._jsparkSession.createDataFrame(ordered._jdf.rdd(), jschema), spark)


# How a CSV line is parsed, by the CSV source (read_csv) and by from_csv (read_lines' quoted lines) alike.
CSV_OPTIONS = {
    "mode": "PERMISSIVE",
    "columnNameOfCorruptRecord": CORRUPT,
    "escape": '"',  # RFC 4180 doubled quotes, as pyarrow (Spark's default escape is a backslash)
}


def _strings(header: list[str]) -> T.StructType:
    """Every header column a string, plus the corrupt-record column: what a CSV line is parsed into."""
    return T.StructType([T.StructField(c, T.StringType()) for c in [*header, CORRUPT]])


def read_csv(spark: SparkSession, paths: list[str], header: list[str], with_file: bool = True) -> DataFrame:
    """All rows of the CSV files, every column a string, plus file (if needed), block start and read order."""
    reader = (
        spark.read.schema(_strings(header))
        .options(**CSV_OPTIONS)
        .option("header", True)
        .option("enforceSchema", False)  # a file whose header differs fails the job instead of shifting columns
        .option("pathGlobFilter", "*.csv")
        .option("recursiveFileLookup", True)
    )
    df = reader.csv(paths)
    return df.select(
        *header,
        CORRUPT,
        _raw(header).alias("raw"),  # computed only where a caller uses it
        _file(with_file),
        F.col("_metadata.file_block_start").alias("block_start"),
        F.monotonically_increasing_id().alias("seq"),
    )


def read_lines(spark: SparkSession, path: str, header: list[str], with_file: bool = True) -> DataFrame:
    """read_csv's rows and columns for ONE CSV file, read as text lines: about half the CPU of Spark's CSV parser.

    A line without a quote is its fields joined by commas, so it is split at
    commas and is itself the row's raw text; a line with a quote (rare) goes
    through Spark's CSV parser (``from_csv``, ``CSV_OPTIONS`` as read_csv). Lines end at
    \\n, \\r\\n or \\r; fields decode as UTF-8 with U+FFFD, as in the CSV source (raw: at
    the quarantine, the only place it is written, so clean lines are never decoded twice); a
    blank line holds no row. The header is the file's first non-blank line:
    one file, so the first line of the task that reads its first block.
    """
    lines = spark.read.text(path).select(
        F.col("value").alias("line"),  # bytes as read: split and from_csv decode, quarantine() decodes raw
        _file(with_file),
        F.col("_metadata.file_block_start").alias("block_start"),
    )
    lines = lines.where(F.trim("line") != "").select("*", F.monotonically_increasing_id().alias("seq"))
    first_of_task = F.col("seq") == F.shiftleft(F.spark_partition_id().cast("bigint"), 33)
    lines = lines.where(~((F.col("block_start") == 0) & first_of_task))
    quoted = F.col("line").contains('"')
    # Each in a projection of its own, so that from_csv runs only on quoted lines (see _parsed).
    parsed = F.from_csv("line", _strings(header).simpleString(), CSV_OPTIONS)
    lines = lines.select("*", F.when(quoted, parsed).alias("csv"), F.when(~quoted, F.split("line", ",")).alias("fields"))
    from_csv, split = F.col("csv").isNotNull(), F.size("fields") == len(header)
    columns = [F.when(from_csv, F.col("csv")[c]).when(split, F.col("fields")[i]).alias(c) for i, c in enumerate(header)]
    corrupt = F.when(from_csv, F.col(f"csv.{CORRUPT}")).when(~split, F.col("line"))
    raw = F.when(from_csv, _raw([f"csv.{c}" for c in header], f"csv.{CORRUPT}")).otherwise(F.col("line"))
    return lines.select(*columns, corrupt.alias(CORRUPT), raw.alias("raw"), "file", "block_start", "seq")


def _file(with_file: bool) -> Column:
    """Each row's file path ("" when not needed); Spark gives it percent-encoded."""
    path = F.expr("url_decode(replace(_metadata.file_path, '+', '%2B'))")
    return (path if with_file else F.lit("")).alias("file")


def _text(column: str) -> Column:
    """A CSV value as pyarrow sees it: Spark reads an empty field as null, pyarrow as ""."""
    return F.coalesce(F.col(column), F.lit(""))


def _int(column: str, pattern: str = INT) -> tuple[Column, Column]:
    """(value as bigint or null, valid) for a decimal string column."""
    ok = _text(column).rlike(pattern)
    return F.when(ok, F.col(column).cast("bigint")), ok


def _raw(columns: list[str], corrupt: str = CORRUPT) -> Column:
    """The row as the reference quarantines it: its columns comma-joined, or the unparsed line."""
    return F.when(F.col(corrupt).isNull(), F.concat_ws(",", *[_text(c) for c in columns])).otherwise(F.col(corrupt))


def _checks(*checks: tuple[Column, str]) -> Column:
    """The reason of the first failing check (null when all pass)."""
    out = None
    for failed, reason in checks:
        out = F.when(failed, F.lit(reason)) if out is None else out.when(failed, F.lit(reason))
    return out


def _split(user_id: Column) -> Column:
    """kt.schema.split_of in Spark: CRC32 of the decimal user id, mod 10."""
    bucket = F.crc32(user_id.cast("string")) % 10
    return F.when(bucket < 8, "train").when(bucket == 8, "valid").otherwise("test")


def driver_table(spark: SparkSession, columns: dict[str, list], schema: T.StructType) -> DataFrame:
    """A small driver-side table (question metadata) as a DataFrame, sent to the JVM as Arrow.

    ``spark.createDataFrame(list)`` pickles the rows through Python worker
    processes, which need the driver's interpreter and packages on every node;
    from pandas with Arrow on (and no silent fallback) the job stays JVM-only.
    """
    import pandas as pd  # here, not at import: the module imports without pandas

    arrow = {"spark.sql.execution.arrow.pyspark.enabled": "true",
             "spark.sql.execution.arrow.pyspark.fallback.enabled": "false"}
    with _session_conf(spark, arrow):
        return spark.createDataFrame(pd.DataFrame(columns, columns=schema.fieldNames()), schema)


def questions_frame(spark: SparkSession, questions: Questions) -> DataFrame:
    """content id -> skill (NO_SKILL when untagged) and correct answer (the reader keeps one row per id)."""
    by_content: dict[int, tuple[int, int]] = {}
    for content_id, skill_id, answer in zip(questions.content_id.tolist(), questions.skill_id.tolist(),
                                           questions.correct_answer.tolist()):
        by_content[content_id] = (skill_id, answer)
    schema = T.StructType([T.StructField(name, T.IntegerType()) for name in ("q_content_id", "q_skill_id", "q_answer")])
    columns = {"q_content_id": list(by_content), "q_skill_id": [s for s, _ in by_content.values()],
               "q_answer": [a for _, a in by_content.values()]}
    return driver_table(spark, columns, schema)


def _parsed(raw_rows: DataFrame, patterns: dict[str, str], keep: list[str]) -> DataFrame:
    """Each checked column matched once: `<c>_ok` and its text `<c>`; plus the raw text and the file position.

    Most rows are clean, so one regex over a parsed row's raw text (each
    checked field's pattern, any other field ``[^,]*``, in header order) proves
    all its fields at once; only a row it does not match has its fields matched
    one by one. Exact: no pattern matches a comma, so the row regex matches
    only text of exactly the header's fields, split where the fields are.
    Separate projections, so each regex runs once per row: Spark does not
    share a subexpression between the branches of a CASE WHEN, and keeps two
    projections apart rather than repeat an expensive expression.
    """
    header = raw_rows.columns[:raw_rows.columns.index(CORRUPT)]
    row_pattern = "^" + ",".join(_body(patterns[c]) if c in patterns else "[^,]*" for c in header) + r"\z"
    parsed = F.col(CORRUPT).isNull()
    rows = raw_rows.select("*", (parsed & F.col("raw").cast("string").rlike(row_pattern)).alias("clean"))
    return rows.select(
        parsed.alias("parsed"),
        "clean",
        *[(F.col("clean") | _text(c).rlike(pattern)).alias(f"{c}_ok") for c, pattern in patterns.items()],
        *[_text(c).alias(c) for c in [*patterns, *keep]],
        CORRUPT,
        "raw",
        "file",
        "block_start",
        "seq",
    )


def _body(pattern: str) -> str:
    """A whole-value pattern (^...\\z) without its anchors, to be part of a row's pattern."""
    assert pattern.startswith("^") and pattern.endswith(r"\z"), pattern
    return pattern[1:-2]


def _typed(column: str) -> Column:
    """A checked decimal column as bigint, null where its check failed."""
    return F.when(F.col(f"{column}_ok"), F.col(column).cast("bigint"))


def riiid_rows(raw_rows: DataFrame, questions: DataFrame) -> DataFrame:
    """Riiid rows, typed and checked in kt.readers.read_riiid's order (the duplicate check comes later)."""
    rows = _parsed(raw_rows, RIIID_PATTERNS, ["content_type_id", "user_answer", "answered_correctly",
                                              "prior_question_had_explanation"])
    rows = rows.join(F.broadcast(questions), _typed("content_id").cast("int") == F.col("q_content_id"), "left")
    content_type, answered = F.col("content_type_id"), F.col("answered_correctly")
    explanation = F.col("prior_question_had_explanation")
    elapsed = F.when(F.col("prior_question_elapsed_time_ok"), F.col("prior_question_elapsed_time").cast("double"))
    ok = {c: F.col(f"{c}_ok") for c in RIIID_PATTERNS}
    return rows.select(
        _typed("user_id").alias("user_id"),
        _split(_typed("user_id")).alias("split"),
        F.lit("train.csv").alias("source"),
        "raw",
        _checks((~F.col("parsed"), "wrong_column_count"), (~ok["row_id"], "bad_row_id")).alias("early_reason"),
        _checks(
            (~ok["user_id"], "bad_user_id"),
            (~ok["timestamp"], "bad_timestamp"),
            (~ok["content_id"], "bad_content_id"),
            (~content_type.isin("0", "1"), "bad_content_type_id"),
            (~ok["task_container_id"], "bad_task_container_id"),
            (content_type == "1", LECTURE),
            (~answered.isin("0", "1"), "bad_answered_correctly"),
            (F.col("q_skill_id").isNull(), "unknown_content_id"),
            (F.col("q_skill_id") == NO_SKILL, "untagged_content"),
        ).alias("late_reason"),
        F.when(F.col("parsed") & ok["row_id"], _typed("row_id")).alias("row_id"),  # only these ids count as "seen"
        "block_start",  # with seq: file order inside the one train.csv
        "seq",
        _typed("timestamp").alias("timestamp"),
        _typed("task_container_id").alias("task_container_id"),
        F.lit(0).alias("file_rank"),
        _typed("content_id").cast("int").alias("content_id"),
        F.col("q_skill_id").alias("skill_id"),
        F.when(answered == "1", 1).when(answered == "0", 0).cast("tinyint").alias("correct"),
        F.when(elapsed < INT32_MAX, F.bround(elapsed)).cast("int").alias("elapsed_ms"),  # round half to even, as pyarrow
        F.when(explanation == "True", True).when(explanation == "False", False).alias("had_explanation"),
    )


def kt1_user_files(raw_rows: DataFrame) -> DataFrame:
    """Rows of per-user files: the user id is in the file name (u<id>.csv; "" when the name is not one)."""
    name = F.regexp_extract("file", r"[^/]*\z", 0)
    return raw_rows.select(*KT1_COLUMNS, CORRUPT, "file", "block_start", "seq",  # kt1_shards' columns, for the union
                           F.regexp_extract(name, KT1_FILE, 1).alias("user_text"),
                           F.lit(None).cast("string").alias("user_field"))


def kt1_shards(raw_rows: DataFrame) -> DataFrame:
    """Rows of consolidated shards: the user id is their first column (also part of a quarantined row's text)."""
    return raw_rows.select(*KT1_COLUMNS, CORRUPT, "file", "block_start", "seq",
                           _text("user_id").alias("user_text"), _text("user_id").alias("user_field"))


def kt1_rows(raw_rows: DataFrame, questions: DataFrame) -> DataFrame:
    """KT1 rows (from kt1_user_files / kt1_shards), typed and checked in kt.readers.read_kt1's order."""
    name = F.regexp_extract("file", r"[^/]*\z", 0)
    user_ok = F.col("user_text").rlike(INT)
    timestamp, timestamp_ok = _int("timestamp")
    question = _text("question_id")
    content_ok = question.rlike(KT1_QUESTION)
    content_id = F.when(content_ok, F.substring(question, 2, 9).cast("int"))
    container, container_ok = _int("solving_id")
    answer = _text("user_answer")
    choice = F.when(answer == "a", 0).when(answer == "b", 1).when(answer == "c", 2).when(answer == "d", 3).otherwise(-1)
    elapsed, _ = _int("elapsed_time")
    parsed = F.col(CORRUPT).isNull()
    user_id = F.when(user_ok, F.col("user_text").cast("bigint"))
    raw = F.when(F.col(CORRUPT).isNull(), F.concat_ws(",", "user_field", *[_text(c) for c in KT1_COLUMNS]))
    early = _checks((~parsed, "wrong_column_count"))
    late = _checks(
        (~user_ok, "bad_user_id"),
        (~timestamp_ok, "bad_timestamp"),
        (~content_ok, "bad_content_id"),
        (~container_ok, "bad_task_container_id"),
        (choice < 0, "bad_user_answer"),
        (F.col("q_skill_id").isNull(), "unknown_content_id"),
        (F.col("q_skill_id") == NO_SKILL, "untagged_content"),
    )
    rejected = F.coalesce(early, late).isNotNull()  # final here: KT1 has no duplicate check
    rows = raw_rows.join(F.broadcast(questions), content_id == F.col("q_content_id"), "left")
    return rows.select(
        user_id.alias("user_id"),
        _split(user_id).alias("split"),
        F.when(rejected, F.concat(F.lit("KT1/"), name)).alias("source"),  # kept only where a quarantine row needs it
        F.when(rejected, raw.otherwise(F.col(CORRUPT))).alias("raw"),  # concat_ws skips a null user_field
        early.alias("early_reason"),
        late.alias("late_reason"),
        parsed.alias("parsed"),
        "file",
        "block_start",
        "seq",
        timestamp.alias("timestamp"),
        container.alias("task_container_id"),
        content_id.alias("content_id"),
        F.col("q_skill_id").alias("skill_id"),
        F.when(choice >= 0, (choice == F.col("q_answer")).cast("tinyint")).alias("correct"),
        F.when(elapsed < INT32_MAX, elapsed).cast("int").alias("elapsed_ms"),
        F.lit(None).cast("boolean").alias("had_explanation"),
    )


def kt1_row_ids(rows: DataFrame) -> DataFrame:
    """KT1's row_id: position among the parsed rows of its file; file_rank orders a user's files by path.

    One window over each user's parsed rows in file order (the data is already
    partitioned by user_id, so no shuffle): row_id = position - position of the
    file's first row, and that first position ranks the user's files by path.
    """
    in_user = Window.partitionBy("user_id", "parsed").orderBy("file", "block_start", "seq")
    in_file = Window.partitionBy("user_id", "parsed", "file")
    position = F.row_number().over(in_user)
    rows = rows.withColumn("position", position)
    first = F.min("position").over(in_file)
    return rows.select(
        "*", (F.col("position") - first).cast("bigint").alias("row_id"), first.alias("file_rank")
    ).drop("position", "parsed", "block_start", "seq")


def seen_twice(rows: DataFrame) -> DataFrame:
    """Riiid row ids seen more than once (few), with the file position of their first row.

    Aggregating every id costs a shuffle of all of them; instead ids are first
    grouped 64 to a group (id >> 6) with their count and the OR of their bits
    (1 << id % 64): a group whose count exceeds its number of set bits holds a
    duplicate. Only the rows of such groups (none in clean data) are then
    aggregated by id. Exact, and ~1/64 of the ids cross the first shuffle.
    """
    seen = rows.where(F.col("row_id").isNotNull()).select(
        "row_id", F.struct("block_start", "seq").alias("pos"), F.shiftright("row_id", 6).alias("group"))
    crowded = (
        seen.groupBy("group")
        .agg(F.count(F.lit(1)).alias("ids"), F.expr("bit_or(shiftleft(1L, cast(row_id & 63 as int)))").alias("bits"))
        .where(F.col("ids") > F.bit_count("bits"))
    )
    return (
        seen.join(F.broadcast(crowded.select("group")), "group", "left_semi")
        .groupBy("row_id")
        .agg(F.count(F.lit(1)).alias("times"), F.min("pos").alias("first_pos"))
        .where(F.col("times") > 1)
        .drop("times")
    )


def classify(rows: DataFrame, duplicates: DataFrame | None) -> DataFrame:
    """Every row with its final reason: null (kept), LECTURE, or a quarantine reason.

    ``duplicates`` (Riiid) is small and joined back by broadcast, so the rows
    keep their user_id partitioning; a row whose id was seen before in file
    order is a duplicate.
    """
    duplicate = F.lit(False)
    if duplicates is not None:
        rows = rows.join(F.broadcast(duplicates), "row_id", "left")
        duplicate = F.col("first_pos").isNotNull() & (F.struct("block_start", "seq") != F.col("first_pos"))
    reason = F.coalesce(F.col("early_reason"), F.when(duplicate, F.lit("duplicate_row_id")), F.col("late_reason"))
    return rows.withColumn("reason", reason)


def sequences(kept: DataFrame, split: str) -> DataFrame:
    """One row per user of a split: lists sorted by (timestamp, task_container_id, row_id, file)."""
    answer = F.struct("timestamp", "task_container_id", "row_id", "file_rank", "content_id", "skill_id", "correct",
                      "elapsed_ms", "had_explanation")
    users = kept.where(F.col("split") == split).groupBy("user_id").agg(F.sort_array(F.collect_list(answer)).alias("a"))
    return users.select(
        "user_id",
        F.lit(split).alias("split"),
        F.size("a").alias("n"),
        *[F.col(f"a.{c}").alias(c) for c in ("content_id", "skill_id", "correct", "timestamp", "elapsed_ms",
                                               "had_explanation")],  # each field of the structs, as a list
    )


def list_files(uri: str) -> dict[str, int]:
    """Files below a prefix (or the file itself) with their sizes: kt.lake.list_files plus sizes, in one listing."""
    fs, path = lake.filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return {uri: info.size}
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    prefix = "s3://" if lake.is_s3(uri) else ""
    return {f"{prefix}{i.path}": i.size for i in sorted(infos, key=lambda i: i.path) if i.type == pafs.FileType.File}


def _header(files: list[str]) -> list[str]:
    """Column names: the first non-blank line of the first file that has one (as the CSV readers take it)."""
    for uri in files:
        with lake.open_read(uri) as f:
            for line in io.TextIOWrapper(f, encoding="utf-8", errors="replace", newline=""):
                if line.strip():
                    return next(csv.reader([line]))
    return []


def _write(df: DataFrame, uri: str) -> None:
    options = dict(WRITE_OPTIONS, **({} if lake.is_s3(uri) else LOCAL_WRITE_OPTIONS))
    df.write.options(**options).mode("overwrite").parquet(uri)


def _spark_can_read(spark: SparkSession, uri: str) -> bool:
    """Glue reads s3:// itself; local Spark here has no S3 connector."""
    return not (lake.is_s3(uri) and spark.sparkContext.master.startswith("local"))


def run(
    raw: str,
    processed: str,
    fmt: str | None = None,
    skill_mappings: str | None = None,
    spark: SparkSession | None = None,
) -> dict:
    """Run the ETL on Spark from a raw prefix to a processed prefix; return the manifest (as kt.etl.run_etl)."""
    started = time.monotonic()
    own_session = spark is None and SparkSession.getActiveSession() is None
    spark = spark or SparkSession.getActiveSession() or local_session()
    raw = lake.current(raw)  # the raw dataset's current version (its root in a lake from before versions)
    fmt = fmt or ("riiid" if lake.exists(lake.join(raw, "train.csv")) else "kt1")
    paths = raw_paths(raw, fmt)
    if not lake.exists(paths["questions"]):
        raise FileNotFoundError(f"no questions file at {paths['questions']}")
    skill_mappings = skill_mappings or lake.join(raw, "skill_mappings.json")
    skill_topics = load_skill_topics(skill_mappings)
    questions = read_kt1_questions(paths["questions"]) if fmt == "kt1" else read_riiid_questions(paths["questions"])
    interactions = paths["interactions"]
    if fmt == "riiid":
        files = list_files(interactions) if lake.exists(interactions) else {}
    else:
        files = list_files(interactions)
    inputs = [*files, paths["questions"], *([skill_mappings] if lake.exists(skill_mappings) else [])]
    lake.delete(processed)

    with tempfile.TemporaryDirectory(prefix="kt-spark-etl-") as tmp, ThreadPoolExecutor(1) as background:
        digests = background.submit(lake.checksums, inputs)  # on the driver, while Spark works
        csv_files = {f: size for f, size in files.items() if f.endswith(".csv")}
        if csv_files and not _spark_can_read(spark, interactions):
            interactions = lake.stage(interactions, os.path.join(tmp, "raw", "KT1" if fmt == "kt1" else ""))
            csv_files = {f: size for f, size in list_files(interactions).items() if f.endswith(".csv")}
        out = processed if _spark_can_read(spark, processed) else os.path.join(tmp, "processed")
        counts = _transform(spark, fmt, interactions, csv_files, questions, skill_topics, out)
        if out != processed:
            lake.publish(out, processed)
        inputs_checked = digests.result()

    tagged = questions.skill_id[questions.skill_id >= 0]
    used_skills = {int(s) for s in tagged}
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "engine": "spark",
        "format": fmt,
        "rows_in": counts["rows_in"],
        "rows_out": counts["rows_out"],
        "lectures": counts["lectures"],
        "quarantined": counts["quarantined"],
        "quarantined_by_reason": counts["quarantined_by_reason"],
        **questions_manifest(questions),
        "users": sum(counts["users_by_split"].values()),
        "users_by_split": counts["users_by_split"],
        "rows_by_split": counts["rows_by_split"],
        "skills": len(used_skills),
        "questions": len(tagged),
        "unmapped_skills": sum(1 for s in used_skills if topic_of(s, skill_topics) == OTHER_TOPIC),
        "inputs": inputs_checked,
        "buckets": counts["files"],  # sequences part files (the reference: its temporary user buckets)
        "duration_s": round(time.monotonic() - started, 3),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if manifest["rows_in"] != manifest["rows_out"] + manifest["lectures"] + manifest["quarantined"]:
        raise AssertionError(f"row accounting broken: {manifest}")
    lake.write_text(lake.join(processed, "_manifest.json"), json.dumps(manifest, indent=1))
    log.info("spark etl done: %s rows in, %s out, %s lectures, %s quarantined", manifest["rows_in"],
             manifest["rows_out"], manifest["lectures"], manifest["quarantined"])
    if own_session:
        spark.stop()
    return manifest


def _transform(
    spark: SparkSession,
    fmt: str,
    interactions: str,
    csv_files: dict[str, int],
    questions: Questions,
    skill_topics: dict[str, str],
    out: str,
) -> dict:
    """The Spark part: read, check, group, write; returns the counts of the manifest."""
    cores = spark.sparkContext.defaultParallelism
    # At least two input splits per core, and a multiple of the cores for the user shuffle: no core idles in a last wave.
    conf = dict(SESSION_CONF, **{"spark.sql.files.minPartitionNum": str(2 * cores)})
    partitions = cores * max(2, math.ceil(sum(csv_files.values()) / SHUFFLE_BYTES / cores))
    with _session_conf(spark, conf):
        write_skills(out, skills_table(questions, skill_topics))  # small: written by the driver, as the reference
        rows = _checked_rows(spark, fmt, interactions, csv_files, questions)
        rows = rows.repartition(partitions, "user_id")  # the one shuffle of the rows
        if fmt == "kt1":
            rows = kt1_row_ids(rows)
        rows = rows.persist()
        duplicates = seen_twice(rows).persist() if fmt == "riiid" else None
        try:
            classified = classify(rows, duplicates)
            by_reason = {r["reason"]: r["count"] for r in classified.groupBy("reason").count().collect()}
            text = F.decode(F.col("raw").cast("binary"), "UTF-8")  # U+FFFD for bytes that are not UTF-8 (read_lines)
            quarantined = classified.where(F.col("reason").isin(*QUARANTINE_REASONS)).select(
                "source", "reason", text.alias("raw"))
            if questions.quarantine.num_rows:  # the questions file's rejects, read on the driver (a few rows)
                quarantined = quarantined.unionByName(
                    spark.createDataFrame(questions.quarantine.to_pylist(), spark_schema(QUARANTINE_SCHEMA)))
            _write(with_schema(quarantined, QUARANTINE_SCHEMA).repartition(1), lake.join(out, "_quarantine"))
            kept = classified.where(F.col("reason").isNull())
            for split in SPLITS:
                share = SPLIT_SHARE[split] * sum(csv_files.values()) / OUTPUT_FILE_BYTES
                files = min(partitions, max(cores, math.ceil(share)))  # a file per core at least: parallel writes
                table = with_schema(sequences(kept, split), SEQUENCES_SCHEMA)
                # coalesce, not a second shuffle: the users stay hash-partitioned, each file sorted by user_id
                _write(table.coalesce(files).sortWithinPartitions("user_id"),
                       lake.join(out, "sequences.parquet", f"split={split}"))
        finally:
            rows.unpersist()
            if duplicates is not None:
                duplicates.unpersist()
        # What was written, read back in one job (the split column is in the files, not only in the paths).
        written = spark.read.option("recursiveFileLookup", True).parquet(lake.join(out, "sequences.parquet"))
        by_split = {r["split"]: r for r in written.groupBy("split").agg(F.count(F.lit(1)).alias("users"),
                                                                        F.sum("n").alias("rows")).collect()}
        n_files = len(written.inputFiles())
    reasons = {r: by_reason[r] for r in QUARANTINE_REASONS if by_reason.get(r)}
    rows_by_split = {s: int(by_split[s]["rows"]) if s in by_split else 0 for s in SPLITS}
    return {
        "rows_in": sum(by_reason.values()),
        "rows_out": sum(rows_by_split.values()),
        "lectures": by_reason.get(LECTURE, 0),
        "quarantined": sum(reasons.values()),
        "quarantined_by_reason": reasons,
        "users_by_split": {s: int(by_split[s]["users"]) if s in by_split else 0 for s in SPLITS},
        "rows_by_split": rows_by_split,
        "files": n_files,
    }


def _checked_rows(spark: SparkSession, fmt: str, interactions: str, csv_files: dict[str, int],
                  questions: Questions) -> DataFrame:
    """The interactions read and checked (before the duplicate check), one row per input row."""
    lookup = questions_frame(spark, questions)
    if fmt == "riiid":
        return riiid_rows(_read_checked_header(spark, list(csv_files), RIIID_COLUMNS, with_file=False), lookup)
    is_shard = {f: re.match(KT1_SHARD_FILE, f.rsplit("/", 1)[-1]) is not None for f in csv_files}
    shards = [f for f in csv_files if is_shard[f]]
    user_files = [f for f in csv_files if not is_shard[f]]
    parts = []
    if user_files or not shards:
        # One read over the directory, never a read per file; next to shards (their header differs), the few
        # user files left are named one by one.
        directory = None if shards else interactions
        parts.append(kt1_user_files(_read_checked_header(spark, user_files, KT1_COLUMNS, directory=directory)))
    if shards:
        parts.append(kt1_shards(_read_checked_header(spark, shards, KT1_SHARD_COLUMNS)))
    return kt1_rows(functools.reduce(DataFrame.union, parts), lookup)


def _read_checked_header(spark: SparkSession, files: list[str], columns: tuple[str, ...], with_file: bool = True,
                         directory: str | None = None) -> DataFrame:
    """read_csv of some files (or of a whole directory) after checking their header has the format's columns."""
    header = _header(files) or list(columns)
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"{files[0]}: the CSV header has no column {missing}")
    if not files:
        strings = T.StructType([T.StructField(c, T.StringType()) for c in [*header, CORRUPT, "raw", "file"]])
        return driver_table(spark, {c: [] for c in strings.fieldNames()}, strings).select(
            "*", F.lit(0).cast("bigint").alias("block_start"), F.lit(0).cast("bigint").alias("seq"))
    paths = [p if lake.is_s3(p) else os.path.abspath(p) for p in ([directory] if directory else files)]
    if len(files) == 1:  # Riiid's train.csv: the fast reader, whose header rule needs a single file
        return read_lines(spark, paths[0], header, with_file=with_file)
    return read_csv(spark, paths, header, with_file=with_file)


@contextmanager
def _session_conf(spark: SparkSession, conf: dict[str, str]) -> Iterator[None]:
    """Set SQL settings for the run; put the caller's values back after."""
    previous = {key: spark.conf.get(key, None) for key in conf}
    for key, value in conf.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
