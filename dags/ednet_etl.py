"""# ednet_etl

Runs on every update of the **raw asset** (`raw/ednet/`, announced by
`ednet_ingest`): the Glue job `ednet-preprocessor` (`glue/ednet_preprocessor.py`)
turns the current version of the raw EdNet/Riiid files into a new version of
`processed/ednet/` (sequences, skills, manifest, quarantine; docs/contracts.md
§3, §4) and switches `processed/ednet/_current.json` to it once its manifest
checks out: a failed run leaves the previous dataset served.

- **aws**: `GlueJobOperator` starts the job Terraform created, with this run's
  `--raw`, `--processed`, `--format` and `--skill-mappings`.
- **local**: the same script, with the same arguments, on local Spark
  (`plugins/kt_local_operators.py`).

The version the pointer now names is checked again (the manifest's accounting
`rows_in = rows_out + lectures + quarantined`, the pointer's checksum of it, and
that this run moved the pointer) before the **processed asset** is announced,
on which `dkt_train` runs.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import chain, dag, task

from kt import runtime

DAG_ID = "ednet_etl"
RAW = runtime.lake_asset("raw")
PROCESSED = runtime.lake_asset("processed")


@dag(
    dag_id=DAG_ID,
    schedule=[RAW],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["kt"],
    doc_md=__doc__,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=4),
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=3),
        "on_failure_callback": runtime.on_failure,
    },
)
def ednet_etl():
    @task(multiple_outputs=True)
    def glue_arguments() -> dict:
        """Job name, script and --raw/--processed/--format of this lake (kt.runtime.glue_job)."""
        return runtime.glue_job(runtime.task_settings())

    glue = glue_arguments()
    run_glue_job = runtime.operator(
        "glue",
        task_id="run_glue_job",
        job_name=glue["job_name"],
        script_location=glue["script_location"],
        script_args=glue["script_args"],
        iam_role_name=glue["iam_role_name"],
        s3_bucket=glue["s3_bucket"],
        create_job_kwargs=glue["create_job_kwargs"],
        replace_script_file=True,  # a rerun re-uploads a local script instead of failing on the existing key
        wait_for_completion=True,
    )

    @task(outlets=[PROCESSED])
    def check_manifest(pointer_before: str | None) -> dict:
        """Refuse an ETL output that was not switched to or does not add up; else announce the processed asset."""
        return runtime.check_manifest(runtime.task_settings(), pointer_before)

    chain(glue, run_glue_job, check_manifest(glue["pointer_before"]))


ednet_etl()
