"""Both EdNet readers on crafted rows: every quarantine reason, lectures, ties, bad bytes."""

from __future__ import annotations

import pytest

from kt import lake
from kt.readers import read_kt1, read_kt1_questions, read_riiid, read_riiid_questions
from kt.schema import QUARANTINE_REASONS, RIIID_COLUMNS

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
