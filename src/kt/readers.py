"""Streaming readers for both EdNet formats (docs/contracts.md §3.2), with validation.

Each reader yields ``Batch`` objects: the valid interactions of a block of
input in one normalized Arrow table, the rejected rows with their reason, and
the block's counts. Blocks are a few MB, so a 100M-row file never has to fit
in memory. The reasons and their order are ``kt.schema.QUARANTINE_REASONS``;
the first failing check names the reason.

The questions file (small) is read whole by ``read_riiid_questions`` /
``read_kt1_questions``, on the driver for both ETL engines: a missing column
raises ``QuestionsFileError`` (file, line, column); a bad row goes to
``Questions.quarantine`` with a reason of
``kt.schema.QUESTION_QUARANTINE_REASONS`` and a log line naming its file, line
and column.

Normalized interaction columns: user_id int64, timestamp int64,
task_container_id int64, row_id int64, content_id int32, correct int8,
elapsed_ms int32 (nullable), had_explanation bool (nullable).
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from kt import lake
from kt.schema import (
    KT1_COLUMNS,
    KT1_SHARD_COLUMNS,
    KT1_SHARD_FILE,
    QUARANTINE_SCHEMA,
    RIIID_COLUMNS,
)

log = logging.getLogger(__name__)

BLOCK_SIZE = 16 << 20  # bytes of CSV per batch
INT_PATTERN = r"^\d{1,18}$"
FLOAT_PATTERN = r"^\d{1,12}(\.\d*)?$"
NO_SKILL = -2  # content known, but without tags
UNKNOWN = -1  # content not in the questions file
INT32_MAX = 2**31 - 1  # content ids and tags are int32 in skills.parquet and sequences.parquet
INT8_MAX = 2**7 - 1  # part is int8
DECIMAL = re.compile(r"[0-9]{1,10}")
RIIID_QUESTION_ID = re.compile(r"([0-9]+)")
KT1_QUESTION_ID = re.compile(r"q([0-9]+)")
NO_TAG = "-1"  # EdNet's tag of an untagged question
QUESTION_FIELDS = ("question_id", "correct_answer", "part", "tags")  # the columns the ETL reads, both formats
DENSE_IDS = 1 << 22  # content ids below this are looked up by index (32 MB at most); above, by a sorted search
MAX_QUESTION_WARNINGS = 20  # quarantined question rows logged one by one; the rest are counted

INTERACTION_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("timestamp", pa.int64()),
        ("task_container_id", pa.int64()),
        ("row_id", pa.int64()),
        ("content_id", pa.int32()),
        ("correct", pa.int8()),
        ("elapsed_ms", pa.int32()),
        ("had_explanation", pa.bool_()),
    ]
)


@dataclass
class Questions:
    """Question metadata: content id -> skill, plus the rows of skills.parquet and the questions file's rejects."""

    content_id: np.ndarray  # (Q,) int32, distinct and non-negative
    skill_id: np.ndarray  # (Q,) int32, NO_SKILL when untagged
    tags: list[list[int]]
    part: np.ndarray  # (Q,) int8
    correct_answer: np.ndarray  # (Q,) int8, 0..3 (-1: not given, Riiid only)
    quarantine: pa.Table = field(default_factory=QUARANTINE_SCHEMA.empty_table)  # rejected rows of the file
    _dense: np.ndarray = field(init=False, repr=False)  # content id -> row, when the ids are small
    _order: np.ndarray = field(init=False, repr=False)  # rows by ascending content id, when they are not

    def __post_init__(self) -> None:
        ids = np.asarray(self.content_id, dtype=np.int64)
        if len(ids) and int(ids.min()) < 0:
            raise ValueError(f"content ids must be non-negative, got {int(ids.min())}")  # -1 would index from the end
        if len(np.unique(ids)) != len(ids):
            raise ValueError("content ids must be distinct")
        top = int(ids.max()) + 1 if len(ids) else 1
        if top <= max(DENSE_IDS, 4 * len(ids)):
            self._dense = np.full(top, UNKNOWN, dtype=np.int64)
            self._dense[ids] = np.arange(len(ids))
            self._order = np.zeros(0, dtype=np.int64)
        else:  # a huge id must not size an array: a sorted search instead
            self._dense = np.full(0, UNKNOWN, dtype=np.int64)
            self._order = np.argsort(ids, kind="stable")

    def rows_of(self, content_id: np.ndarray) -> np.ndarray:
        """Row index per content id, UNKNOWN for ids not in the file (negative ones included)."""
        content_id = np.asarray(content_id, dtype=np.int64)
        out = np.full(len(content_id), UNKNOWN, dtype=np.int64)
        if len(self._dense):
            inside = (content_id >= 0) & (content_id < len(self._dense))
            out[inside] = self._dense[content_id[inside]]
        elif len(self.content_id):
            ordered = np.asarray(self.content_id, dtype=np.int64)[self._order]
            at = np.minimum(np.searchsorted(ordered, content_id), len(ordered) - 1)
            found = ordered[at] == content_id
            out[found] = self._order[at[found]]
        return out

    def skill_of(self, content_id: np.ndarray) -> np.ndarray:
        """Skill id per content id: NO_SKILL when untagged, UNKNOWN when not in the file."""
        rows = self.rows_of(content_id)
        return np.where(rows >= 0, self.skill_id[np.maximum(rows, 0)], UNKNOWN).astype(np.int32)


