"""Helpers of the DAG tests: build a lake, parse dags/, run one DAG with dag.test() and read its task states."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from datetime import timedelta

DESCRIBES_RUNNING = 3  # conftest's running_jobs: its SageMaker jobs say InProgress to their first describes
PARSE_TIMES: dict[str, float] = {}  # DAG file -> seconds, filled by test_dag_integrity, printed at the end
DAGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "dags")


def copy_lake(source: str, target: str, *parts: str) -> None:
    """Copy some top-level parts (raw, processed, events, sample, models) of a lake."""
    for part in parts:
        if os.path.exists(os.path.join(source, part)):
            shutil.copytree(os.path.join(source, part), os.path.join(target, part), dirs_exist_ok=True)


def promote_model(lake_root: str, model_dir: str, job_name: str = "tiny-model") -> str:
    """Put a trained model in the lake as SageMaker would and record it as current.json; return its URI."""
    from kt import artifact, pipeline
    from kt.config import load_settings

    url = f"{lake_root}/models/dkt/{job_name}/output/model.tar.gz"
    artifact.pack(model_dir, url)
    pipeline.promote(load_settings(), job_name, url, {"dkt": {"auc": 0.0}})
    return url


def job_output(model_dir: str, processed: str, url: str, work: str, current_url: str | None = None) -> str:
    """What a training job writes at url: its model, scored by kt.job_evaluation on processed's test split
    (and the promoted model at current_url, the job's ``current`` channel, when there is one)."""
    from kt import artifact, job_evaluation, lake
    from kt.config import TrainingPaths

    scored = os.path.join(work, "job-model")
    shutil.copytree(model_dir, scored)
    channel = ""
    if current_url:
        channel = os.path.join(work, "current")
        os.makedirs(channel, exist_ok=True)
        shutil.copy(lake.stage(current_url, os.path.join(work, "staged")), os.path.join(channel, "model.tar.gz"))
    job_evaluation.evaluate_job(TrainingPaths(train_channel=processed, model_dir=scored, current_channel=channel))
    artifact.pack(scored, url)
    return url


def refuse_dataset_reads(monkeypatch) -> None:
    """Reading a split in this process (the Airflow worker) fails: only the training job may load the dataset."""
    from kt import data, evaluate

    def refuse(*args, **kwargs):
        raise AssertionError(f"the worker read the dataset: read_sequences{args}")

    monkeypatch.setattr(data, "read_sequences", refuse)
    monkeypatch.setattr(evaluate, "read_sequences", refuse)


def load_dag(dag_id: str, retries: int | None = None):
    """Parse dags/ with the current environment (KT_RUNTIME decides the operators) and return one DAG."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=DAGS_DIR)
    assert bag.import_errors == {}, bag.import_errors
    dag = bag.get_dag(dag_id)
    for task in dag.tasks:  # tests retry and poll at once; the DAGs wait minutes between tries and polls
        task.retry_delay = timedelta(0)
        if retries is not None:  # a test of a failure that retrying cannot fix need not wait for the retries
            task.retries = retries
        if hasattr(task, "check_interval"):  # SageMaker's operators and triggers
            task.check_interval = 1
        if hasattr(task, "waiter_delay"):  # Glue's trigger
            task.waiter_delay = 1
    return dag


def run_dag(dag_id: str, logical_date=None, conf: dict | None = None, run_after=None, retries: int | None = None):
    """dag.test() one run; return (dag run, {task_id: state}, seconds)."""
    import pendulum

    dag = load_dag(dag_id, retries)
    started = time.monotonic()
    run = dag.test(logical_date=logical_date or pendulum.datetime(2026, 11, 25, tz="UTC"), run_conf=conf,
                   run_after=run_after)
    seconds = time.monotonic() - started
    return run, task_states(run), seconds


def task_states(run) -> dict[str, str]:
    from airflow.utils.session import create_session

    with create_session() as session:
        return {ti.task_id: getattr(ti.state, "value", ti.state)
                for ti in run.get_task_instances(session=session)}


def try_numbers(run) -> dict[str, int]:
    from airflow.utils.session import create_session

    with create_session() as session:
        return {ti.task_id: ti.try_number for ti in run.get_task_instances(session=session)}


def asset_events(name: str) -> int:
    """How many events the asset of that name (its URI: kt.runtime.lake_asset) has received."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        query = (select(func.count()).select_from(AssetEvent)
                 .join(AssetModel, AssetEvent.asset_id == AssetModel.id).where(AssetModel.name == name))
        return session.scalar(query)


def queued_by_asset(dag_id: str) -> int:
    """Asset-triggered runs waiting for the scheduler (rows of asset_dag_run_queue) for a DAG."""
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        query = select(func.count()).select_from(AssetDagRunQueue).where(AssetDagRunQueue.target_dag_id == dag_id)
        return session.scalar(query)


