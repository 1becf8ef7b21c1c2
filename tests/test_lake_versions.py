"""Versioned datasets: a run that dies midway loses nothing; the pointer moves only to a checked version.

Each engine is stopped between writing and switching: the python ETL and
ingestion by SIGKILL in a child process, right after the first output file of
the new version is written (the child kills itself at that event: no timing
involved); Spark by a failure raised at the same point (one Spark session per
test run is all this machine affords). Then the previous dataset is still the
one served, checked and trained on, and the rerun completes and prunes the
dead run's partial version.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from kt import aws_requests, etl, ingest, lake, pipeline, runtime, sample
from kt.config import Settings
from kt.data import read_sequences

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"epochs": 1, "hidden": 8, "layers": 1, "batch_size": 32, "max_seq_len": 50}

# Runs `kt <argv>` with one function replaced by itself followed by SIGKILL of the process.
CHILD = """
import importlib, os, signal, sys
owner = importlib.import_module({module!r})
for name in {path!r}[:-1]:
    owner = getattr(owner, name)
original = getattr(owner, {path!r}[-1])

def then_die(*args, **kwargs):
    result = original(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
    return result

setattr(owner, {path!r}[-1], then_die)
from kt import cli
sys.exit(cli.main({argv!r}))
"""


def _killed_midway(argv: list[str], module: str, path: tuple[str, ...]) -> None:
    code = CHILD.format(module=module, path=path, argv=argv)
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "src")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]


def _version_files(root: str, version: str) -> list[str]:
    return [os.path.relpath(f, os.path.join(root, version)) for f in lake.list_files(lake.join(root, version))]


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(lake=str(tmp_path / "lake"))


@pytest.fixture(scope="module")
def riiid_source(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("source"))
    sample.generate(root, users=120, skills=8, seed=11, tutor_users=2, tutor_days=1)
    return root


# --- the pointer -------------------------------------------------------------------------


def test_a_lake_without_pointer_is_read_where_it_always_was(settings):
    root = lake.uris(settings)["processed"]
    assert lake.dataset(settings, "processed") == root == lake.current(root)
    os.makedirs(lake.join(root, "v=20260101T000000000000Z"))  # a run that died before its first switch
    assert lake.dataset(settings, "processed") == root


def test_switch_keeps_the_configured_number_of_served_versions_and_drops_dead_runs(tmp_path):
    root = str(tmp_path / "processed" / "ednet")

    def version(name: str, manifest: bool = True) -> str:
        os.makedirs(os.path.join(root, name))
        if manifest:
            lake.write_text(lake.join(root, name, "_manifest.json"), name)
        return name

    served = [version(f"v=2026010{i}T000000000000Z") for i in range(1, 5)]
    dead = version("v=20260102T120000000000Z", manifest=False)  # killed between the 2nd and 3rd runs
    for name in served[:3]:
        lake.switch(root, name, "_manifest.json", keep=3)
    newer = version("v=20260109T000000000000Z", manifest=False)  # a run still writing
    pointer = lake.switch(root, served[3], "_manifest.json", keep=3)
    assert pointer["previous"] == [served[2], served[1]]
    assert pointer["manifest_sha256"] == lake.sha256(lake.join(root, served[3], "_manifest.json"))
    assert lake.prune(root) == [served[0], dead]
    assert lake.versions(root) == [served[1], served[2], served[3], newer]
    assert lake.current(root) == lake.join(root, served[3])
    assert json.loads(lake.read_text(lake.join(root, lake.POINTER)))["version"] == served[3]


def test_versions_on_s3_switch_with_one_put_and_prune_whole_prefixes(monkeypatch):
    import boto3
    from moto.server import ThreadedMotoServer

    from kt.aws import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(key, value)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="lake")
        settings = Settings(lake="s3://lake/kt")
        root = lake.uris(settings)["processed"]

        def write(version: str) -> dict:
            lake.write_text(lake.join(version, "sequences.parquet", "part-0.parquet"), "rows")
            lake.write_text(lake.join(version, "_manifest.json"), "{}")
            return {}

        pointers = [lake.publish_version(root, write, lambda v: None, "_manifest.json", keep=2)["pointer"]
                    for _ in range(3)]
        assert lake.dataset(settings, "processed") == f"{root}/{pointers[2]['version']}"
        assert lake.versions(root) == [pointers[1]["version"], pointers[2]["version"]]
        # (pyarrow leaves an empty "directory" marker kt/processed/ednet/ after deleting below it)
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="lake")["Contents"] if not o["Key"].endswith("/"))
        assert keys == ["kt/processed/ednet/_current.json"] + [
            f"kt/processed/ednet/{p['version']}/{name}" for p in pointers[1:]
            for name in ("_manifest.json", "sequences.parquet/part-0.parquet")]
        with pytest.raises(RuntimeError, match="switched to meanwhile"):  # a slower run that started earlier
            lake.switch(root, pointers[1]["version"], "_manifest.json", keep=2)
    finally:
        server.stop()


def test_keep_versions_is_a_setting(settings):
    from kt.config import ConfigError, load_settings

    assert load_settings({"KT_KEEP_VERSIONS": "5"}).keep_versions == 5
    assert load_settings({}).keep_versions == lake.DEFAULT_KEEP_VERSIONS == 3
    with pytest.raises(ConfigError, match="KT_KEEP_VERSIONS"):
        load_settings({"KT_KEEP_VERSIONS": "0"})


# --- python ETL ----------------------------------------------------------------------------


def test_a_killed_python_etl_leaves_the_previous_dataset_served_and_trainable(settings, riiid_source, tmp_path):
    shutil.copytree(os.path.join(riiid_source, "raw"), os.path.join(settings.lake, "raw"))
    shutil.copytree(os.path.join(riiid_source, "sample"), os.path.join(settings.lake, "sample"))
    argv = ["etl", "--lake", settings.lake]
    from kt import cli

    assert cli.main(argv) == 0
    root = lake.uris(settings)["processed"]
    pointer = lake.read_pointer(root)
    served = lake.join(root, pointer["version"])
    assert lake.dataset(settings, "processed") == served

    _killed_midway(argv, "pyarrow.parquet", ("write_table",))  # dies after its first sequences part file

    (dead,) = [v for v in lake.versions(root) if v != pointer["version"]]
    written = _version_files(root, dead)
    assert any(f.startswith("sequences.parquet/") for f in written) and "_manifest.json" not in written
    assert lake.read_pointer(root) == pointer  # the switch never happened
    dataset = runtime.check_dataset(settings)  # what dkt_train checks first: still the served version
    assert (dataset["uri"], dataset["manifest_sha256"]) == (served, pointer["manifest_sha256"])
    assert read_sequences(lake.dataset(settings, "processed"), "train").num_rows > 0

    # Trainable: the training request of this moment reads the served version, and the local runner trains on it.
    run = "2026-12-02-0300"
    request = aws_requests.training_job(settings, run, TINY)
    assert request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == served + "/"
    describe = pipeline.train_local(settings, run, TINY, str(tmp_path / "sagemaker"))
    model_url = describe["ModelArtifacts"]["S3ModelArtifacts"]
    report = pipeline.evaluate_model(settings, model_url, processed=dataset["uri"],
                                     manifest_sha256=dataset["manifest_sha256"])
    assert report["dkt"]["n"] > 0
    with pytest.raises(RuntimeError, match="trained on manifest"):
        pipeline.evaluate_model(settings, model_url, manifest_sha256="0" * 64)

    assert cli.main(argv) == 0  # the rerun completes, and the dead run's partial version goes
    after = lake.read_pointer(root)
    assert after["version"] > dead and after["previous"] == [pointer["version"]]
    assert dead not in lake.versions(root)
    assert etl.check_manifest(lake.dataset(settings, "processed"))["rows_in"] > 0
    # `kt train --train <processed root>` by hand follows the pointer too, and records which manifest it read.
    from kt_testing import train_tiny_model

    model_dir = train_tiny_model(root, str(tmp_path / "by-hand"), "by-hand")
    info = json.load(open(os.path.join(model_dir, "model.json")))
    assert info["training_manifest_sha256"] == after["manifest_sha256"]


# --- ingestion -----------------------------------------------------------------------------


def test_a_killed_ingestion_leaves_the_previous_raw_files_served(settings, riiid_source, tmp_path):
    first = os.path.join(riiid_source, "raw", "ednet")
    assert ingest.ingest(settings, first, "riiid")["changed"]
    root = lake.uris(settings)["raw"]
    pointer = lake.read_pointer(root)
    before = etl.run_etl(lake.uris(settings)["raw"], str(tmp_path / "p1"), progress=False)

    other = str(tmp_path / "other")
    sample.generate(other, users=60, skills=8, seed=12, tutor_users=1, tutor_days=1)
    argv = ["ingest", "--lake", settings.lake, "--source", os.path.join(other, "raw", "ednet")]
    _killed_midway(argv, "kt.ingest", ("_HashingWriter", "close"))  # dies after its first placed file

    (dead,) = [v for v in lake.versions(root) if v != pointer["version"]]
    assert len(_version_files(root, dead)) == 1  # one file placed, no _ingest.json
    assert lake.read_pointer(root) == pointer
    assert ingest.check_placed(lake.dataset(settings, "raw"))["source"] == first
    again = etl.run_etl(lake.uris(settings)["raw"], str(tmp_path / "p2"), progress=False)  # the ETL reads the old files
    assert (again["rows_in"], again["inputs"]) == (before["rows_in"], before["inputs"])

    result = ingest.ingest(settings, os.path.join(other, "raw", "ednet"), "riiid")  # the rerun completes
    assert result["changed"] and result["raw"] == lake.dataset(settings, "raw")
    assert dead not in lake.versions(root) and pointer["version"] in lake.versions(root)
    assert etl.run_etl(lake.uris(settings)["raw"], str(tmp_path / "p3"), progress=False)["rows_in"] != before["rows_in"]


# --- Spark ETL and the Glue job's wiring ------------------------------------------------------


@pytest.mark.slow
def test_a_spark_etl_failing_midway_leaves_the_previous_dataset_served(settings, riiid_source, spark, monkeypatch):
    from kt import spark_etl

    shutil.copytree(os.path.join(riiid_source, "raw"), os.path.join(settings.lake, "raw"))
    uris = lake.uris(settings)
    glue = runtime.glue_job(settings)["script_args"]
    assert (glue["--processed"], glue["--keep-versions"]) == (uris["processed"], "3")
    sys.path.insert(0, os.path.join(REPO, "glue"))
    try:
        import ednet_preprocessor
    finally:
        sys.path.pop(0)
    argv = [f"{k}={v}" for k, v in glue.items()]
    first = etl.publish(uris["processed"], lambda version: etl.run_etl(uris["raw"], version, progress=False), keep=3)
    pointer = lake.read_pointer(uris["processed"])  # the served dataset (the python engine's: one Spark run less)

    original = spark_etl._write
    calls = []

    def fail_after_first_write(df, uri):
        if calls:
            raise RuntimeError("the Glue job's workers were lost")
        calls.append(uri)
        original(df, uri)

    monkeypatch.setattr(spark_etl, "_write", fail_after_first_write)
    with pytest.raises(RuntimeError, match="workers were lost"):
        ednet_preprocessor.main(argv)
    (dead,) = [v for v in lake.versions(uris["processed"]) if v != pointer["version"]]
    assert calls[0].startswith(lake.join(uris["processed"], dead))
    assert "_manifest.json" not in _version_files(uris["processed"], dead)
    assert lake.read_pointer(uris["processed"]) == pointer
    assert runtime.check_dataset(settings)["uri"] == lake.join(uris["processed"], pointer["version"])

    monkeypatch.setattr(spark_etl, "_write", original)
    again = ednet_preprocessor.main(argv)  # the rerun completes
    assert (again["engine"], again["rows_out"], again["pruned"]) == ("spark", first["rows_out"], [dead])
    assert lake.read_pointer(uris["processed"])["previous"] == [pointer["version"]]


# --- a manifest that does not check out ------------------------------------------------------


def _bad_version(settings: Settings, sample_lake: str) -> tuple[str, str]:
    """A processed version whose manifest does not add up, published as an engine would (it is refused)."""
    root = lake.uris(settings)["processed"]

    def write(version: str) -> dict:
        shutil.copytree(os.path.join(sample_lake, "processed", "ednet"), version)
        manifest = json.loads(lake.read_text(lake.join(version, "_manifest.json")))
        manifest["rows_out"] += 1  # one answer more than the accounting allows
        lake.write_text(lake.join(version, "_manifest.json"), json.dumps(manifest))
        return manifest

    with pytest.raises(etl.ManifestError, match="rows_in != rows_out"):
        etl.publish(root, write, keep=3)
    return root, lake.versions(root)[-1]


def test_an_engine_never_switches_to_a_manifest_that_does_not_add_up(settings, sample_lake):
    root, bad = _bad_version(settings, sample_lake)
    assert lake.read_pointer(root) is None and lake.dataset(settings, "processed") == root


def test_a_bad_manifest_stops_ednet_etl_and_dkt_train(settings, sample_lake):
    good = etl.publish(lake.uris(settings)["processed"], lambda version: shutil.copytree(
        os.path.join(sample_lake, "processed", "ednet"), version) and etl.check_manifest(version), keep=3)
    root, bad = _bad_version(settings, sample_lake)
    # ednet_etl's check_manifest: the run did not move the pointer, so nothing is announced.
    with pytest.raises(RuntimeError, match="still names"):
        runtime.check_manifest(settings, pointer_before=good["pointer"]["version"])
    # A pointer moved to a version whose manifest does not add up (by hand, or by an older job) is refused by both DAGs.
    lake.write_text(lake.join(root, lake.POINTER), json.dumps({**good["pointer"], "version": bad}))
    with pytest.raises(etl.ManifestError, match="rows_in != rows_out"):
        runtime.check_manifest(settings, pointer_before=good["pointer"]["version"])
    with pytest.raises(etl.ManifestError, match="rows_in != rows_out"):
        runtime.check_dataset(settings)
    # A manifest rewritten after the switch no longer matches the pointer's checksum.
    lake.write_text(lake.join(root, lake.POINTER), json.dumps(good["pointer"]))
    manifest_uri = lake.join(root, good["pointer"]["version"], "_manifest.json")
    lake.write_text(manifest_uri, lake.read_text(manifest_uri) + " ")
    with pytest.raises(etl.ManifestError, match="changed after"):
        runtime.check_dataset(settings)