class QuestionsFileError(ValueError):
    """A questions file the ETL cannot use at all (no header, a missing column): the run stops."""


@dataclass
class Batch:
    """One block of input: valid interactions, quarantined rows and counts."""

    interactions: pa.Table
    quarantine: pa.Table
    rows_in: int
    lectures: int


def _decimal(text: str, top: int) -> int | None:
    """A decimal integer in 0..top, or None."""
    text = text.strip()
    if not DECIMAL.fullmatch(text):
        return None
    value = int(text)
    return value if value <= top else None


def _parse_tags(text: str, sep: str) -> list[int] | None:
    """Tag ids (int32, non-negative), or None when one is not; EdNet's "-1" (no tag) is not a tag."""
    tags = []
    for token in text.replace(sep, " ").split():
        if token == NO_TAG:
            continue
        tag = _decimal(token, INT32_MAX)
        if tag is None:
            return None
        tags.append(tag)
    return tags


class _QuestionRows:
    """The rows of one questions file, checked field by field: kept rows, quarantined rows, counts."""

    def __init__(self, uri: str, source: str, sep: str):
        self.uri, self.source, self.sep = uri, source, sep
        self.kept: list[tuple[int, list[int], int, int]] = []
        self.seen: set[int] = set()
        self.rejects = _Rejects(source)
        self.logged = 0

    def reject(self, line: int, column: str | None, reason: str, row: list[str]) -> None:
        self.rejects.add(reason, [",".join(row)])
        if self.logged < MAX_QUESTION_WARNINGS:
            where = f", column {column!r}" if column else ""
            log.warning("%s, line %d%s: %s; the row is quarantined", self.uri, line, where, reason)
            self.logged += 1

    def questions(self) -> Questions:
        if self.logged < len(self.rejects.raw):
            log.warning("%s: %d rows quarantined in all (the first %d logged)", self.uri, len(self.rejects.raw),
                        self.logged)
        rows = self.kept
        return Questions(
            content_id=np.array([r[0] for r in rows], dtype=np.int32),
            skill_id=np.array([r[1][0] if r[1] else NO_SKILL for r in rows], dtype=np.int32),
            tags=[r[1] for r in rows],
            part=np.array([r[2] for r in rows], dtype=np.int8),
            correct_answer=np.array([r[3] for r in rows], dtype=np.int8),
            quarantine=self.rejects.drain(),
        )


