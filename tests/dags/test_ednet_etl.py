"""ednet_etl end to end in the local runtime: the Glue script on local Spark, the manifest checked, processed announced."""

from __future__ import annotations

import json
import os

import pytest
from dagtest import asset_events, copy_lake, queued_by_asset, run_dag

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
