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
    uris = aws_requests.lake_uris(settings)
    total = 6

    t = _step(1, total, f"simulating {users} students on {skills} skills -> {uris['raw']}")
    counts = sample.generate(settings.lake, users=users, skills=skills, seed=seed)
    print(f"    {counts['answers']:,} answers, {counts['lectures']:,} lectures, {counts['malformed']} malformed rows, "
          f"{counts['tutor_answers']:,} tutor answers ({time.monotonic() - t:.0f}s)")

    t = _step(2, total, f"ETL (python engine) -> {uris['processed']}")
    manifest = etl.run_etl(uris["raw"], uris["processed"])
    print(f"    rows in {manifest['rows_in']:,} = out {manifest['rows_out']:,} + lectures {manifest['lectures']:,} "
          f"+ quarantined {manifest['quarantined']} {manifest['quarantined_by_reason']} ({time.monotonic() - t:.0f}s)")

    run = aws_requests.run_id(datetime.now(timezone.utc))
    hp = {**pipeline.DEMO_HYPERPARAMETERS, "epochs": epochs}
    t = _step(3, total, f"training DKT: CreateTrainingJob {aws_requests.names(run)['training_job']} on the local runner")
    describe = pipeline.train_local(settings, run, hp, work_dir)
    model_url = describe["ModelArtifacts"]["S3ModelArtifacts"]
    print(f"    {model_url} ({time.monotonic() - t:.0f}s)")

    t = _step(4, total, "evaluating on the test split, next to the baselines and the oracle")
    report = pipeline.evaluate_model(settings, model_url)
    print("    " + evaluate.format_report(report).replace("\n", "\n    "))
    pipeline.promote(settings, describe["TrainingJobName"], model_url, report)

    t = _step(5, total, f"nightly mastery refresh for {RUN_DATE} into DynamoDB {settings.mastery_table}")
    with aws.local_aws(settings) as local:
        summary = pipeline.refresh_local(local, RUN_DATE, run, work_dir)
        again = pipeline.refresh_local(dataclasses.replace(local), RUN_DATE, run, work_dir)
        client = aws.client(local, "dynamodb")
        rows = dynamo.scan_all(client, local.mastery_table)
        sources = Counter(r["source"] for r in rows)
        history = dynamo.scan_all(client, local.history_table)
        busiest = Counter(h["user_id"] for h in history).most_common(1)[0][0]
        chart_path = os.path.join(os.path.dirname(os.path.abspath(settings.lake)), "knowledge_state.png")
        t = _step(6, total, f"spider chart of {busiest}")
        pipeline.user_chart(local, busiest, chart_path)
        busiest_row = dynamo.get_mastery(client, local.mastery_table, busiest)
    print(f"    {chart_path}")

    dkt, oracle = report["dkt"], report.get("oracle")
    print("\n=== summary ===")
    print(f"ETL        rows in {manifest['rows_in']:,}, out {manifest['rows_out']:,}, lectures {manifest['lectures']:,}, "
          f"quarantined {manifest['quarantined']}")
    print(f"model      DKT test AUC {dkt['auc']:.4f} | base rate {report['base_rate']['auc']:.4f} | "
          f"Bayesian {report['bayes']['auc']:.4f}" + (f" | oracle {oracle['auc']:.4f} (gap {oracle['auc'] - dkt['auc']:.4f})" if oracle else ""))
    print(f"refresh    {summary.users} tutor users active {summary.days[0]}..{summary.days[-1]}: {summary.written} written "
          f"to {settings.mastery_table} ({dict(sources)}); rerun wrote {again.written}, skipped {again.skipped_stale} unchanged")
    print(f"user       {busiest}: weakest skill {busiest_row['next_skill_recommendation']}, predicted accuracy "
          f"{busiest_row['predicted_accuracy']:.2f}, topics {', '.join(f'{k} {v:.2f}' for k, v in busiest_row['topic_mastery'].items())}")
    print(f"chart      {chart_path}")
    print(f"lake       {os.path.abspath(settings.lake)}   ({time.monotonic() - started:.0f}s in all)")
    return 0