def _read_questions(uri: str, source: str, sep: str, question_id: re.Pattern[str],
                    correct_answer: dict[str, int]) -> Questions:
    """A questions file of either format: a missing column stops the run; a bad row goes to the quarantine."""
    text = lake.read_bytes(uri).decode("utf-8-sig", errors="replace")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise QuestionsFileError(f"{uri}, line 1: no header; expected the columns {', '.join(QUESTION_FIELDS)}")
    names = [h.strip() for h in header]
    missing = [c for c in QUESTION_FIELDS if c not in names]
    if missing:
        raise QuestionsFileError(f"{uri}, line 1: missing column {', '.join(map(repr, missing))} "
                                 f"(the header is {','.join(header)!r})")
    index = {name: names.index(name) for name in QUESTION_FIELDS}
    out = _QuestionRows(uri, source, sep)
    for row in reader:
        line = reader.line_num
        if not any(field.strip() for field in row):
            continue  # a line of blanks holds no row, as in the interaction files
        if len(row) != len(header):
            out.reject(line, None, "wrong_column_count", row)
            continue
        match = question_id.fullmatch(row[index["question_id"]].strip())
        content = _decimal(match.group(1), INT32_MAX) if match else None
        if content is None:
            out.reject(line, "question_id", "bad_question_id", row)
            continue
        if content in out.seen:
            out.reject(line, "question_id", "duplicate_question_id", row)
            continue
        out.seen.add(content)
        answer_text = row[index["correct_answer"]].strip()
        if answer_text not in correct_answer:
            out.reject(line, "correct_answer", "bad_correct_answer", row)
            continue
        part_text = row[index["part"]].strip()
        part = _decimal(part_text, INT8_MAX) if part_text else 0
        if part is None:
            out.reject(line, "part", "bad_part", row)
            continue
        tags = _parse_tags(row[index["tags"]], sep)
        if tags is None:
            out.reject(line, "tags", "bad_tags", row)
            continue
        out.kept.append((content, tags, part, correct_answer[answer_text]))
    return out.questions()


def read_riiid_questions(uri: str, source: str = "questions.csv") -> Questions:
    """Riiid questions.csv: question_id, bundle_id, correct_answer (0-3), part, tags (space-separated)."""
    answers = {str(i): i for i in range(4)} | {"": -1}  # the Riiid ETL does not use it: it may be empty
    return _read_questions(uri, source, " ", RIIID_QUESTION_ID, answers)


def read_kt1_questions(uri: str, source: str = "contents/questions.csv") -> Questions:
    """EdNet contents/questions.csv: question_id `q123`, correct_answer a-d, tags `;`-separated."""
    return _read_questions(uri, source, ";", KT1_QUESTION_ID, {letter: i for i, letter in enumerate("abcd")})


def _int_or_null(column: pa.Array, pattern: str = INT_PATTERN) -> tuple[pa.Array, np.ndarray]:
    """Parse decimal strings; return int64 values (null where invalid) and the validity mask."""
    ok = pc.fill_null(pc.match_substring_regex(column, pattern), False)
    values = pc.cast(pc.if_else(ok, column, pa.scalar(None, pa.string())), pa.int64())
    return values, np.asarray(ok.to_numpy(zero_copy_only=False), dtype=bool)


def _elapsed_ms(column: pa.Array) -> pa.Array:
    """Riiid's float milliseconds ("38000.0") as int32; empty or invalid -> null."""
    ok = pc.fill_null(pc.match_substring_regex(column, FLOAT_PATTERN), False)
    values = pc.cast(pc.if_else(ok, column, pa.scalar(None, pa.string())), pa.float64())
    in_range = pc.less(values, 2**31 - 1)
    return pc.cast(pc.round(pc.if_else(in_range, values, None)), pa.int32())


def _raw_text(table: pa.Table, mask: np.ndarray) -> list[str]:
    """The rejected rows as comma-joined text, undecodable bytes replaced."""
    picked = table.filter(pa.array(mask))
    columns = [pc.cast(c, pa.binary()).to_pylist() for c in picked.columns]
    return [
        ",".join((v or b"").decode("utf-8", errors="replace") for v in values) for values in zip(*columns)
    ]


