"""The reference ETL: accounting, schema, order, splits, quarantine, idempotence."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import questions_corpus
from kt import etl, lake
from kt.data import read_sequences, read_skills
from kt.readers import QuestionsFileError
from kt.schema import KT1_COLUMNS, RIIID_COLUMNS, SEQUENCES_SCHEMA, SKILLS_SCHEMA, split_of
from kt.topics import DEFAULT_SKILL_TOPICS, TOPICS

ROOT = Path(__file__).resolve().parents[1]
# The seed's skill_mappings, copied here so that a change to kt.topics cannot pass unnoticed.
SEED_SKILL_MAPPINGS = {"1": "algebra", "2": "arithmetic", "3": "geometry", "4": "probability", "5": "calculus",
                       "6": "statistics", "7": "trigonometry", "8": "linear_algebra"}


def test_manifest_accounts_for_every_row(sample_lake):
    manifest = json.loads(lake.read_text(f"{sample_lake}/processed/ednet/_manifest.json"))
    assert manifest["rows_in"] == manifest["rows_out"] + manifest["lectures"] + manifest["quarantined"]
    assert manifest["lectures"] > 0
    assert set(manifest["quarantined_by_reason"]) == {
        "duplicate_row_id", "bad_user_id", "bad_timestamp", "bad_content_id", "bad_answered_correctly", "unknown_content_id"
    }
    assert sum(manifest["rows_by_split"].values()) == manifest["rows_out"]
    assert all(i["sha256"] and i["bytes"] > 0 for i in manifest["inputs"])
    quarantine = pq.read_table(f"{sample_lake}/processed/ednet/_quarantine")
    assert manifest["questions_quarantined"] == 0 and manifest["questions_quarantined_by_reason"] == {}
    assert quarantine.num_rows == manifest["quarantined"]


def test_schemas_are_the_contract(sample_lake):
    sequences = read_sequences(f"{sample_lake}/processed/ednet")
    assert sequences.schema.equals(SEQUENCES_SCHEMA)
    assert read_skills(f"{sample_lake}/processed/ednet").schema.equals(SKILLS_SCHEMA)
    for file in lake.list_files(f"{sample_lake}/processed/ednet/sequences.parquet"):
        assert pq.read_schema(file).equals(SEQUENCES_SCHEMA)


def test_split_is_a_function_of_user_id(sample_lake):
    sequences = read_sequences(f"{sample_lake}/processed/ednet")
    for user_id, split in zip(sequences["user_id"].to_pylist(), sequences["split"].to_pylist()):
        assert split == split_of(user_id)
    assert {"train", "valid", "test"} == set(sequences["split"].to_pylist())


def test_split_is_crc32_mod_10():
    import zlib

    assert zlib.crc32(b"12345") == 3421846044  # the standard CRC-32, as Spark's crc32() computes it
    assert split_of(12345) == "train"  # 3421846044 % 10 == 4
    counts = {s: 0 for s in ("train", "valid", "test")}
    for u in range(10_000):
        counts[split_of(u)] += 1
    assert 7_700 < counts["train"] < 8_300 and 800 < counts["valid"] < 1_200


def _write_raw(tmp_path, rows: list[str]) -> str:
    raw = str(tmp_path / "raw")
    lake.write_text(f"{raw}/questions.csv", "question_id,bundle_id,correct_answer,part,tags\n1,1,0,1,5\n2,2,0,1,6\n")
    lake.write_text(f"{raw}/train.csv", ",".join(RIIID_COLUMNS) + "\n" + "".join(r + "\n" for r in rows))
    return raw


def test_order_is_timestamp_then_container_then_row_id(tmp_path):
    raw = _write_raw(tmp_path, [
        "7,200,1,2,0,5,0,1,,",   # later
        "9,100,1,1,0,4,0,0,,",   # tie on timestamp, container 4 -> second
        "8,100,1,2,0,3,0,1,,",   # tie, container 3 -> first
        "5,100,1,1,0,4,0,1,,",   # tie on timestamp and container, row_id 5 < 9
        "6,50,2,1,0,0,0,1,,",    # another user
    ])
    etl.run_etl(raw, str(tmp_path / "processed"), progress=False)
    sequences = read_sequences(str(tmp_path / "processed")).to_pylist()
    user1 = next(s for s in sequences if s["user_id"] == 1)
    assert user1["timestamp"] == [100, 100, 100, 200]
    assert user1["content_id"] == [2, 1, 1, 2]
    assert user1["correct"] == [1, 1, 0, 1]
    assert user1["skill_id"] == [6, 5, 5, 6]
    assert user1["n"] == 4


def test_buckets_do_not_change_the_result(sample_lake, tmp_path):
    out = str(tmp_path / "processed")
    etl.run_etl(f"{sample_lake}/raw/ednet", out, buckets=4, progress=False)
    one = read_sequences(f"{sample_lake}/processed/ednet")
    four = read_sequences(out)
    assert one.equals(four)


def test_rerun_gives_the_same_output(sample_lake, tmp_path):
    out = str(tmp_path / "processed")
    first = etl.run_etl(f"{sample_lake}/raw/ednet", out, progress=False)
    second = etl.run_etl(f"{sample_lake}/raw/ednet", out, progress=False)
    drop = ("duration_s", "created_at")
    assert {k: v for k, v in first.items() if k not in drop} == {k: v for k, v in second.items() if k not in drop}
    assert len(lake.list_files(f"{out}/sequences.parquet")) == len(lake.list_files(f"{sample_lake}/processed/ednet/sequences.parquet"))


def test_kt1_sample_through_the_etl(tmp_path):
    from kt import sample

    root = str(tmp_path)
    sample.generate(root, users=40, skills=8, fmt="kt1", seed=5, tutor_users=0)
    manifest = etl.run_etl(f"{root}/raw/ednet", f"{root}/processed/ednet", progress=False)
    assert manifest["format"] == "kt1"
    assert manifest["users"] == 40
    assert manifest["rows_in"] == manifest["rows_out"] + manifest["quarantined"]
    assert manifest["quarantined_by_reason"] == {"bad_timestamp": 3, "bad_user_answer": 3}


def test_missing_questions_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="questions"):
        etl.run_etl(str(tmp_path / "nothing"), str(tmp_path / "out"), fmt="riiid")


def test_the_default_skill_mappings_are_the_seeds_in_its_order():
    assert list(DEFAULT_SKILL_TOPICS.items()) == list(SEED_SKILL_MAPPINGS.items())
    assert TOPICS == tuple(SEED_SKILL_MAPPINGS.values())  # the spider chart's axes, in the seed's order
    glue = json.loads((ROOT / "glue" / "skill_mappings.json").read_text())
    assert list(glue.items()) == list(SEED_SKILL_MAPPINGS.items())  # what Terraform uploads for the Glue job
    assert etl.load_skill_topics(None) == SEED_SKILL_MAPPINGS


@pytest.mark.parametrize("fmt", ["riiid", "kt1"])
def test_hostile_questions_file_through_the_etl(tmp_path, fmt):
    """Bad question rows land in _quarantine with their reason and are counted apart from the interactions."""
    raw = str(tmp_path / "raw")
    if fmt == "riiid":
        lake.write_text(f"{raw}/questions.csv", questions_corpus.riiid_questions())
        lake.write_text(f"{raw}/train.csv", ",".join(RIIID_COLUMNS) + "\n1,10,7,1,0,1,0,1,,\n2,11,7,10,0,2,0,1,,\n"
                        f"3,12,7,{questions_corpus.INT32_MAX},0,3,0,1,,\n4,13,7,2,0,4,0,0,,\n")
        bad, source = questions_corpus.RIIID_BAD, "questions.csv"
    else:
        lake.write_text(f"{raw}/contents/questions.csv", questions_corpus.kt1_questions())
        lake.write_text(f"{raw}/KT1/u7.csv", ",".join(KT1_COLUMNS) + "\n10,1,q1,b,1\n11,2,q10,a,1\n13,4,q2,b,1\n")
        bad, source = questions_corpus.KT1_BAD, "contents/questions.csv"
    manifest = etl.run_etl(raw, str(tmp_path / "processed"), progress=False)
    expected = {}
    for _, reason in bad:
        expected[reason] = expected.get(reason, 0) + 1
    assert manifest["questions_quarantined_by_reason"] == expected
    assert manifest["questions_quarantined"] == len(bad)
    # question 10 was quarantined: its answer is unknown content; a 10-digit content id is a bad one in train.csv
    by_reason = {"riiid": {"unknown_content_id": 1, "bad_content_id": 1}, "kt1": {"unknown_content_id": 1}}[fmt]
    assert manifest["quarantined_by_reason"] == by_reason
    assert manifest["rows_in"] == manifest["rows_out"] + manifest["lectures"] + manifest["quarantined"]
    quarantine = pq.read_table(str(tmp_path / "processed" / "_quarantine")).to_pylist()
    assert len(quarantine) == manifest["quarantined"] + manifest["questions_quarantined"]
    assert [(q["raw"], q["reason"]) for q in quarantine if q["source"] == source] == bad
    skills = read_skills(str(tmp_path / "processed")).to_pylist()
    assert {s["content_id"]: s["skill_id"] for s in skills} == {1: 5, 2: 6, questions_corpus.INT32_MAX: 2**31 - 1, 4: 8}
    user = read_sequences(str(tmp_path / "processed")).to_pylist()[0]
    assert (user["content_id"], user["skill_id"]) == ([1, 2], [5, 6])


def _ok_processed(tmp_path) -> str:
    """A raw folder and a good processed output from it (what a failed rerun must not destroy)."""
    raw = _write_raw(tmp_path, ["1,100,1,1,0,0,0,1,,"])
    etl.run_etl(raw, str(tmp_path / "processed"), progress=False)
    return raw


def test_a_questions_file_missing_a_column_stops_the_run_and_keeps_the_last_output(tmp_path):
    raw = _ok_processed(tmp_path)
    lake.write_text(f"{raw}/questions.csv", "question_id,bundle_id,correct_answer,tags\n1,1,0,5\n")
    with pytest.raises(QuestionsFileError, match=r"questions\.csv, line 1: missing column 'part'"):
        etl.run_etl(raw, str(tmp_path / "processed"), progress=False)
    assert read_sequences(str(tmp_path / "processed")).num_rows == 1


@pytest.mark.parametrize(
    "text,message",
    [
        ('{"-1": "algebra"}', "key '-1'"),
        ('{"2147483648": "algebra"}', "key '2147483648'"),
        ('{"01": "algebra"}', "key '01'"),  # would never match skill 1
        ('{" 1": "algebra"}', "key ' 1'"),
        ('{"1.0": "algebra"}', "key '1.0'"),
        ('{"x": "algebra"}', "key 'x'"),
        ('{"1": ""}', "key '1': the topic must be a non-empty string"),
        ('{"1": "  "}', "key '1': the topic must be a non-empty string"),
        ('{"1": 5}', "key '1': the topic must be a non-empty string"),
        ('{"1": null}', "key '1': the topic must be a non-empty string"),
        ('{"1": ["algebra"]}', "key '1': the topic must be a non-empty string"),
        ('{"1": "algebra", "1": "geometry"}', "key '1' appears more than once"),
        ('["algebra"]', "must be a JSON object"),
        ('{"1": "algebra",}', "not JSON: .* at line 1 column"),
        ("", "not JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_a_bad_skill_mappings_file_is_an_error_naming_the_file_and_key(tmp_path, text, message):
    raw = _ok_processed(tmp_path)
    path = f"{raw}/skill_mappings.json"
    lake.write_text(path, text)
    with pytest.raises(ValueError, match=re.escape(path) + ": .*" + message):
        etl.run_etl(raw, str(tmp_path / "processed"), progress=False)
    assert read_sequences(str(tmp_path / "processed")).num_rows == 1  # nothing was deleted


def test_skill_mappings_accept_int32_keys_and_any_topic_name(tmp_path):
    path = str(tmp_path / "skill_mappings.json")
    lake.write_text(path, '{"0": "warm-up", "2147483647": "algebra", "5": "calculus"}')
    assert etl.load_skill_topics(path) == {"0": "warm-up", "2147483647": "algebra", "5": "calculus"}
    lake.write_bytes(path, b'{"1": "\xff"}')
    with pytest.raises(ValueError, match="not UTF-8"):
        etl.load_skill_topics(path)
