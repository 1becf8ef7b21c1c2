"""`kt demo` (`make demo`): the whole pipeline on one machine, from simulated students to a chart.

sample data -> reference ETL -> DKT training (the CreateTrainingJob request,
run by the local runner) -> evaluation vs baselines and the oracle -> promotion
-> nightly refresh (kt-history -> batch transform -> conditional writes into
kt-mastery on an embedded moto DynamoDB) -> spider chart -> summary.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections import Counter
from datetime import datetime, timezone

from kt import aws, aws_requests, dynamo, etl, evaluate, lake, pipeline, sample
from kt.config import Settings

log = logging.getLogger(__name__)

RUN_DATE = "2026-11-25"  # the day after the simulated tutor activity (kt.sample.TUTOR_FIRST_DAY + 3)


def _step(n: int, total: int, text: str) -> float:
    print(f"\n[{n}/{total}] {text}", flush=True)
    return time.monotonic()


def run(settings: Settings, users: int = 2000, skills: int = 16, seed: int = 7, epochs: int = 8) -> int:
    if lake.is_s3(settings.lake):
        raise SystemExit("kt demo writes a fresh local lake: give --lake a directory (or unset KT_LAKE)")
    started = time.monotonic()
    work_dir = pipeline.sagemaker_work_dir(settings)
    for path in (settings.lake, work_dir):
        shutil.rmtree(path, ignore_errors=True)
    uris = lake.uris(settings)
    total = 6

    t = _step(1, total, f"simulating {users} students on {skills} skills -> {uris['raw']}")
    counts = sample.generate(settings.lake, users=users, skills=skills, seed=seed)
    print(f"    {counts['answers']:,} answers, {counts['lectures']:,} lectures, {counts['malformed']} malformed rows, "
          f"{counts['tutor_answers']:,} tutor answers ({time.monotonic() - t:.0f}s)")

    t = _step(2, total, f"ETL (python engine) -> {uris['processed']}")
    manifest = etl.publish(uris["processed"], lambda version: etl.run_etl(uris["raw"], version),
                           settings.keep_versions)
    print(f"    rows in {manifest['rows_in']:,} = out {manifest['rows_out']:,} + lectures {manifest['lectures']:,} "
          f"+ quarantined {manifest['quarantined']} {manifest['quarantined_by_reason']} ({time.monotonic() - t:.0f}s)")

    run = aws_requests.run_id(datetime.now(timezone.utc))
    hp = {**pipeline.DEMO_HYPERPARAMETERS, "epochs": epochs}
    t = _step(3, total, f"training DKT: CreateTrainingJob {aws_requests.names(settings, run)['training_job']} on the local runner")
    describe = pipeline.train_local(settings, run, hp, work_dir)
    model_url = describe["ModelArtifacts"]["S3ModelArtifacts"]
    print(f"    {model_url} ({time.monotonic() - t:.0f}s)")

    t = _step(4, total, "evaluating on the test split, next to the baselines and the oracle")
    report = pipeline.evaluate_model(settings, model_url)
    print("    " + evaluate.format_report(report).replace("\n", "\n    "))
    pipeline.promote(settings, describe["TrainingJobName"], model_url, report)

    t = _step(5, total, f"nightly mastery refresh for {RUN_DATE} into DynamoDB {settings.mastery_table}")
    with aws.local_aws(settings) as local:
        refreshed = pipeline.refresh_local(local, RUN_DATE, run, work_dir)
        again = pipeline.refresh_local(dataclasses.replace(local), RUN_DATE, run, work_dir)
        user = chart_busiest_user(local, 6, total)
    print_summary(settings, Outcome(manifest, report, refreshed, again), user, started)
    return 0


@dataclasses.dataclass
class Outcome:
    """What the pipeline produced: the ETL manifest, the test report, the refresh and its rerun."""

    manifest: dict
    report: dict
    refresh: pipeline.RefreshSummary
    again: pipeline.RefreshSummary


@dataclasses.dataclass
class UserChart:
    """The busiest tutor user's kt-mastery row, the sources of all rows, and where the chart went."""

    user_id: str
    row: dict
    sources: dict[str, int]
    chart_path: str


def chart_busiest_user(local: Settings, step: int, total: int) -> UserChart:
    """Draw the spider chart of the tutor user with the most answers in kt-history."""
    client = aws.client(local, "dynamodb")
    sources = Counter(r["source"] for r in dynamo.scan_all(client, local.mastery_table))
    history = dynamo.scan_all(client, local.history_table)
    busiest = Counter(h["user_id"] for h in history).most_common(1)[0][0]
    chart_path = os.path.join(os.path.dirname(os.path.abspath(local.lake)), "knowledge_state.png")
    _step(step, total, f"spider chart of {busiest}")
    pipeline.user_chart(local, busiest, chart_path)
    print(f"    {chart_path}")
    return UserChart(busiest, dynamo.get_mastery(client, local.mastery_table, busiest), dict(sources), chart_path)


def print_summary(settings: Settings, outcome: Outcome, user: UserChart, started: float) -> None:
    manifest, report, refreshed, again = outcome.manifest, outcome.report, outcome.refresh, outcome.again
    dkt, oracle = report["dkt"], report.get("oracle")
    row = user.row
    print("\n=== summary ===")
    print(f"ETL        rows in {manifest['rows_in']:,}, out {manifest['rows_out']:,}, lectures {manifest['lectures']:,}, "
          f"quarantined {manifest['quarantined']}")
    print(f"model      DKT test AUC {dkt['auc']:.4f} | base rate {report['base_rate']['auc']:.4f} | "
          f"Bayesian {report['bayes']['auc']:.4f}" + (f" | oracle {oracle['auc']:.4f} (gap {oracle['auc'] - dkt['auc']:.4f})" if oracle else ""))
    print(f"refresh    {refreshed.users} tutor users active {refreshed.days[0]}..{refreshed.days[-1]}: {refreshed.written} "
          f"written to {settings.mastery_table} ({user.sources}); rerun wrote {again.written}, "
          f"skipped {again.skipped_stale} unchanged")
    print(f"user       {user.user_id}: weakest skill {row['next_skill_recommendation']}, predicted accuracy "
          f"{row['predicted_accuracy']:.2f}, topics {', '.join(f'{k} {v:.2f}' for k, v in row['topic_mastery'].items())}")
    print(f"chart      {user.chart_path}")
    print(f"lake       {os.path.abspath(settings.lake)}   ({time.monotonic() - started:.0f}s in all)")