class _Rejects:
    """Collects quarantined rows of one block in check order."""

    def __init__(self, source: str):
        self.source = source
        self.reasons: list[str] = []
        self.raw: list[str] = []

    def add(self, reason: str, raw: list[str]) -> None:
        self.reasons.extend([reason] * len(raw))
        self.raw.extend(raw)

    def drain(self) -> pa.Table:
        """The rows collected so far as a quarantine table; start afresh."""
        n = len(self.raw)
        table = pa.table(
            {"source": pa.array([self.source] * n, pa.string()), "reason": pa.array(self.reasons, pa.string()),
             "raw": pa.array(self.raw, pa.string())},
            schema=QUARANTINE_SCHEMA,
        )
        self.reasons, self.raw = [], []
        return table


def _csv_batches(uri: str, columns: tuple[str, ...], rejects: _Rejects) -> Iterator[pa.RecordBatch]:
    """Stream a CSV as all-string batches; rows with the wrong column count go to the quarantine."""

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        if row.text.strip():  # a line of blanks holds no row (Spark's CSV reader skips it too)
            rejects.add("wrong_column_count", [row.text])
        return "skip"

    if lake.size(uri) == 0:
        return
    with lake.open_read(uri) as f:
        try:
            reader = pacsv.open_csv(
                ReplacingUtf8(f),
                read_options=pacsv.ReadOptions(block_size=BLOCK_SIZE, use_threads=False),
                parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid_row),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in columns}, check_utf8=False, include_columns=list(columns)
                ),
            )
        except pa.ArrowInvalid as e:
            if "Empty CSV file" in str(e):
                return
            raise ValueError(f"{uri}: cannot read the CSV header: {e}") from e
        yield from reader


class ReplacingUtf8:
    """A binary stream in which bytes that are not UTF-8 read as U+FFFD, as Spark reads them.

    pyarrow cannot hand a row with such bytes to the invalid-row handler (it fails
    decoding the row's text), so without this a short row with a stray byte would
    stop the whole ETL instead of going to the quarantine.
    """

    def __init__(self, raw) -> None:
        self.raw = raw
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = b""
        self.closed = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.pending) < size:
            chunk = self.raw.read(size if size > 0 else -1)
            self.pending += self.decoder.decode(chunk, final=not chunk).encode("utf-8")
            if not chunk or size < 0:
                break
        if size < 0:
            out, self.pending = self.pending, b""
        else:
            out, self.pending = self.pending[:size], self.pending[size:]
        return out

    def close(self) -> None:
        self.closed = True


class RowIdSet:
    """Row ids seen so far: a growable bitmap for ids below BITMAP_IDS (~100 MB for Riiid's 101M), a set above."""

    BITMAP_IDS = 1 << 28  # an 18-digit id must not size the bitmap

    def __init__(self) -> None:
        self.bits = np.zeros(1 << 20, dtype=bool)
        self.large: set[int] = set()

    def first_seen(self, row_ids: np.ndarray) -> np.ndarray:
        """Mark ids as seen; True where an id appears for the first time (in order)."""
        if len(row_ids) == 0:
            return np.zeros(0, dtype=bool)
        _, first_index = np.unique(row_ids, return_index=True)
        fresh = np.zeros(len(row_ids), dtype=bool)
        fresh[first_index] = True
        small = row_ids < self.BITMAP_IDS
        ids = row_ids[small]
        if len(ids):
            top = int(ids.max())
            if top >= len(self.bits):
                grown = np.zeros(max(top + 1, 2 * len(self.bits)), dtype=bool)
                grown[: len(self.bits)] = self.bits
                self.bits = grown
            fresh[small] &= ~self.bits[ids]
            self.bits[ids] = True
        for i in np.flatnonzero(~small):
            row_id = int(row_ids[i])
            if row_id in self.large:
                fresh[i] = False
            self.large.add(row_id)
        return fresh


