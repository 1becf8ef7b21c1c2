"""The Spark ETL (kt.spark_etl, glue/ednet_preprocessor.py) against the reference ETL, row by row.

Both engines run on the same raw files: the sample lake in both formats, an S3
lake (moto server), and crafted edge cases (timestamp ties, lectures, duplicate
row ids, unknown and untagged content, one-answer users, a 20,000-answer user,
empty and header-only files, non-UTF-8 bytes, wrong column counts, quoting,
several files of one KT1 user, files Spark's listing would hide, KT1 consolidated
into shards next to per-user files). Equal means:
same manifest (but engine, timing and bucket count), same sequences table
(users, splits, every list), same skills, same quarantine multiset. One local
SparkSession serves the whole run.
"""

from __future__ import annotations

import importlib.util
import os
import random
from collections import Counter

import pyarrow.parquet as pq
import pytest

import questions_corpus
from kt import etl, ingest, lake, sample, spark_etl
from kt.aws import free_port
from kt.data import read_sequences, read_skills
from kt.schema import KT1_COLUMNS, QUARANTINE_REASONS, QUARANTINE_SCHEMA, RIIID_COLUMNS, SEQUENCES_SCHEMA, SKILLS_SCHEMA

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST_ONLY_PER_ENGINE = {"engine", "duration_s", "created_at", "buckets"}
RIIID_QUESTIONS = (
    "question_id,bundle_id,correct_answer,part,tags\n"
    "1,1,0,1,5 7\n2,2,1,2,6\n3,3,2,1,\n4,4,3,3,9\n2,2,1,2,8\n"  # 3 untagged; 9 unmapped; id 2 twice: the first wins
)
KT1_QUESTIONS = (
    "question_id,bundle_id,explanation_id,correct_answer,part,tags,deployed_at\n"
    "q1,b1,e1,b,1,5;7,0\nq2,b2,e2,a,2,6,0\nq3,b3,e3,c,1,,0\nq4,b4,e4,d,3,9,0\n"
)


def assert_same_output(reference: str, out: str, ref_manifest: dict, spark_manifest: dict) -> None:
    """Both engines wrote the same rows, the contract's schemas and the same manifest counts."""
    assert spark_manifest["engine"] == "spark"
    assert set(spark_manifest) == set(ref_manifest)
    assert ({k: v for k, v in spark_manifest.items() if k not in MANIFEST_ONLY_PER_ENGINE}
            == {k: v for k, v in ref_manifest.items() if k not in MANIFEST_ONLY_PER_ENGINE})
    assert spark_manifest["rows_in"] == spark_manifest["rows_out"] + spark_manifest["lectures"] + spark_manifest["quarantined"]

    sequences = read_sequences(out)
    assert sequences.schema.equals(SEQUENCES_SCHEMA)
    assert sequences.to_pylist() == read_sequences(reference).to_pylist()
    for file in lake.list_files(lake.join(out, "sequences.parquet")):  # only parquet parts: no _SUCCESS, no .crc
        assert pq.read_schema(file).equals(SEQUENCES_SCHEMA)
    skills = read_skills(out)
    assert skills.schema.equals(SKILLS_SCHEMA)
    assert skills.to_pylist() == read_skills(reference).to_pylist()
    quarantine = pq.read_table(lake.join(out, "_quarantine"))
    assert quarantine.schema.equals(QUARANTINE_SCHEMA)
    assert quarantine.num_rows == spark_manifest["quarantined"] + spark_manifest["questions_quarantined"]
    expected = pq.read_table(lake.join(reference, "_quarantine"))
    assert Counter(map(tuple, (r.values() for r in quarantine.to_pylist()))) == Counter(
        map(tuple, (r.values() for r in expected.to_pylist())))


def both(raw: str, base: str, spark) -> tuple[dict, dict]:
    """Run the reference into base/reference and Spark into base/spark."""
    ref_manifest = etl.run_etl(raw, f"{base}/reference", progress=False)
    spark_manifest = spark_etl.run(raw, f"{base}/spark", spark=spark)
    assert_same_output(f"{base}/reference", f"{base}/spark", ref_manifest, spark_manifest)
    return ref_manifest, spark_manifest


