"""ednet_ingest end to end in the local runtime: files placed, the raw asset announced once, a rerun a no-op."""

from __future__ import annotations

import json
import os
import zipfile

import pytest
from dagtest import asset_events, queued_by_asset, run_dag

from kt.runtime import lake_asset_uri


def _served_raw(lake_root: str) -> str:
    """The raw version ingestion switched raw/ednet/_current.json to."""
    root = os.path.join(lake_root, "raw", "ednet")
    return os.path.join(root, json.load(open(os.path.join(root, "_current.json")))["version"])

pytestmark = pytest.mark.slow


def test_ingest_places_the_files_announces_raw_and_a_rerun_does_nothing(local_lake, sample_lake, tmp_path):
    archive = str(tmp_path / "riiid.zip")
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("train.csv", "questions.csv", "skill_mappings.json"):
            z.write(os.path.join(sample_lake, "raw", "ednet", name), f"riiid/{name}")
    conf = {"source": archive, "format": "riiid"}
    before = asset_events(lake_asset_uri("raw"))

    run, states, _ = run_dag("ednet_ingest", conf=conf)
    assert run.state == "success", states
    assert states == {"ingest": "success", "raw_changed": "success", "announce_raw": "success"}
    raw = _served_raw(local_lake)
    assert open(os.path.join(raw, "train.csv"), "rb").read() == open(os.path.join(sample_lake, "raw/ednet/train.csv"), "rb").read()
    assert json.load(open(os.path.join(raw, "_ingest.json")))["source"] == archive
    assert asset_events(lake_asset_uri("raw")) == before + 1
    assert queued_by_asset("ednet_etl") >= 1  # the ETL DAG is scheduled on the raw asset

    again, states, _ = run_dag("ednet_ingest", conf=conf)
    assert again.state == "success"
    assert states["raw_changed"] == "success" and states["announce_raw"] == "skipped"
    assert asset_events(lake_asset_uri("raw")) == before + 1  # nothing new: no ETL


def test_a_source_that_is_not_there_fails_the_run(local_lake, tmp_path):
    run, states, _ = run_dag("ednet_ingest", conf={"source": str(tmp_path / "missing.zip"), "format": "riiid"})
    assert run.state == "failed" and states["ingest"] == "failed"
    assert not os.path.exists(os.path.join(local_lake, "raw"))


def test_kt1_is_consolidated_into_shards_by_default(local_lake, tmp_path):
    """The trigger form's defaults pack KT1's user files into shards (which both ETL engines read: see
    tests/test_spark_etl.py and tests/test_real_data.py), with every row of the source."""
    from kt import sample

    source = str(tmp_path / "kt1")
    sample.generate(source, users=40, skills=8, fmt="kt1", seed=3, tutor_users=0)
    user_files = os.path.join(source, "raw", "ednet", "KT1")
    rows = sum(len([line for line in open(os.path.join(user_files, name), "rb") if line.strip()]) - 1
               for name in os.listdir(user_files))
    run, states, _ = run_dag("ednet_ingest", conf={"source": os.path.join(source, "raw", "ednet"), "format": "kt1"})
    assert run.state == "success", states
    raw = _served_raw(local_lake)
    assert os.listdir(os.path.join(raw, "KT1")) == ["part-00000.csv"]
    record = json.load(open(os.path.join(raw, "_ingest.json")))
    assert record["consolidate"] and record["kt1"]["layout"] == "shards" and record["kt1"]["users"] == 40
    assert record["kt1"]["rows"] == rows
