"""ednet_ingest end to end in the local runtime: files placed, the raw asset announced once, a rerun a no-op."""

from __future__ import annotations

import json
import os
import zipfile

import pytest
from dagtest import asset_events, queued_by_asset, run_dag

from kt.runtime import lake_asset_uri

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
    raw = os.path.join(local_lake, "raw", "ednet")
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


def test_kt1_is_ingested_as_shards_that_the_etl_dag_reads(local_lake, tmp_path):
    """The trigger form's defaults consolidate KT1; ednet_etl (the Glue script on local Spark) reads the shards
    and writes what the reference ETL writes from the original per-user files."""
    from kt import etl, sample

    source = str(tmp_path / "kt1")
    sample.generate(source, users=40, skills=8, fmt="kt1", seed=3, tutor_users=0)
    reference = etl.run_etl(os.path.join(source, "raw", "ednet"), str(tmp_path / "reference"), progress=False)

    run, states, _ = run_dag("ednet_ingest", conf={"source": os.path.join(source, "raw", "ednet"), "format": "kt1"})
    assert run.state == "success", states
    assert os.listdir(os.path.join(local_lake, "raw", "ednet", "KT1")) == ["part-00000.csv"]
    run, states, _ = run_dag("ednet_etl")
    assert run.state == "success", states
    manifest = json.load(open(os.path.join(local_lake, "processed", "ednet", "_manifest.json")))
    for key in ("rows_in", "rows_out", "quarantined_by_reason", "users_by_split", "rows_by_split"):
        assert manifest[key] == reference[key], key
