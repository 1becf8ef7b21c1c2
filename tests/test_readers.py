"""Both EdNet readers on crafted rows: every quarantine reason, lectures, ties, bad bytes."""

from __future__ import annotations

import logging
import re
import tracemalloc

import numpy as np
import pytest

import questions_corpus
from kt import lake
from kt.readers import (
    NO_SKILL,
    UNKNOWN,
    Questions,
    QuestionsFileError,
    read_kt1,
    read_kt1_questions,
    read_riiid,
    read_riiid_questions,
)
from kt.schema import QUARANTINE_REASONS, QUESTION_QUARANTINE_REASONS, RIIID_COLUMNS
from questions_corpus import INT32_MAX

QUESTIONS = "question_id,bundle_id,correct_answer,part,tags\n1,1,0,1,5 7\n2,2,1,2,6\n3,3,2,1,\n"
HEADER = ",".join(RIIID_COLUMNS) + "\n"
GOOD = "0,100,11,1,0,0,0,1,,\n"


def _riiid(tmp_path, body: bytes | str):
    lake.write_text(str(tmp_path / "questions.csv"), QUESTIONS)
    data = body if isinstance(body, bytes) else body.encode()
    lake.write_bytes(str(tmp_path / "train.csv"), HEADER.encode() + data)
    questions = read_riiid_questions(str(tmp_path / "questions.csv"))
    batches = list(read_riiid(str(tmp_path / "train.csv"), questions))
    return batches


def _reasons(batches) -> list[str]:
    return [r for b in batches for r in b.quarantine["reason"].to_pylist()]


@pytest.mark.parametrize(
    "row,reason",
    [
        ("0,100,11\n", "wrong_column_count"),
        ("0,100,11,1,0,0,0,1,,,extra\n", "wrong_column_count"),
        ("x,100,11,1,0,0,0,1,,\n", "bad_row_id"),
        ("0,100,abc,1,0,0,0,1,,\n", "bad_user_id"),
        ("0,yesterday,11,1,0,0,0,1,,\n", "bad_timestamp"),
        ("0,100,11,q1,0,0,0,1,,\n", "bad_content_id"),
        ("0,100,11,1,7,0,0,1,,\n", "bad_content_type_id"),
        ("0,100,11,1,0,t,0,1,,\n", "bad_task_container_id"),
        ("0,100,11,1,0,0,0,2,,\n", "bad_answered_correctly"),
        ("0,100,11,1,0,0,0,-1,,\n", "bad_answered_correctly"),
        ("0,100,11,99,0,0,0,1,,\n", "unknown_content_id"),
        ("0,100,11,3,0,0,0,1,,\n", "untagged_content"),
    ],
)
def test_each_riiid_quarantine_reason(tmp_path, row, reason):
    batches = _riiid(tmp_path, row)
    assert _reasons(batches) == [reason]
    assert sum(b.rows_in for b in batches) == 1
    assert sum(b.interactions.num_rows for b in batches) == 0


def test_duplicate_row_id_keeps_the_first(tmp_path):
    batches = _riiid(tmp_path, GOOD + "0,200,11,2,0,1,1,1,,\n")
    assert _reasons(batches) == ["duplicate_row_id"]
    assert batches[0].interactions["timestamp"].to_pylist() == [100]


def test_every_reason_is_tested():
    tested = {"wrong_column_count", "bad_row_id", "duplicate_row_id", "bad_user_id", "bad_timestamp", "bad_content_id",
              "bad_content_type_id", "bad_task_container_id", "bad_answered_correctly", "unknown_content_id",
              "untagged_content", "bad_user_answer"}
    assert tested == set(QUARANTINE_REASONS)


def test_lectures_are_counted_not_quarantined(tmp_path):
    batches = _riiid(tmp_path, GOOD + "1,150,11,9999,1,1,-1,-1,,\n")
    assert sum(b.lectures for b in batches) == 1
    assert _reasons(batches) == []
    assert sum(b.interactions.num_rows for b in batches) == 1


def test_values_are_normalized(tmp_path):
    batches = _riiid(tmp_path, "5,100,11,2,0,3,1,0,38000.0,True\n6,101,11,1,0,4,0,1,,False\n")
    rows = batches[0].interactions.to_pylist()
    assert rows[0] == {"user_id": 11, "timestamp": 100, "task_container_id": 3, "row_id": 5, "content_id": 2,
                       "correct": 0, "elapsed_ms": 38000, "had_explanation": True}
    assert rows[1]["elapsed_ms"] is None and rows[1]["had_explanation"] is False


