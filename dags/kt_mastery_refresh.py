"""# kt_mastery_refresh

Nightly: mastery of every tutor user active since the last successful run,
into the DynamoDB table `kt-mastery` (docs/contracts.md §7). Logic: `kt.refresh`.

1. **sync_history**: locally the lake's answer events are loaded into
   `kt-history` (on aws the tutor writes it; nothing to do).
2. **build_inputs**: users with answers since the watermark (the `by_day`
   index of `kt-history`) as JSON Lines under `inference/batch/<date>/input/`,
   each with the model state stored on their `kt-mastery` row and only the
   answers since (or, without a state of the promoted model, or after a late
   answer, their whole history), and the transform request for the promoted model.
3. **batch_transform**: `SageMakerTransformOperator` on aws, the local transform
   runner locally (same request); skipped when nobody was active.
4. **load_mastery**: conditional, batched writes into `kt-mastery`, each row
   with its new state (never an older `as_of` over a newer one; throttled
   writes retried with backoff); the watermark moves only after all of them.

A failed or repeated run loses nothing and duplicates nothing: the watermark
stays until the load finishes, and rewriting the same evidence is a no-op.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import TriggerRule, chain, dag, get_current_context, task

from kt import runtime

DAG_ID = "kt_mastery_refresh"


@dag(
    dag_id=DAG_ID,
    schedule="0 2 * * *",  # nightly
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["kt"],
    doc_md=__doc__,
    max_active_runs=1,  # two refreshes must not move the watermark past each other
    dagrun_timeout=timedelta(hours=4),
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=2),
        "on_failure_callback": runtime.on_failure,
    },
)
def kt_mastery_refresh():
    @task
    def sync_history() -> int:
        """Locally: kt-history from the lake's answer events (idempotent)."""
        return runtime.sync_history(runtime.task_settings())

    @task(multiple_outputs=True)
    def build_inputs() -> dict:
        """Active users -> JSON Lines input, and the transform request of the promoted model."""
        context = get_current_context()
        return runtime.prepare_refresh(runtime.task_settings(), runtime.run_date(context), runtime.run_id(context))

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def any_active_users(users: int) -> bool:
        """Skip only the transform when nobody was active; the load still moves the watermark."""
        return users > 0

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def load_mastery(last_day: str) -> dict:
        """Conditional writes into kt-mastery, then the watermark."""
        return runtime.load_mastery(runtime.task_settings(), runtime.run_date(get_current_context()), last_day)

    inputs = build_inputs()
    batch_transform = runtime.operator(
        "transform",
        task_id="batch_transform",
        config=inputs["transform"],
        wait_for_completion=True,
        check_interval=60,
        max_ingestion_time=2 * 3600,
    )
    chain(sync_history(), inputs, any_active_users(inputs["users"]), batch_transform, load_mastery(inputs["last_day"]))


kt_mastery_refresh()