def _rejected_only(rejects: _Rejects) -> Batch:
    """A batch of nothing but the rows collected in rejects (the parser's skipped rows): each counts as read."""
    n = len(rejects.raw)
    return Batch(INTERACTION_SCHEMA.empty_table(), rejects.drain(), n, 0)


def _check(table: pa.Table, rejects: _Rejects, keep: np.ndarray, bad: np.ndarray, reason: str) -> None:
    """Quarantine rows still kept that fail a check; update keep in place."""
    hit = keep & bad
    if hit.any():
        rejects.add(reason, _raw_text(table, hit))
        keep &= ~hit


def read_riiid(uri: str, questions: Questions, source: str = "train.csv") -> Iterator[Batch]:
    """Validated interactions of a Riiid train.csv, block by block."""
    seen = RowIdSet()
    rejects = _Rejects(source)
    for batch in _csv_batches(uri, RIIID_COLUMNS, rejects):
        wrong_column_count = len(rejects.raw)  # rows the parser skipped while reading this block
        table = pa.Table.from_batches([batch])
        n = table.num_rows
        keep = np.ones(n, dtype=bool)
        row_id, ok = _int_or_null(table["row_id"].combine_chunks())
        _check(table, rejects, keep, ~ok, "bad_row_id")
        row_id_np = row_id.fill_null(0).to_numpy()
        fresh = np.zeros(n, dtype=bool)
        fresh[keep] = seen.first_seen(row_id_np[keep])
        _check(table, rejects, keep, ~fresh, "duplicate_row_id")
        user_id, ok = _int_or_null(table["user_id"].combine_chunks())
        _check(table, rejects, keep, ~ok, "bad_user_id")
        timestamp, ok = _int_or_null(table["timestamp"].combine_chunks())
        _check(table, rejects, keep, ~ok, "bad_timestamp")
        content_id, ok = _int_or_null(table["content_id"].combine_chunks(), r"^\d{1,9}$")
        _check(table, rejects, keep, ~ok, "bad_content_id")
        content_type = table["content_type_id"].combine_chunks()
        is_lecture = np.asarray(pc.equal(content_type, "1").to_numpy(zero_copy_only=False), dtype=bool)
        is_question = np.asarray(pc.equal(content_type, "0").to_numpy(zero_copy_only=False), dtype=bool)
        _check(table, rejects, keep, ~(is_lecture | is_question), "bad_content_type_id")
        container, ok = _int_or_null(table["task_container_id"].combine_chunks())
        _check(table, rejects, keep, ~ok, "bad_task_container_id")
        lectures = int((keep & is_lecture).sum())
        keep &= ~is_lecture
        answered = table["answered_correctly"].combine_chunks()
        correct = np.asarray(pc.equal(answered, "1").to_numpy(zero_copy_only=False), dtype=bool)
        wrong = np.asarray(pc.equal(answered, "0").to_numpy(zero_copy_only=False), dtype=bool)
        _check(table, rejects, keep, ~(correct | wrong), "bad_answered_correctly")
        content_np = content_id.fill_null(0).to_numpy()
        rows = questions.rows_of(content_np)
        _check(table, rejects, keep, rows == UNKNOWN, "unknown_content_id")
        skill = np.where(rows >= 0, questions.skill_id[np.maximum(rows, 0)], NO_SKILL)
        _check(table, rejects, keep, skill == NO_SKILL, "untagged_content")

        elapsed = _elapsed_ms(table["prior_question_elapsed_time"].combine_chunks())
        explanation = table["prior_question_had_explanation"].combine_chunks()
        had_explanation = pc.if_else(
            pc.equal(explanation, "True"), True, pc.if_else(pc.equal(explanation, "False"), False, None)
        )
        mask = pa.array(keep)
        yield Batch(
            interactions=pa.table(
                {
                    "user_id": user_id.filter(mask),
                    "timestamp": timestamp.filter(mask),
                    "task_container_id": container.filter(mask),
                    "row_id": row_id.filter(mask),
                    "content_id": pc.cast(content_id.filter(mask), pa.int32()),
                    "correct": pa.array(correct[keep].astype(np.int8)),
                    "elapsed_ms": elapsed.filter(mask),
                    "had_explanation": pc.cast(had_explanation, pa.bool_()).filter(mask),
                },
                schema=INTERACTION_SCHEMA,
            ),
            quarantine=rejects.drain(),
            rows_in=n + wrong_column_count,
            lectures=lectures,
        )
    if rejects.raw:  # rows the parser skipped after the last block (or in a file with no good row)
        yield _rejected_only(rejects)


