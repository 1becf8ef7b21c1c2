"""ednet_etl end to end in the local runtime: the Glue script on local Spark, the manifest checked, processed announced."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from dagtest import asset_events, copy_lake, queued_by_asset, run_dag

from kt import lake
from kt.runtime import lake_asset_uri

pytestmark = pytest.mark.slow


def test_the_glue_script_turns_raw_into_processed_and_announces_it(local_lake, sample_lake):
    copy_lake(sample_lake, local_lake, "raw")
    before = asset_events(lake_asset_uri("processed"))
    run, states, _ = run_dag("ednet_etl")
    assert run.state == "success", states
    assert set(states.values()) == {"success"}
    pointer = json.load(open(os.path.join(local_lake, "processed", "ednet", "_current.json")))  # switched by the job
    manifest = json.load(open(os.path.join(local_lake, "processed", "ednet", pointer["version"], "_manifest.json")))
    reference = json.load(open(os.path.join(sample_lake, "processed", "ednet", "_manifest.json")))
    for key in ("rows_in", "rows_out", "lectures", "quarantined", "users"):
        assert manifest[key] == reference[key], key  # the Spark job and the reference ETL agree
    assert manifest.get("engine", "spark") == "spark"
    assert asset_events(lake_asset_uri("processed")) == before + 1
    assert queued_by_asset("dkt_train") >= 1  # training is scheduled on the processed asset


def test_a_failing_job_fails_the_run_and_announces_nothing(local_lake):
    os.makedirs(os.path.join(local_lake, "raw", "ednet"))  # no input files: the script fails
    before = asset_events(lake_asset_uri("processed"))
    run, states, _ = run_dag("ednet_etl", retries=0)
    assert run.state == "failed"
    assert states["run_glue_job"] == "failed" or states["glue_arguments"] == "failed"
    assert states["check_manifest"] in ("upstream_failed", None)
    assert asset_events(lake_asset_uri("processed")) == before


# A Glue job that "succeeds" with an output that loses a row: the sample's dataset as a new version whose
# manifest no longer adds up, switched to as the real job switches (kt.lake.switch).
LOSSY_JOB = """
import json, shutil, sys
from kt import lake
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
version = lake.new_version()
target = lake.join(args["--processed"], version)
shutil.copytree(sys.argv[0].rsplit("/", 1)[0] + "/good", target)
manifest = json.load(open(target + "/_manifest.json"))
manifest["rows_out"] -= 1
json.dump(manifest, open(target + "/_manifest.json", "w"))
lake.switch(args["--processed"], version, "_manifest.json", keep=3)
"""


def test_a_manifest_that_does_not_add_up_stops_the_run(local_lake, sample_lake, tmp_path, monkeypatch):
    copy_lake(sample_lake, local_lake, "raw")
    shutil.copytree(lake.current(os.path.join(sample_lake, "processed", "ednet")), tmp_path / "good")
    (tmp_path / "lossy_job.py").write_text(LOSSY_JOB)
    monkeypatch.setenv("KT_GLUE_SCRIPT_LOCATION", str(tmp_path / "lossy_job.py"))
    before = asset_events(lake_asset_uri("processed"))
    run, states, _ = run_dag("ednet_etl", retries=0)
    assert run.state == "failed"
    assert states["run_glue_job"] == "success" and states["check_manifest"] == "failed", states
    assert asset_events(lake_asset_uri("processed")) == before  # nothing announced: dkt_train is not started
