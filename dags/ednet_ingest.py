"""# ednet_ingest

Brings EdNet KT1 or Riiid files into a new version of the lake's `raw/ednet/`
(docs/contracts.md §3), switches `raw/ednet/_current.json` to it once every file
is in place (a failed run leaves the previous files served), then announces the
**raw asset**, on which `ednet_etl` runs.

Trigger it from the UI with:

- **source**: a local path, an `http(s)://` URL or an `s3://` URI of the files,
  a directory of them, or an archive (`.zip`, `.tar.gz`);
- **format**: `riiid` (`train.csv` + `questions.csv`) or `kt1` (per-user
  `u<id>.csv` files + `contents/questions.csv`).

- **consolidate_kt1** (on by default): pack KT1's ~784K small files into ~50
  CSV shards of 128 MB with a `user_id` column, which both ETL engines read
  (784K S3 objects are the main cost of a Glue run; see `kt.ingest`). Off keeps
  the per-user files.

Downloads resume where a failed attempt stopped (HTTP `Range`), checksums go to
the version's `_ingest.json`, archives are streamed (never extracted to disk), and
KT1's small files are written in parallel. Running it again on the same source
does nothing and announces nothing. Logic: `kt.ingest`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, chain, dag, task

from kt import runtime

DAG_ID = "ednet_ingest"
RAW = runtime.lake_asset("raw")


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["kt"],
    doc_md=__doc__,
    max_active_runs=1,
    params={
        "source": Param(type="string", minLength=1, title="Source",
                        description="local path, http(s):// URL or s3:// URI of the files, a directory or an archive"),
        "format": Param("riiid", enum=["riiid", "kt1"], title="Format",
                        description="riiid: train.csv + questions.csv; kt1: u<id>.csv files + contents/questions.csv"),
        "consolidate_kt1": Param(True, type="boolean", title="Consolidate KT1",
                                 description="KT1 user files -> ~128 MB CSV shards with a user_id column"),
    },
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "execution_timeout": timedelta(hours=6),
        "on_failure_callback": runtime.on_failure,
    },
)
def ednet_ingest():
    @task
    def ingest(params: dict | None = None) -> dict:
        """Fetch, check, unpack and place the source (a no-op when it is there already)."""
        from kt import ingest

        result = ingest.ingest(runtime.task_settings(), params["source"], params["format"], params["consolidate_kt1"])
        return {k: result[k] for k in ("changed", "raw", "source", "format", "kt1", "fetched")}

    @task.short_circuit
    def raw_changed(result: dict) -> bool:
        """Announce the raw asset only when raw/ednet/ changed, so a rerun starts no ETL."""
        return result["changed"]

    @task(outlets=[RAW])
    def announce_raw(result: dict) -> str:
        """The raw asset event: ednet_etl is scheduled on it."""
        return result["raw"]

    result = ingest()
    chain(result, raw_changed(result), announce_raw(result))


ednet_ingest()
