"""kt ingest: local files, archives, resumable HTTP (a real server on 127.0.0.1), s3 (moto), idempotence, KT1."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from moto import mock_aws

import pyarrow.parquet as pq

from kt import etl, ingest, lake, sample
from kt.data import read_sequences
from kt.config import Settings


@pytest.fixture(scope="module")
def riiid_dir(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("riiid-src"))
    sample.generate(root, users=30, skills=4, seed=5, tutor_users=2, tutor_days=1)
    return os.path.join(root, "raw", "ednet")


@pytest.fixture(scope="module")
def kt1_dir(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("kt1-src"))
    sample.generate(root, users=30, skills=4, fmt="kt1", seed=5, tutor_users=2, tutor_days=1)
    return os.path.join(root, "raw", "ednet")


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(lake=str(tmp_path / "lake"))


def _raw(settings: Settings, *parts: str) -> str:
    """A path in the raw version the pointer names (raw/ednet/v=<time>/...)."""
    return os.path.join(lake.dataset(settings, "raw"), *parts)


def _sha(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _zip(source_dir: str, target: str, prefix: str = "") -> str:
    with zipfile.ZipFile(target, "w") as archive:
        for d, _, names in os.walk(source_dir):
            for name in names:
                path = os.path.join(d, name)
                archive.write(path, prefix + os.path.relpath(path, source_dir))
        archive.writestr("__MACOSX/._train.csv", b"junk")
        archive.writestr(prefix + "lectures.csv", b"lecture_id,tag\n1,2\n")
    return target


def test_a_local_directory_is_placed_with_checksums_and_a_second_run_does_nothing(riiid_dir, settings):
    first = ingest.ingest(settings, riiid_dir, "riiid")
    assert first["changed"]
    for name in ("train.csv", "questions.csv", "skill_mappings.json"):
        assert _sha(_raw(settings, name)) == _sha(os.path.join(riiid_dir, name))
        assert first["files"][name] == {"size": os.path.getsize(_raw(settings, name)), "sha256": _sha(_raw(settings, name))}
    record = json.load(open(_raw(settings, "_ingest.json")))
    assert record["source"] == riiid_dir and record["format"] == "riiid"
    stamps = {name: os.stat(_raw(settings, name)).st_mtime_ns for name in os.listdir(_raw(settings))}

    second = ingest.ingest(settings, riiid_dir, "riiid")
    assert not second["changed"]
    assert {name: os.stat(_raw(settings, name)).st_mtime_ns for name in os.listdir(_raw(settings))} == stamps


def test_a_touched_but_identical_source_is_recognised_by_its_checksum(riiid_dir, settings, tmp_path):
    source = shutil.copytree(riiid_dir, tmp_path / "copy")
    ingest.ingest(settings, str(source), "riiid")
    before = os.stat(_raw(settings, "train.csv")).st_mtime_ns
    os.utime(source / "train.csv", ns=(1, 1))  # new mtime, same bytes
    pointer = lake.read_pointer(lake.uris(settings)["raw"])
    assert not ingest.ingest(settings, str(source), "riiid")["changed"]
    assert os.stat(_raw(settings, "train.csv")).st_mtime_ns == before
    again = lake.read_pointer(lake.uris(settings)["raw"])  # same version; the record's new checksum
    assert again["version"] == pointer["version"] and again["manifest_sha256"] == lake.sha256(_raw(settings, "_ingest.json"))
    with open(source / "train.csv", "a") as f:  # new bytes
        f.write("999999,0,1,1,0,0,0,1,,\n")
    assert ingest.ingest(settings, str(source), "riiid")["changed"]
    assert _sha(_raw(settings, "train.csv")) == _sha(str(source / "train.csv"))


def test_a_zip_is_streamed_into_place_and_its_extra_files_skipped(riiid_dir, settings, tmp_path):
    archive = _zip(riiid_dir, str(tmp_path / "riiid.zip"), prefix="riiid-test-answer-prediction/")
    result = ingest.ingest(settings, archive, "riiid")
    assert _sha(_raw(settings, "train.csv")) == _sha(os.path.join(riiid_dir, "train.csv"))
    assert "riiid-test-answer-prediction/lectures.csv" in result["skipped"]
    assert result["fetched"]["riiid.zip"]["sha256"] == _sha(archive)
    assert etl.run_etl(_raw(settings), os.path.join(settings.lake, "processed", "ednet"), progress=False)["rows_out"] > 0


def test_kt1_tar_gz_keeps_every_user_file_and_the_etl_reads_it_as_the_original(kt1_dir, settings, tmp_path):
    archive = str(tmp_path / "EdNet-KT1.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(os.path.join(kt1_dir, "KT1"), arcname="KT1")
        tar.add(os.path.join(kt1_dir, "contents", "questions.csv"), arcname="contents/questions.csv")
        tar.add(os.path.join(kt1_dir, "skill_mappings.json"), arcname="skill_mappings.json")
    result = ingest.ingest(settings, archive, "kt1", consolidate=False)
    users = sorted(os.listdir(os.path.join(kt1_dir, "KT1")))
    assert sorted(os.listdir(_raw(settings, "KT1"))) == users
    assert all(_sha(_raw(settings, "KT1", u)) == _sha(os.path.join(kt1_dir, "KT1", u)) for u in users)
    assert result["kt1"]["users"] == len(users) and result["kt1"]["layout"] == "per-user files"
    original = etl.run_etl(kt1_dir, str(tmp_path / "p1"), progress=False)
    ingested = etl.run_etl(_raw(settings), str(tmp_path / "p2"), progress=False)
    for key in ("rows_in", "rows_out", "quarantined", "users"):
        assert ingested[key] == original[key], key

    assert not ingest.ingest(settings, archive, "kt1", consolidate=False)["changed"]
    os.remove(_raw(settings, "KT1", users[0]))  # a user file went missing: ingest again
    assert ingest.ingest(settings, archive, "kt1", consolidate=False)["changed"]
    assert os.path.exists(_raw(settings, "KT1", users[0]))


def test_kt1_consolidation_keeps_each_users_rows_in_order_in_shards(kt1_dir, settings, tmp_path):
    result = ingest.ingest(settings, kt1_dir, "kt1")  # consolidated by default
    shards = sorted(os.listdir(_raw(settings, "KT1")))
    assert shards == ["part-00000.csv"] and result["kt1"]["layout"] == "shards"
    rows: dict[str, list[list[str]]] = {}
    with open(_raw(settings, "KT1", shards[0]), newline="") as f:
        reader = csv.reader(f)
        assert next(reader) == ["user_id", "timestamp", "solving_id", "question_id", "user_answer", "elapsed_time"]
        for row in reader:
            rows.setdefault(row[0], []).append(row[1:])
    for name in os.listdir(os.path.join(kt1_dir, "KT1")):
        with open(os.path.join(kt1_dir, "KT1", name), newline="") as f:
            original = [r for r in csv.reader(f)][1:]
        assert rows[name[1:-4]] == original, name
    assert result["kt1"]["rows"] == sum(len(r) for r in rows.values())
    assert not ingest.ingest(settings, kt1_dir, "kt1")["changed"]


def test_the_etl_reads_shards_as_the_per_user_files(kt1_dir, settings, tmp_path):
    """Same users, lists, splits and counts; a quarantined row names its shard and carries the user id."""
    ingest.ingest(settings, kt1_dir, "kt1")
    original = etl.run_etl(kt1_dir, str(tmp_path / "per-user"), progress=False)
    consolidated = etl.run_etl(_raw(settings), str(tmp_path / "shards"), progress=False)
    assert original["quarantined"] > 0
    for key in ("rows_in", "rows_out", "lectures", "quarantined_by_reason", "users_by_split", "rows_by_split", "skills"):
        assert consolidated[key] == original[key], key
    assert (read_sequences(str(tmp_path / "shards")).to_pylist()
            == read_sequences(str(tmp_path / "per-user")).to_pylist())
    quarantine = pq.read_table(str(tmp_path / "shards" / "_quarantine")).to_pylist()
    assert {q["source"] for q in quarantine} == {"KT1/part-00000.csv"}
    expected = pq.read_table(str(tmp_path / "per-user" / "_quarantine")).to_pylist()
    assert sorted((q["reason"], q["raw"]) for q in quarantine) == sorted(
        (q["reason"], q["source"].removeprefix("KT1/u").removesuffix(".csv") + "," + q["raw"]) for q in expected)


def test_a_user_file_with_another_header_is_not_consolidated(tmp_path):
    """Its rows would land in the wrong columns: a clear error instead (per-user files keep any column order)."""
    shards = ingest.KT1Shards(str(tmp_path / "raw"))
    with pytest.raises(ingest.IngestError, match="u7.csv: header .* is not KT1's"):
        shards.add("KT1/u7.csv", b"solving_id,timestamp,question_id,user_answer,elapsed_time\n1,2,q1,a,1\n")


def test_shards_quote_a_user_id_with_a_comma(tmp_path):
    """u1,2.csv: the id lands in one field (and is then quarantined as a bad user id, as its file would be)."""
    shards = ingest.KT1Shards(str(tmp_path / "raw"))
    shards.add("KT1/u1,2.csv", b"\xef\xbb\xbf\ntimestamp,solving_id,question_id,user_answer,elapsed_time\n\n5,1,q1,a,1\n")
    shards.close()
    with open(tmp_path / "raw" / "KT1" / "part-00000.csv", newline="") as f:
        assert list(csv.reader(f))[1:] == [["1,2", "5", "1", "q1", "a", "1"]]


def test_shards_roll_over_without_splitting_a_user(tmp_path):
    raw = str(tmp_path / "raw")
    shards = ingest.KT1Shards(raw, shard_bytes=60)
    for user in ("1", "2", "3"):
        shards.add(f"KT1/u{user}.csv", b"timestamp,solving_id,question_id,user_answer,elapsed_time\n"
                                       b"1,1,q1,a,1000\n2,2,q2,b,2000\n")
    shards.close()
    assert sorted(shards.files) == ["KT1/part-00000.csv", "KT1/part-00001.csv", "KT1/part-00002.csv"]
    for rel, meta in shards.files.items():
        body = open(os.path.join(raw, rel), "rb").read()
        assert len({line.split(b",")[0] for line in body.splitlines()[1:]}) == 1  # one user per shard here
        assert meta == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_a_source_without_the_formats_files_is_refused(riiid_dir, settings, tmp_path):
    source = tmp_path / "only-train"
    source.mkdir()
    shutil.copy(os.path.join(riiid_dir, "train.csv"), source)
    with pytest.raises(ingest.IngestError, match="no questions.csv for format riiid"):
        ingest.ingest(settings, str(source), "riiid")
    with pytest.raises(ingest.IngestError, match="format must be one of"):
        ingest.ingest(settings, str(source), "csv")
    assert ingest.main(settings, str(source), "riiid") == 1


class _Server:
    """A file server on 127.0.0.1 that honours Range/If-Range and can drop the first download midway."""

    def __init__(self, body: bytes, etag: str = '"v1"'):
        self.body, self.etag = body, etag
        self.cut_after: int | None = None
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _headers(self, status: int, length: int, extra: dict) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(length))
                self.send_header("ETag", server.etag)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()

            def do_HEAD(self) -> None:
                server.requests.append(("HEAD", None))
                self._headers(200, len(server.body), {})

            def do_GET(self) -> None:
                asked = self.headers.get("Range")
                server.requests.append(("GET", asked))
                start = 0
                if asked and self.headers.get("If-Range", server.etag) == server.etag:
                    start = int(asked.split("=")[1].split("-")[0])
                part = server.body[start:]
                extra = {"Content-Range": f"bytes {start}-{len(server.body) - 1}/{len(server.body)}"} if start else {}
                self._headers(206 if start else 200, len(part), extra)
                if server.cut_after is not None:
                    self.wfile.write(part[: server.cut_after])
                    self.wfile.flush()
                    server.cut_after = None
                    self.close_connection = True
                    return
                self.wfile.write(part)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "_Server":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def test_an_interrupted_http_download_resumes_with_a_range_request(riiid_dir, settings, tmp_path):
    body = open(_zip(riiid_dir, str(tmp_path / "riiid.zip")), "rb").read()
    with _Server(body) as server:
        url = f"{server.url}/data/riiid.zip"
        server.cut_after = len(body) // 3
        with pytest.raises(Exception):  # the connection dropped mid-body
            ingest.ingest(settings, url, "riiid")
        part = os.path.join(ingest.work_dir(settings, url), "download", "riiid.zip.part")
        assert 0 < os.path.getsize(part) < len(body)
        have = os.path.getsize(part)

        result = ingest.ingest(settings, url, "riiid")
        assert result["changed"]
        assert ("GET", f"bytes={have}-") in server.requests
        assert result["fetched"]["riiid.zip"]["sha256"] == hashlib.sha256(body).hexdigest()
        assert _sha(_raw(settings, "train.csv")) == _sha(os.path.join(riiid_dir, "train.csv"))
        assert not os.path.exists(ingest.work_dir(settings, url))  # the staging copy is gone once in the lake

        gets = sum(1 for method, _ in server.requests if method == "GET")
        assert not ingest.ingest(settings, url, "riiid")["changed"]
        assert sum(1 for method, _ in server.requests if method == "GET") == gets  # same ETag: not downloaded


def test_a_partial_download_of_a_changed_file_starts_over(settings, tmp_path):
    with _Server(b"x" * 1000, etag='"v2"') as server:
        url = f"{server.url}/f.csv"
        target = str(tmp_path / "f.csv")
        with open(target + ".part", "wb") as f:
            f.write(b"y" * 400)  # from the old version of the file
        ingest.download_http(url, target, etag='"v1"')
        assert open(target, "rb").read() == b"x" * 1000
        assert server.requests[-1] == ("GET", "bytes=400-")  # asked to resume, got the whole new file


def test_an_s3_object_is_downloaded_resuming_a_partial_copy(riiid_dir, settings, tmp_path):
    archive = _zip(riiid_dir, str(tmp_path / "riiid.zip"))
    body = open(archive, "rb").read()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="source")
        s3.put_object(Bucket="source", Key="ednet/riiid.zip", Body=body)
        source = "s3://source/ednet/riiid.zip"
        part = os.path.join(ingest.work_dir(settings, source), "download", "riiid.zip.part")
        os.makedirs(os.path.dirname(part))
        with open(part, "wb") as f:
            f.write(body[:1000])
        result = ingest.ingest(settings, source, "riiid")
        assert result["fetched"]["riiid.zip"]["sha256"] == hashlib.sha256(body).hexdigest()
        assert _sha(_raw(settings, "questions.csv")) == _sha(os.path.join(riiid_dir, "questions.csv"))
        assert not ingest.ingest(settings, source, "riiid")["changed"]
        assert ingest.ingest(settings, "s3://source/ednet", "riiid")["changed"]  # the prefix is another source
        assert _sha(_raw(settings, "train.csv")) == _sha(os.path.join(riiid_dir, "train.csv"))


def test_main_prints_a_summary(riiid_dir, settings, capsys):
    assert ingest.main(settings, riiid_dir, "riiid") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["changed"] and summary["files"]["train.csv"] > 0