KT1_FILE = re.compile(r"^u(\d{1,18})\.csv$")
KT1_SHARD = re.compile(KT1_SHARD_FILE)
KT1_BATCH_ROWS = 1 << 20


def read_kt1(kt1_dir: str, questions: Questions) -> Iterator[Batch]:
    """Validated interactions of EdNet KT1: per-user files (``u<id>.csv``) and/or consolidated shards.

    KT1 has no row ids or lectures: row_id is the row's position among its
    user's rows in its file, and the bundle (``solving_id``) stands in for
    Riiid's task_container_id. Shards (``part-NNNNN.csv``, written by ``kt
    ingest``) carry the user id in a first column instead of the file name;
    a user's rows keep their order there, so both layouts give the same rows.
    """
    pending: list[Batch] = []
    pending_rows = 0
    root = lake.filesystem(kt1_dir)[1].rstrip("/")  # normalised, as list_files gives the files' paths
    for uri in lake.list_files(kt1_dir):
        name = uri.rsplit("/", 1)[-1]
        below_root = uri.removeprefix("s3://")[len(root):]
        # Like Spark and Hadoop, skip hidden names (_SUCCESS, macOS ._u1.csv, _tmp/ folders) below the root.
        if not name.endswith(".csv") or any(part[:1] in "_." for part in below_root.split("/") if part):
            continue
        if KT1_SHARD.match(name):
            yield from _read_kt1_shard(uri, f"KT1/{name}", questions)
            continue
        batch = _read_kt1_file(uri, f"KT1/{name}", questions)
        pending.append(batch)
        pending_rows += batch.rows_in
        if pending_rows >= KT1_BATCH_ROWS:
            yield _concat(pending)
            pending, pending_rows = [], 0
    if pending:
        yield _concat(pending)


def _concat(batches: list[Batch]) -> Batch:
    return Batch(
        interactions=pa.concat_tables([b.interactions for b in batches]),
        quarantine=pa.concat_tables([b.quarantine for b in batches]),
        rows_in=sum(b.rows_in for b in batches),
        lectures=sum(b.lectures for b in batches),
    )


def _read_kt1_file(uri: str, source: str, questions: Questions) -> Batch:
    """One user's file: the user id is in its name."""
    rejects = _Rejects(source)
    match = KT1_FILE.match(source.rsplit("/", 1)[-1])
    tables = [pa.Table.from_batches([b]) for b in _csv_batches(uri, KT1_COLUMNS, rejects)]
    if not tables:
        return _rejected_only(rejects)
    wrong_column_count = len(rejects.raw)
    table = pa.concat_tables(tables)
    n = table.num_rows
    user_id = pa.array(np.full(n, int(match.group(1)) if match else 0, dtype=np.int64))
    return _kt1_batch(table, rejects, user_id, np.full(n, match is not None), np.arange(n, dtype=np.int64),
                      questions, rows_in=n + wrong_column_count)


def _read_kt1_shard(uri: str, source: str, questions: Questions) -> Iterator[Batch]:
    """A consolidated shard, block by block: the user id is the first column, row_id counts on across blocks."""
    rejects = _Rejects(source)
    rows_so_far: dict[int, int] = {}
    for batch in _csv_batches(uri, KT1_SHARD_COLUMNS, rejects):
        wrong_column_count = len(rejects.raw)
        table = pa.Table.from_batches([batch])
        user_id, user_ok = _int_or_null(table["user_id"].combine_chunks())
        row_id = _positions_in_user(user_id.fill_null(0).to_numpy(), user_ok, rows_so_far)
        yield _kt1_batch(table, rejects, user_id, user_ok, row_id, questions,
                         rows_in=table.num_rows + wrong_column_count)
    if rejects.raw:  # rows the parser skipped after the last block
        yield _rejected_only(rejects)


