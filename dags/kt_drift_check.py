"""# kt_drift_check

Daily: compares the last week of tutor answers (`events/answers/`) with the
reference the promoted model recorded at training (`kt.drift`):

- population stability index (PSI) of the skill mix and of the correctness rate,
- PSI of the model's predictions against its validation-split histogram,
- AUC on the answers labelled since the model was trained.

The report goes to `monitoring/drift/<date>.json`; the metrics to CloudWatch,
namespace `KT`, metric `DriftScore` (the largest PSI), dimension
`EndpointName`: the Terraform alarm on it notifies the alarm topic. Past the
**threshold** (or with an AUC drop) the DAG triggers `dkt_train`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, chain, dag, get_current_context, task

from kt import runtime

DAG_ID = "kt_drift_check"
TRAIN_DAG_ID = "dkt_train"
THRESHOLD = 0.2  # = kt.drift.DEFAULT_THRESHOLD = Terraform's drift_threshold (the alarm)


@dag(
    dag_id=DAG_ID,
    schedule="0 3 * * *",  # daily, after the nightly refresh
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["kt"],
    doc_md=__doc__,
    max_active_runs=1,
    params={"threshold": Param(THRESHOLD, type="number", minimum=0, title="DriftScore threshold")},
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(minutes=30),
        "on_failure_callback": runtime.on_failure,
    },
)
def kt_drift_check():
    @task
    def check_drift(params: dict | None = None) -> dict:
        """PSIs and AUC of the recent answers; report to the lake, metrics to CloudWatch."""
        from kt import drift

        report = drift.check(runtime.task_settings(), runtime.run_date(get_current_context()), params["threshold"])
        return {k: report.get(k) for k in ("run_date", "status", "drift_score", "retrain", "reasons", "uri")}

    @task.short_circuit
    def retraining_due(report: dict) -> bool:
        """Trigger retraining only past the threshold."""
        return report["retrain"]

    report = check_drift()
    trigger_retraining = TriggerDagRunOperator(
        task_id="trigger_retraining",
        trigger_dag_id=TRAIN_DAG_ID,
        trigger_run_id="drift__{{ run_id }}",
        conf={"reason": "drift", "drift_report": "{{ ti.xcom_pull(task_ids='check_drift')['uri'] }}"},
        skip_when_already_exists=True,  # a retried task does not train twice
        wait_for_completion=False,
    )

    chain(report, retraining_due(report), trigger_retraining)


kt_drift_check()
