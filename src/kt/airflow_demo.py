"""The `kt demo` pipeline run by the real Airflow DAGs (`make demo`): `airflow dags test`, local runtime.

    python -m kt.airflow_demo            # from the repository root, in the project's venv

1. simulated students (kt.sample) are written outside the lake, as a download would be;
2. Airflow gets its own home under .kt/airflow (SQLite metadata DB, `airflow db
   migrate`), this repo's dags/ and plugins/, and KT_RUNTIME=local; a moto server
   (the one at AWS_ENDPOINT_URL, else one started here) holds DynamoDB and
   CloudWatch for the whole demo;
3. the DAGs run one after the other with `airflow dags test`: ednet_ingest
   (the sample as the source) -> ednet_etl (the Glue script on local Spark) ->
   dkt_train (training job on the local runner, evaluation, gate, deploy,
   promote) -> kt_mastery_refresh twice (the rerun changes nothing) ->
   kt_drift_check. The commands go through Airflow's own CLI parser and
   command functions, in this one process: Airflow, its in-process execution
   API and torch start once, not once per DAG (that alone took longer than the
   ETL on this 2-core machine);
4. the summary of `kt demo` is printed from what the DAGs left in the lake and
   the tables, with the chart of the busiest tutor user.

Each DAG's full log goes to .kt/airflow/demo-logs/<dag_id>.log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from typing import Iterator

from kt import aws, demo, dynamo, evaluate, lake, pipeline, refresh, runtime, sample
from kt.config import Settings, load_settings

log = logging.getLogger(__name__)

STEPS = 8
RUN_DATE = demo.RUN_DATE


def airflow_env(settings: Settings, home: str) -> dict[str, str]:
    """The environment of the demo's Airflow: its home, this repo's DAGs, the local runtime, the moto server."""
    return {
        "AIRFLOW_HOME": home,
        "AIRFLOW__CORE__DAGS_FOLDER": os.path.join(runtime.REPO, "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": os.path.join(runtime.REPO, "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{os.path.join(home, 'airflow.db')}",
        "KT_RUNTIME": "local",
        "KT_LAKE": os.path.abspath(settings.lake),
        "AWS_ENDPOINT_URL": settings.aws_endpoint_url or "",
        "AWS_DEFAULT_REGION": settings.region,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
    }


@contextlib.contextmanager
def output_to(path: str) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so child processes too) to a file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "w") as log_file:
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def airflow(args: list[str], log_path: str) -> float:
    """`airflow <args>` (Airflow's CLI parser and command) in this process, output to log_path; its seconds."""
    from airflow.cli import cli_parser

    parsed = cli_parser.get_parser().parse_args(args)
    started = time.monotonic()
    failure: BaseException | None = None
    with output_to(log_path):
        try:
            parsed.func(parsed)
        except (Exception, SystemExit) as e:  # `dags test` ends a failed run with SystemExit("DagRun failed")
            failure = e
    if failure is not None:
        with open(log_path) as f:
            tail = f.readlines()[-40:]
        raise SystemExit(f"`airflow {' '.join(args)}` failed ({failure}); last lines of {log_path}:\n{''.join(tail)}")
    return time.monotonic() - started


def dags_test(dag_id: str, logs: str, conf: dict | None = None, logical_date: str = RUN_DATE,
              log_name: str | None = None) -> float:
    """`airflow dags test <dag_id> <date>`: one real run of the DAG, every task in this machine's runtime."""
    args = ["dags", "test", dag_id, logical_date]
    if conf is not None:
        args += ["-c", json.dumps(conf)]
    seconds = airflow(args, os.path.join(logs, f"{log_name or dag_id}.log"))
    print(f"    airflow dags test {dag_id}: success ({seconds:.0f}s)", flush=True)
    return seconds


def _mastery_stamps(local: Settings) -> dict[str, str]:
    client = aws.client(local, "dynamodb")
    return {r["user_id"]: r["updated_at"] for r in dynamo.scan_all(client, local.mastery_table)}


def _input_users(settings: Settings) -> int:
    uris = lake.uris(settings, RUN_DATE)
    return sum(len(lake.read_text(u).splitlines()) for u in lake.list_files(uris["batch_input"]))


def main(users: int = 2000, skills: int = 16, seed: int = 7, epochs: int = 8) -> int:
    """The whole demo (the defaults of `kt demo`); returns 0 or exits with the failing command's log."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the embedded moto server logs every request
    settings = dataclasses.replace(load_settings(), runtime="local")
    if lake.is_s3(settings.lake):
        raise SystemExit("the demo writes a fresh local lake: unset KT_LAKE or give it a directory")
    if not os.path.isdir(os.path.join(runtime.REPO, "dags")):
        raise SystemExit(f"no dags/ next to {runtime.REPO}/src: run the demo from the repository's editable install")
    started = time.monotonic()
    base = os.path.dirname(os.path.abspath(settings.lake))
    home, source = os.path.join(base, "airflow"), os.path.join(base, "demo-source")
    logs = os.path.join(home, "demo-logs")
    for path in (settings.lake, pipeline.sagemaker_work_dir(settings), source):
        shutil.rmtree(path, ignore_errors=True)

    t = demo._step(1, STEPS, f"simulating {users} students on {skills} skills -> {source} (the 'download')")
    counts = sample.generate(source, users=users, skills=skills, seed=seed)
    for part in ("events", "sample"):  # the tutor's answers and the simulator's truth are not part of the download
        shutil.copytree(os.path.join(source, part), os.path.join(settings.lake, part))
    print(f"    {counts['answers']:,} answers, {counts['lectures']:,} lectures, {counts['malformed']} malformed rows, "
          f"{counts['tutor_answers']:,} tutor answers ({time.monotonic() - t:.0f}s)")

    with aws.local_aws(settings) as local:
        t = demo._step(2, STEPS, f"Airflow home {home} (SQLite), moto at {local.aws_endpoint_url}")
        os.environ.update(airflow_env(local, home))  # before Airflow is imported: it reads its config once
        airflow(["db", "migrate"], os.path.join(logs, "db-migrate.log"))
        print(f"    airflow db migrate ({time.monotonic() - t:.0f}s)")

        demo._step(3, STEPS, "ednet_ingest: the sample's raw files -> raw/ednet/ (checksums, raw asset)")
        dags_test("ednet_ingest", logs, {"source": os.path.join(source, "raw", "ednet"), "format": "riiid"})

        demo._step(4, STEPS, "ednet_etl: glue/ednet_preprocessor.py on local Spark -> processed/ednet/")
        dags_test("ednet_etl", logs)
        manifest = json.loads(lake.read_text(lake.join(lake.dataset(local, "processed"), "_manifest.json")))
        print(f"    rows in {manifest['rows_in']:,} = out {manifest['rows_out']:,} + lectures {manifest['lectures']:,} "
              f"+ quarantined {manifest['quarantined']} {manifest['quarantined_by_reason']}")

        demo._step(5, STEPS, "dkt_train: training job on the local runner, evaluation, gate, endpoint, promotion")
        dags_test("dkt_train", logs, {"hyperparameters": {**pipeline.DEMO_HYPERPARAMETERS, "epochs": epochs}})
        current = pipeline.current_model(local)
        # The gate read the training job's own report; sample data also has the simulator's oracle, which is not a
        # job channel, so the demo scores the promoted model once more here to show it (kt evaluate does the same).
        report = pipeline.evaluate_model(local, current["model_data_url"])
        print(f"    promoted {current['job_name']}: {current['model_data_url']}")
        print("    " + evaluate.format_report(report).replace("\n", "\n    "))

        demo._step(6, STEPS, f"kt_mastery_refresh for {RUN_DATE} into DynamoDB {local.mastery_table}, then once more")
        dags_test("kt_mastery_refresh", logs)
        first = _mastery_stamps(local)
        active = _input_users(local)
        dags_test("kt_mastery_refresh", logs, log_name="kt_mastery_refresh-rerun")
        second = _mastery_stamps(local)
        changed = sum(1 for u, stamp in second.items() if first.get(u) != stamp)
        days = refresh.days_to_refresh(None, RUN_DATE)
        synced = len(refresh.read_answer_events(local.lake))
        outcome = demo.Outcome(
            manifest, report,
            pipeline.RefreshSummary(RUN_DATE, days, synced, active, len(first), 0, 0),
            pipeline.RefreshSummary(RUN_DATE, days, synced, 0, changed, len(second) - changed, 0),
        )

        demo._step(7, STEPS, f"kt_drift_check for {RUN_DATE}: PSI of the tutor answers vs the model's reference")
        dags_test("kt_drift_check", logs)
        drift = json.loads(lake.read_text(lake.join(lake.uris(local)["drift"], f"{RUN_DATE}.json")))
        score = "n/a" if drift["drift_score"] is None else f"{drift['drift_score']:.3f}"
        print(f"    DriftScore {score} (threshold {drift['threshold']}): {drift['status']}"
              + (f"; {'; '.join(drift['reasons'])} -> dkt_train triggered" if drift["retrain"] else ""))
        logging.getLogger("kt").setLevel(logging.WARNING)  # Airflow's console logging is on now; keep the summary clean
        user = demo.chart_busiest_user(local, 8, STEPS)
    demo.print_summary(settings, outcome, user, started)
    print(f"airflow    {home} (DAG logs in {logs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