def test_non_utf8_bytes_are_quarantined_readably(tmp_path):
    batches = _riiid(tmp_path, GOOD.encode() + b"1,100,\xff\xfe,1,0,0,0,1,,\n")
    assert _reasons(batches) == ["bad_user_id"]
    assert "\ufffd" in batches[0].quarantine["raw"][0].as_py()


def test_empty_and_header_only_files(tmp_path):
    assert _riiid(tmp_path, "") == []
    lake.write_bytes(str(tmp_path / "train.csv"), b"")
    assert list(read_riiid(str(tmp_path / "train.csv"), read_riiid_questions(str(tmp_path / "questions.csv")))) == []


def test_many_blocks_stream(tmp_path, monkeypatch):
    import kt.readers

    monkeypatch.setattr(kt.readers, "BLOCK_SIZE", 4096)
    body = "".join(f"{i},{i},11,1,0,{i},0,1,,\n" for i in range(5000))
    batches = _riiid(tmp_path, body)
    assert len(batches) > 5
    assert sum(b.interactions.num_rows for b in batches) == 5000


KT1_QUESTIONS = (
    "question_id,bundle_id,explanation_id,correct_answer,part,tags,deployed_at\n"
    "q1,b1,e1,b,1,5;7,0\nq2,b2,e2,a,2,6,0\nq3,b3,e3,c,1,,0\n"
)


def test_kt1_reader_and_its_reasons(tmp_path):
    root = tmp_path / "raw"
    lake.write_text(str(root / "contents" / "questions.csv"), KT1_QUESTIONS)
    header = "timestamp,solving_id,question_id,user_answer,elapsed_time\n"
    lake.write_text(str(root / "KT1" / "u42.csv"), header + "\n".join([
        "1000,1,q1,b,5000",        # correct
        "1000,1,q2,b,5000",        # wrong, tie on timestamp
        "later,2,q1,b,100",        # bad_timestamp
        "1002,2,x1,b,100",         # bad_content_id
        "1003,s,q1,b,100",         # bad_task_container_id
        "1004,3,q1,e,100",         # bad_user_answer
        "1005,3,q1,,100",          # bad_user_answer (empty, as in real KT1)
        "1006,4,q99,a,100",        # unknown_content_id
        "1007,4,q3,c,100",         # untagged_content
        "1008,5,q1",               # wrong_column_count
    ]) + "\n")
    lake.write_text(str(root / "KT1" / "ux.csv"), header + "1,1,q1,b,1\n")  # bad_user_id (file name)
    questions = read_kt1_questions(str(root / "contents" / "questions.csv"))
    batches = list(read_kt1(str(root / "KT1"), questions))
    rows = [r for b in batches for r in b.interactions.to_pylist()]
    assert [(r["user_id"], r["content_id"], r["correct"]) for r in rows] == [(42, 1, 1), (42, 2, 0)]
    assert sorted(_reasons(batches)) == sorted([
        "bad_timestamp", "bad_content_id", "bad_task_container_id", "bad_user_answer", "bad_user_answer",
        "unknown_content_id", "untagged_content", "wrong_column_count", "bad_user_id",
    ])
    assert sum(b.rows_in for b in batches) == 11


# The questions file: validated like the interaction rows


def _kept(questions) -> dict[int, tuple]:
    return {int(c): (int(s), t, int(p), int(a)) for c, s, t, p, a in zip(
        questions.content_id, questions.skill_id, questions.tags, questions.part, questions.correct_answer)}