def dag_runs(dag_id: str) -> list[tuple[str, dict]]:
    """(run_id, conf) of every run of a DAG."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return [(r.run_id, r.conf) for r in session.scalars(select(DagRun).where(DagRun.dag_id == dag_id))]


def write_events(lake_root: str, histories: list[tuple[list[int], list[int]]], day: str) -> int:
    """Tutor answers (one user per history, a second apart) in the lake's events/ on one day."""
    import json

    lines = []
    for u, (skills, correct) in enumerate(histories):
        for i, (s, c) in enumerate(zip(skills, correct)):
            stamp = f"{day}T10:{i // 60 % 60:02d}:{i % 60:02d}.{u % 1000:03d}Z"
            lines.append(json.dumps({"user_id": f"tutor-{u}", "answer_id": f"{u}-{i}", "skill_id": int(s),
                                     "correct": int(c), "answered_at": stamp}))
    path = os.path.join(lake_root, "events", "answers", f"day={day}", "part.jsonl")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return len(lines)


@dataclasses.dataclass(frozen=True)
class Execution:
    """One execution of a task in a run_dag_deferring run: how it started and the state it ended in."""

    try_number: int
    resumed_with: dict | None  # the trigger's event an execution resumed with (None: a fresh start)
    state: str  # the TI's state when the execution returned (deferred: its process is gone)
    trigger: str | None  # the trigger class a deferred execution left in the trigger table
    default_pool: dict | None  # the default pool's stats while it was deferred
    trigger_log: str | None  # where a triggerer writes that trigger's log, but for its job id: {}

    def triggerer_log(self, triggerer_id: int) -> str:
        """What the triggerer of that Job id logged while it ran this execution's trigger ("" if it did not)."""
        path = self.trigger_log.format(triggerer_id)
        return open(path).read() if os.path.exists(path) else ""


def run_dag_deferring(dag_id: str, **kwargs) -> tuple:
    """run_dag, with deferred tasks left to a real triggerer process (conftest's ``triggerer`` fixture).

    dag.test() runs each trigger inline, in the test process, when a task
    defers; here a task that defers returns deferred, its process of work ends,
    and dag.test()'s loop waits (polling the metadata DB each second) until the
    triggerer has fired the trigger and set the task scheduled, then runs its
    ``execute_complete``. Returns (dag run, states, {task_id: [Execution, ...]}).
    """
    from unittest import mock

    import airflow.sdk.definitions.dag as dag_module
    from airflow.models.pool import Pool
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import Trigger
    from airflow.sdk.serde import deserialize
    from airflow.utils.session import create_session

    run_inline = dag_module._run_task
    executions: dict[str, list[Execution]] = {}

    def run_task(*, ti, task, run_triggerer: bool = False):
        resumed_with = deserialize(ti.next_kwargs)["event"] if ti.next_method and ti.next_kwargs else None
        result = run_inline(ti=ti, task=task, run_triggerer=False)
        with create_session() as session:
            row = session.get(TaskInstance, ti.id)
            state = getattr(row.state, "value", row.state)
            trigger = session.get(Trigger, row.trigger_id).classpath if state == "deferred" else None
            pool = Pool.slots_stats(session=session)[row.pool] if state == "deferred" else None
        log = (f"{os.environ['AIRFLOW_HOME']}/logs/dag_id={ti.dag_id}/run_id={ti.run_id}/task_id={ti.task_id}/"
               f"attempt={ti.try_number}.log.trigger.{{}}.log")  # Airflow's default log_filename_template
        executions.setdefault(ti.task_id, []).append(Execution(
            ti.try_number, resumed_with, state, trigger, dict(pool) if pool else None, log if trigger else None))
        return result

    with mock.patch.object(dag_module, "_run_task", run_task):
        run, states, _ = run_dag(dag_id, **kwargs)
    return run, states, executions


def assert_deferred_then_succeeded(executions: dict, task_id: str, trigger: str, triggerer: int) -> None:
    """The task deferred to ``trigger`` holding no pool slot, the triggerer of that Job id ran the trigger until
    it fired, and the task resumed from its event, in the same try, to success."""
    deferred, resumed = executions[task_id]
    assert deferred.state == "deferred" and deferred.trigger.rsplit(".", 1)[1] == trigger, deferred
    assert "Trigger fired event" in deferred.triggerer_log(triggerer), deferred.trigger_log
    assert deferred.default_pool["running"] == 0 and deferred.default_pool["deferred"] >= 1, deferred.default_pool
    assert deferred.resumed_with is None
    assert resumed.resumed_with["status"] == "success" and resumed.state == "success", resumed
    assert deferred.try_number == resumed.try_number == 1