@pytest.fixture(scope="module")
def kt1_lake(tmp_path_factory) -> str:
    """A small KT1-format sample lake with the reference ETL's output."""
    root = str(tmp_path_factory.mktemp("kt1-lake"))
    sample.generate(root, users=60, skills=8, fmt="kt1", seed=5, tutor_users=0)
    etl.run_etl(f"{root}/raw/ednet", f"{root}/processed/ednet", progress=False)
    return root


def _manifest(processed: str) -> dict:
    import json

    return json.loads(lake.read_text(lake.join(processed, "_manifest.json")))


@pytest.mark.slow
def test_riiid_sample_is_identical(sample_lake, spark, tmp_path):
    out = str(tmp_path / "spark")
    manifest = spark_etl.run(f"{sample_lake}/raw/ednet", out, spark=spark)
    reference = f"{sample_lake}/processed/ednet"
    assert_same_output(reference, out, _manifest(reference), manifest)
    assert manifest["lectures"] > 0 and manifest["quarantined"] > 0
    assert manifest == _manifest(out)


@pytest.mark.slow
def test_glue_script_runs_locally_on_kt1(kt1_lake, spark, tmp_path):
    """glue/ednet_preprocessor.py without awsglue: plain PySpark, the same arguments as on Glue."""
    spec = importlib.util.spec_from_file_location("ednet_preprocessor", os.path.join(REPO, "glue", "ednet_preprocessor.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = str(tmp_path / "spark")
    manifest = script.main(["--JOB_NAME", "ednet-preprocessor", "--raw", f"{kt1_lake}/raw/ednet", "--processed", out,
                            "--format", "kt1", "--skill-mappings", f"{kt1_lake}/raw/ednet/skill_mappings.json"])
    reference = f"{kt1_lake}/processed/ednet"
    version = lake.current(out)  # --processed is the dataset root: the job wrote a version and pointed at it
    assert version == lake.join(out, manifest["pointer"]["version"]) and manifest["pruned"] == []
    manifest = {k: v for k, v in manifest.items() if k not in ("pointer", "pruned")}
    assert_same_output(reference, version, _manifest(reference), manifest)
    assert manifest["format"] == "kt1" and manifest["users"] == 60
    assert not spark.sparkContext._jsc.sc().isStopped()  # the script reuses a running session and leaves it running


@pytest.fixture
def s3_lake(monkeypatch):
    """An empty bucket on a moto server, reached by pyarrow through AWS_ENDPOINT_URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3").create_bucket(Bucket="lake")
    yield "s3://lake"
    server.stop()


@pytest.mark.slow
def test_s3_lake_is_staged_and_published(kt1_lake, spark, s3_lake):
    """Local Spark cannot read s3://: inputs are staged, outputs published; the rows do not change."""
    local_raw = f"{kt1_lake}/raw/ednet"
    for file in lake.list_files(local_raw):
        lake.write_bytes(f"{s3_lake}/raw/ednet/{os.path.relpath(file, local_raw)}", lake.read_bytes(file))
    manifest = spark_etl.run(f"{s3_lake}/raw/ednet", f"{s3_lake}/processed/ednet", spark=spark)
    reference = _manifest(f"{kt1_lake}/processed/ednet")
    assert [(i["bytes"], i["sha256"]) for i in manifest["inputs"]] == [(i["bytes"], i["sha256"]) for i in reference["inputs"]]
    assert all(i["path"].startswith(f"{s3_lake}/raw/ednet/") for i in manifest["inputs"])
    for key in ("rows_in", "rows_out", "lectures", "quarantined_by_reason", "users_by_split", "rows_by_split", "skills"):
        assert manifest[key] == reference[key]
    assert read_sequences(f"{s3_lake}/processed/ednet").to_pylist() == read_sequences(f"{kt1_lake}/processed/ednet").to_pylist()
    assert _manifest(f"{s3_lake}/processed/ednet")["engine"] == "spark"


def _riiid_rows(rng: random.Random) -> list[bytes]:
    """Crafted Riiid rows: one per rule of kt.readers.read_riiid, plus ties and a 20,000-answer user."""
    rows = [
        # user 1: ties on timestamp, then on task_container_id; an earlier answer last in the file
        "10,1000,1,1,0,5,0,1,,", "11,1000,1,2,0,4,1,0,38000.0,True", "12,1000,1,1,0,4,0,1,2.5,False",
        "13,900,1,1,0,3,0,1,3.5,",
        "14,950,1,9999,1,3,-1,-1,,",  # lecture: counted, even with an unknown content id
        "15,960,1,9999,1,x,-1,-1,,",  # lecture with a bad container: quarantined first
        "119999,50,1,4,0,0,0,1,,",  # this id comes back inside the big user: the later row is the duplicate
        "10,5000,2,1,0,1,0,1,,",  # duplicate_row_id
        "16,100,abc,1,0,0,0,1,,", "16,200,3,1,0,0,0,1,,",  # an id is seen even when its row is quarantined
        "x7,100,3,1,0,0,0,1,,", "0017,110,3,1,0,0,0,1,,", "17,120,3,1,0,0,0,1,,",  # bad id; 0017 == 17
        "18,130,3,99,0,0,0,1,,", "19,140,3,3,0,0,0,1,,", "20,150,3,4,0,0,0,1,,", "21,160,3,2,0,0,1,0,,",
        "22,170,4,1,0,0,0,1,,",  # a user with one answer
        "23,180,5,1,0,0,0,2,,", "24,yesterday,5,1,0,0,0,1,,", "25,190,5,q1,0,0,0,1,,", "26,200,5,1,7,0,0,1,,",
        "27,210,5,1,0,0,0,1,1.,true", "28,220,5,1,0,0,0,1,2147483647.0,", "29,230,5,1,0,0,0,1,1234567890123.0,",
        "30,240,5,1,0,0,0,1,-5,", "301,241,5,1,0,0,0,0,,",
        '"31","250","6","1","0","0","0","1","",""', '32,260,6,"1,2",0,0,0,1,,',  # quoted values
        "33,270,007,1,0,0,0,1,,", "34,280,7,1,0,0,0,1,,",  # 007 is user 7
        "37,310,8", "38,320,8,1,0,0,0,1,,,extra", '"39,330",8,1', "",  # wrong column counts; an empty line
        "40,340,9,1,0,0,0,1,,", "41,,9,1,0,0,0,1,,", "42,350,9,,0,0,0,1,,",
    ]
    data = [r.encode() for r in rows]
    data += [b"35,290,8,1,0,0,\xff,1,,\xfe", b"36,300,\xff\xfe,1,0,0,0,1,,", b"43,310,8,2,0,\xe2\x82,0,1,,"]
    big = [f"{100_000 + i},{i // 3},1000,{(1, 2, 4)[i % 3]},0,{(i // 2) % 7},0,{i % 2},{i % 50}000.0,{i % 2 == 0}"
           for i in range(20_000)]
    rng.shuffle(big)  # the file order is not the answer order
    data += [r.encode() for r in big]
    data += [b"50,400,1000,1,0,0,0,1,,"]
    return data


@pytest.mark.slow
def test_riiid_edge_cases_are_identical(spark, tmp_path, monkeypatch):
    import kt.readers

    raw = str(tmp_path / "raw")
    lake.write_text(f"{raw}/questions.csv", RIIID_QUESTIONS)
    body = b"\n".join([",".join(RIIID_COLUMNS).encode(), *_riiid_rows(random.Random(5))]) + b"\n"
    lake.write_bytes(f"{raw}/train.csv", body)
    monkeypatch.setattr(kt.readers, "BLOCK_SIZE", 1 << 16)  # the reference streams many blocks...
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(1 << 16))  # ...and Spark reads many splits
    try:
        _, manifest = both(raw, str(tmp_path), spark)
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    assert set(manifest["quarantined_by_reason"]) == set(QUARANTINE_REASONS) - {"bad_user_answer"}
    assert manifest["lectures"] == 1 and manifest["unmapped_skills"] == 1
    users = {s["user_id"]: s for s in read_sequences(str(tmp_path / "spark")).to_pylist()}
    assert users[1]["timestamp"][:4] == [50, 900, 1000, 1000] and users[1]["content_id"][2:5] == [2, 1, 1]
    assert users[1000]["n"] == 20_000 and users[4]["n"] == 1  # one of its 20,000 ids came earlier
    assert users[1]["elapsed_ms"][2:4] == [38000, 2]  # 2.5 rounds half to even


def _kt1_files(rng: random.Random) -> dict[str, bytes]:
    header = ",".join(KT1_COLUMNS) + "\n"
    u1 = [
        "1000,5,q1,b,5000", "1000,4,q2,b,5000", "1000,4,q1,a,4000", "900,3,q4,d,99999999999",
        "later,2,q1,b,100", "1002,2,x1,b,100", "1003,s,q1,b,100", "1004,3,q1,e,100", "1005,3,q1,,100",
        "1006,4,q99,a,100", "1007,4,q3,c,100", "1008,5,q1",
    ]
    big = [f"{i // 4},{i // 2},q{(1, 2, 4)[i % 3]},{'abcd'[i % 4]},{i % 90}000" for i in range(20_000)]
    rng.shuffle(big)
    return {
        "u1.csv": (header + "\n".join(u1) + "\n").encode() + b"1009,5,q1,\xff,1\n1010,6,q1,b,\xfe\n",
        "sub/u1.csv": (header + "1000,4,q2,a,1\n1000,4,q4,d,2\n").encode(),  # user 1 again: ties across files
        "u001.csv": (header + "1000,4,q1,b,3\n").encode(),
        "u2.csv": (header + "5,1,q2,a,1000\n").encode(),  # one answer
        "u3.csv": (header + "\n".join(big) + "\n").encode(),  # 20,000 answers, many ties
        "u4.csv": b"",  # empty
        "u5.csv": header.encode(),  # header only
        "ux.csv": (header + "1,1,q1,b,1\n2,1,q1\n").encode(),  # bad_user_id (file name), then a short row
        "notes.txt": b"not read, but an input\n",
        "u8.csv": (header.replace("\n", "\r\n") + "9,1,q2,a,1\r\n9,1,q1,c,1\r\n10,1\r\n").encode(),  # CRLF
    }


@pytest.mark.slow
def test_kt1_edge_cases_are_identical(spark, tmp_path):
    raw = str(tmp_path / "raw")
    lake.write_text(f"{raw}/contents/questions.csv", KT1_QUESTIONS)
    for name, data in _kt1_files(random.Random(7)).items():
        lake.write_bytes(f"{raw}/KT1/{name}", data)
    _, manifest = both(raw, str(tmp_path), spark)
    assert set(manifest["quarantined_by_reason"]) == {
        "wrong_column_count", "bad_user_id", "bad_timestamp", "bad_content_id", "bad_task_container_id",
        "bad_user_answer", "unknown_content_id", "untagged_content"}
    assert len(manifest["inputs"]) == 11  # every file under KT1/ (notes.txt too) and the questions
    users = {s["user_id"]: s for s in read_sequences(str(tmp_path / "spark")).to_pylist()}
    assert sorted(users) == [1, 2, 3, 8]
    assert users[1]["n"] == 8 and users[3]["n"] == 20_000 and users[2]["n"] == 1


@pytest.mark.slow
def test_kt1_shards_next_to_a_user_file_are_identical(spark, tmp_path):
    """The edge cases consolidated by ingest into shards (user id in a column), one user file left beside them."""
    raw = str(tmp_path / "raw")
    lake.write_text(f"{raw}/contents/questions.csv", KT1_QUESTIONS)
    files = _kt1_files(random.Random(7))
    lake.write_bytes(f"{raw}/KT1/u8.csv", files.pop("u8.csv"))
    shards = ingest.KT1Shards(raw, shard_bytes=100_000)  # the 20,000-answer user gets a shard of its own
    for name, data in files.items():
        if name.endswith(".csv"):
            shards.add(name, data)
    shards.close()
    assert sorted(os.listdir(f"{raw}/KT1")) == ["part-00000.csv", "part-00001.csv", "part-00002.csv", "u8.csv"]
    _, manifest = both(raw, str(tmp_path), spark)
    assert set(manifest["quarantined_by_reason"]) == {
        "wrong_column_count", "bad_user_id", "bad_timestamp", "bad_content_id", "bad_task_container_id",
        "bad_user_answer", "unknown_content_id", "untagged_content"}
    users = {s["user_id"]: s for s in read_sequences(str(tmp_path / "spark")).to_pylist()}
    assert sorted(users) == [1, 2, 3, 8]
    assert users[1]["n"] == 8 and users[3]["n"] == 20_000 and users[8]["n"] == 2
    quarantine = pq.read_table(f"{tmp_path}/spark/_quarantine").to_pylist()
    assert {"source": "KT1/part-00002.csv", "reason": "bad_user_id", "raw": "x,1,1,q1,b,1"} in quarantine


@pytest.mark.slow
def test_whitespace_only_line(spark, tmp_path):
    """A line of blanks holds no row: neither engine counts it."""
    raw = str(tmp_path / "raw")
    lake.write_text(f"{raw}/questions.csv", RIIID_QUESTIONS)
    lake.write_text(f"{raw}/train.csv", ",".join(RIIID_COLUMNS) + "\n1,1,1,1,0,0,0,1,,\n   \n2,2,1,1,0,0,0,1,,\n")
    manifest, _ = both(raw, str(tmp_path), spark)
    assert (manifest["rows_in"], manifest["rows_out"], manifest["quarantined"]) == (2, 2, 0)


@pytest.mark.slow
def test_hidden_kt1_files(spark, tmp_path):
    """Hidden names (_x, .x, _dir/) are not data: both engines skip them, as Hadoop listings do."""
    raw = str(tmp_path / "raw")
    lake.write_text(f"{raw}/contents/questions.csv", KT1_QUESTIONS)
    header = ",".join(KT1_COLUMNS) + "\n"
    for name in ("u1.csv", "_u6.csv", ".u7.csv", "_tmp/u9.csv"):
        lake.write_text(f"{raw}/KT1/{name}", header + "7,1,q1,b,1\n")
    manifest, _ = both(raw, str(tmp_path), spark)
    assert (manifest["rows_in"], manifest["users"]) == (1, 1)


@pytest.mark.slow
def test_hostile_questions_files_are_identical(spark, tmp_path):
    """Both formats' hostile questions corpus: the same kept questions, the same quarantined rows and counts."""
    riiid = str(tmp_path / "riiid")
    lake.write_text(f"{riiid}/questions.csv", questions_corpus.riiid_questions())
    lake.write_text(f"{riiid}/train.csv", ",".join(RIIID_COLUMNS) + "\n1,10,7,1,0,1,0,1,,\n2,11,7,10,0,2,0,1,,\n"
                    "3,12,7,3,0,3,0,1,,\n4,13,7,2,0,4,0,0,,\n5,14,7,4,0,5,0,1,,\n")
    kt1 = str(tmp_path / "kt1")
    lake.write_text(f"{kt1}/contents/questions.csv", questions_corpus.kt1_questions())
    lake.write_text(f"{kt1}/KT1/u7.csv", ",".join(KT1_COLUMNS) + "\n10,1,q1,b,1\n11,2,q10,a,1\n13,4,q2,b,1\n14,5,q4,d,1\n")
    for raw, bad in ((riiid, questions_corpus.RIIID_BAD), (kt1, questions_corpus.KT1_BAD)):
        _, manifest = both(raw, f"{raw}-out", spark)
        assert manifest["questions_quarantined"] == len(bad)
        assert set(manifest["questions_quarantined_by_reason"]) == {reason for _, reason in bad}
        assert manifest["quarantined_by_reason"]["unknown_content_id"] == 1  # the answer to quarantined question 10
        assert [s["content_id"] for s in read_sequences(f"{raw}-out/spark").to_pylist()[0:1]] == [[1, 2, 4]]


def test_wrong_column_count_with_non_utf8_bytes(spark, tmp_path):
    """A short row with a stray byte is quarantined (U+FFFD in its text), not a crash."""
    raw = str(tmp_path / "raw")
    lake.write_text(f"{raw}/questions.csv", RIIID_QUESTIONS)
    lake.write_bytes(f"{raw}/train.csv", ",".join(RIIID_COLUMNS).encode() + b"\n1,1,1,1,0,0,0,1,,\n2,2,\xff\n")
    manifest, _ = both(raw, str(tmp_path), spark)
    assert manifest["quarantined_by_reason"] == {"wrong_column_count": 1}
    quarantine = pq.read_table(f"{tmp_path}/reference/_quarantine").to_pylist()
    assert [q["raw"] for q in quarantine if q["source"] == "train.csv"] == ["2,2,\ufffd"]


def test_large_row_ids(spark, tmp_path):
    """An 18-digit row_id does not size the duplicate bitmap (it would need 100 PB)."""
    raw = str(tmp_path / "raw")
    lake.write_text(f"{raw}/questions.csv", RIIID_QUESTIONS)
    lake.write_text(f"{raw}/train.csv", ",".join(RIIID_COLUMNS) + "\n1,1,1,1,0,0,0,1,,\n100000000000000000,2,1,1,0,0,0,1,,\n"
                    "100000000000000000,3,1,1,0,0,0,1,,\n")
    manifest, _ = both(raw, str(tmp_path), spark)
    assert manifest["quarantined_by_reason"] == {"duplicate_row_id": 1}


def test_seen_twice_matches_a_plain_count(spark):
    """The grouped bit check finds exactly the ids seen more than once, each with its first position."""
    from pyspark.sql import functions as F

    rng = random.Random(11)
    ids = list(range(5000)) + [0, 63, 64, 64, 127, 128, 4999, 4999, 10**17, 10**17, 10**17 + 64]  # group edges
    rng.shuffle(ids)
    seen = [(None if n % 97 == 0 else i, n) for n, i in enumerate(ids)]  # a null id (bad row_id) is not seen
    rows = spark.createDataFrame(seen, "row_id long, seq long").select(
        "row_id", F.lit(0).cast("long").alias("block_start"), "seq")
    counts = Counter(i for i, _ in seen if i is not None)
    expected = {i: min(n for j, n in seen if j == i) for i, times in counts.items() if times > 1}
    found = {r["row_id"]: r["first_pos"]["seq"] for r in spark_etl.seen_twice(rows).collect()}
    assert found == expected and len(expected) >= 4


def test_row_pattern_agrees_with_each_field_pattern(spark, tmp_path):
    """The one regex over a clean row gives each field's check the same answer as that field's own regex."""
    from pyspark.sql import functions as F

    path = tmp_path / "train.csv"
    lines = [
        "1,10,7,3,0,5,2,1,13000.0,True",  # clean
        "2,10,7,3,0,5,2,1,,",  # empty elapsed: not a clean row, yet every other field passes
        "003,0010,07,3,0,5,2,1,1.,False",  # leading zeros, a bare decimal point
        "4,1e3,7,3,0,5,2,1,1,True",  # bad timestamp
        "5,10,-7,3,0,5,2,1,1,True",  # bad user id
        "6,10,7,1234567890,0,5,2,1,1,True",  # content id too long
        "7,10,7,3,0,5.5,2,1,1,True",  # bad container
        '8,10,7,3,0,5,"2,9",1,1,True',  # a quoted comma: right field count, one comma too many for the row regex
        "9,10,7,3,0,5,2,1,1",  # a field short: not parsed
        "10,10,7,3,0,5,2,1,1,True,x",  # a field more: not parsed
        "1234567890123456789,10,7,3,0,5,2,1,1,True",  # row id too long
    ]
    path.write_text(",".join(RIIID_COLUMNS) + "\n" + "\n".join(lines) + "\n")
    raw_rows = spark_etl.read_lines(spark, str(path), list(RIIID_COLUMNS), with_file=False)
    patterns = spark_etl.RIIID_PATTERNS
    parsed = spark_etl._parsed(raw_rows, patterns, []).orderBy("seq")
    rows = parsed.select("parsed", "clean", *[F.struct(f"{c}_ok", F.col(c).rlike(p)) for c, p in patterns.items()])
    rows = rows.collect()
    assert len(rows) == len(lines) and [r["parsed"] for r in rows].count(False) == 2
    for line, row in zip(lines, rows):
        if row["parsed"]:
            assert all(fast == each for fast, each in row[2:]), line
    assert [line for line, row in zip(lines, rows) if row["clean"]] == [lines[0], lines[2]]  # proved by one regex