@pytest.mark.parametrize("fmt", ["riiid", "kt1"])
def test_hostile_questions_rows_are_quarantined_each_with_its_reason(tmp_path, fmt, caplog):
    path = str(tmp_path / "questions.csv")
    lake.write_text(path, questions_corpus.riiid_questions() if fmt == "riiid" else questions_corpus.kt1_questions())
    bad = questions_corpus.RIIID_BAD if fmt == "riiid" else questions_corpus.KT1_BAD
    read = read_riiid_questions if fmt == "riiid" else read_kt1_questions
    read(path)  # once untraced: first-use imports and caches are not the reader's memory
    caplog.clear()
    tracemalloc.start()
    with caplog.at_level(logging.WARNING, logger="kt.readers"):
        questions = read(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20, f"{peak} bytes to read a questions file with 2^31 - 1 as its largest id"
    quarantine = questions.quarantine.to_pylist()
    assert [(q["raw"], q["reason"]) for q in quarantine] == [(row, reason) for row, reason in bad]
    assert {q["source"] for q in quarantine} == {"questions.csv" if fmt == "riiid" else "contents/questions.csv"}
    assert [r for r in QUESTION_QUARANTINE_REASONS if r not in {reason for _, reason in bad}] == []
    expected_answer = {"riiid": {1: 0, 2: 1, 3: 2, 4: -1}, "kt1": {1: 1, 2: 0, 3: 2, 4: 3}}[fmt]
    assert _kept(questions) == {
        1: (5, [5, 7], 1, expected_answer[1]), 2: (6, [6], 2, expected_answer[2]),
        3: (NO_SKILL, [], 0, expected_answer[3]), INT32_MAX: (INT32_MAX, [INT32_MAX], 127, 3),
        4: (8, [8], 3, expected_answer[4]),
    }
    # every rejected row is logged with the file, its line and the column at fault
    first_bad_line = 4  # header, then two good rows
    assert f"{path}, line {first_bad_line}, column 'question_id': bad_question_id" in caplog.text
    assert re.search(rf"{re.escape(path)}, line \d+, column 'part': bad_part", caplog.text)
    assert re.search(rf"{re.escape(path)}, line \d+: wrong_column_count", caplog.text)


def test_a_content_id_is_never_wrapped_around_nor_sizes_an_array():
    small = Questions(np.array([0, 5], np.int32), np.array([7, 8], np.int32), [[7], [8]], np.zeros(2, np.int8),
                      np.zeros(2, np.int8))
    huge = Questions(np.array([INT32_MAX, 5], np.int32), np.array([7, 8], np.int32), [[7], [8]],
                     np.zeros(2, np.int8), np.zeros(2, np.int8))
    probe = np.array([-1, 5, 6, 0, INT32_MAX, 2**40, -(2**40)])
    assert small.rows_of(probe).tolist() == [UNKNOWN, 1, UNKNOWN, 0, UNKNOWN, UNKNOWN, UNKNOWN]
    assert huge.rows_of(probe).tolist() == [UNKNOWN, 1, UNKNOWN, UNKNOWN, 0, UNKNOWN, UNKNOWN]
    assert huge.skill_of(probe).tolist() == [UNKNOWN, 8, UNKNOWN, UNKNOWN, 7, UNKNOWN, UNKNOWN]
    with pytest.raises(ValueError, match="non-negative"):
        Questions(np.array([-1], np.int32), np.array([7], np.int32), [[7]], np.zeros(1, np.int8), np.zeros(1, np.int8))
    with pytest.raises(ValueError, match="distinct"):
        Questions(np.array([3, 3], np.int32), np.array([7, 8], np.int32), [[7], [8]], np.zeros(2, np.int8),
                  np.zeros(2, np.int8))


def test_interactions_on_a_quarantined_question_are_unknown_content(tmp_path):
    lake.write_text(str(tmp_path / "questions.csv"), questions_corpus.riiid_questions())
    lake.write_text(str(tmp_path / "train.csv"), HEADER + "0,100,11,1,0,0,0,1,,\n1,100,11,10,0,0,0,1,,\n"
                    "2,100,11,2,0,0,0,1,,\n3,100,11,3,0,0,0,1,,\n")
    questions = read_riiid_questions(str(tmp_path / "questions.csv"))
    batches = list(read_riiid(str(tmp_path / "train.csv"), questions))
    assert _reasons(batches) == ["unknown_content_id", "untagged_content"]  # 10 had a bad answer; 3 has no tag
    assert [r["content_id"] for b in batches for r in b.interactions.to_pylist()] == [1, 2]


@pytest.mark.parametrize(
    "text,message",
    [
        ("", r"line 1: no header"),
        ("question_id,bundle_id,correct_answer,part\n1,1,0,1\n", r"line 1: missing column 'tags'"),
        ("id,bundle,answer,part,tag\n1,1,0,1,5\n", r"line 1: missing column 'question_id', 'correct_answer', 'tags'"),
    ],
)
def test_a_questions_file_without_a_needed_column_stops_with_file_line_and_column(tmp_path, text, message):
    path = str(tmp_path / "questions.csv")
    lake.write_text(path, text)
    with pytest.raises(QuestionsFileError, match=re.escape(path) + ", " + message):
        read_riiid_questions(path)
    with pytest.raises(QuestionsFileError, match=re.escape(path) + ", " + message):
        read_kt1_questions(path)


def test_questions_header_may_be_reordered_or_start_with_a_bom(tmp_path):
    path = str(tmp_path / "questions.csv")
    lake.write_bytes(path, "\ufefftags,part,correct_answer,bundle_id,question_id\n5 6,2,1,1,7\n".encode())
    assert _kept(read_riiid_questions(path)) == {7: (5, [5, 6], 2, 1)}