def _positions_in_user(user_id: np.ndarray, valid: np.ndarray, rows_so_far: dict[int, int]) -> np.ndarray:
    """Each row's position among its user's rows (0 where the id is invalid); rows_so_far carries on."""
    positions = np.zeros(len(user_id), dtype=np.int64)
    ids = user_id[valid]
    if len(ids) == 0:
        return positions
    users, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")  # rows grouped by user, file order kept inside a group
    in_block = np.empty(len(ids), dtype=np.int64)
    in_block[order] = np.arange(len(ids)) - np.repeat(np.cumsum(counts) - counts, counts)
    before = np.array([rows_so_far.get(u, 0) for u in users.tolist()], dtype=np.int64)
    positions[valid] = before[inverse] + in_block
    for u, count in zip(users.tolist(), counts.tolist()):
        rows_so_far[u] = rows_so_far.get(u, 0) + count
    return positions


def _kt1_batch(table: pa.Table, rejects: _Rejects, user_id: pa.Array, user_ok: np.ndarray, row_id: np.ndarray,
               questions: Questions, rows_in: int) -> Batch:
    """Check KT1 rows in the reference order and normalise the kept ones."""
    n = table.num_rows
    keep = np.ones(n, dtype=bool)
    _check(table, rejects, keep, ~user_ok, "bad_user_id")
    timestamp, ok = _int_or_null(table["timestamp"].combine_chunks())
    _check(table, rejects, keep, ~ok, "bad_timestamp")
    content_id, ok = _int_or_null(pc.utf8_replace_slice(table["question_id"].combine_chunks(), 0, 1, ""), r"^\d{1,9}$")
    starts_with_q = np.asarray(pc.starts_with(table["question_id"].combine_chunks(), "q").to_numpy(zero_copy_only=False))
    _check(table, rejects, keep, ~(ok & starts_with_q), "bad_content_id")
    container, ok = _int_or_null(table["solving_id"].combine_chunks())
    _check(table, rejects, keep, ~ok, "bad_task_container_id")
    answer = table["user_answer"].combine_chunks()
    choice = np.full(n, -1, dtype=np.int8)
    for index, letter in enumerate("abcd"):
        choice[np.asarray(pc.equal(answer, letter).to_numpy(zero_copy_only=False), dtype=bool)] = index
    _check(table, rejects, keep, choice < 0, "bad_user_answer")
    rows = questions.rows_of(content_id.fill_null(0).to_numpy())
    _check(table, rejects, keep, rows == UNKNOWN, "unknown_content_id")
    safe_rows = np.maximum(rows, 0)
    _check(table, rejects, keep, (rows >= 0) & (questions.skill_id[safe_rows] == NO_SKILL), "untagged_content")
    mask = pa.array(keep)
    correct = (choice == questions.correct_answer[safe_rows]).astype(np.int8)
    elapsed, _ = _int_or_null(table["elapsed_time"].combine_chunks())
    kept = int(keep.sum())
    return Batch(
        interactions=pa.table(
            {
                "user_id": user_id.filter(mask),
                "timestamp": timestamp.filter(mask),
                "task_container_id": container.filter(mask),
                "row_id": pa.array(row_id[keep]),
                "content_id": pc.cast(content_id.filter(mask), pa.int32()),
                "correct": pa.array(correct[keep]),
                "elapsed_ms": pc.cast(pc.if_else(pc.less(elapsed, 2**31 - 1), elapsed, None), pa.int32()).filter(mask),
                "had_explanation": pa.nulls(kept, pa.bool_()),
            },
            schema=INTERACTION_SCHEMA,
        ),
        quarantine=rejects.drain(),
        rows_in=rows_in,
        lectures=0,
    )
