"""Helpers of the DAG tests: build a lake, parse dags/, run one DAG with dag.test() and read its task states."""

from __future__ import annotations

import os
import shutil
import time
from datetime import timedelta

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


def job_output(model_dir: str, processed: str, url: str, work: str) -> str:
    """What a training job writes at url: its model, scored by kt.job_evaluation on processed's test split."""
    from kt import artifact, job_evaluation
    from kt.config import TrainingPaths

    scored = os.path.join(work, "job-model")
    shutil.copytree(model_dir, scored)
    job_evaluation.evaluate_job(TrainingPaths(train_channel=processed, model_dir=scored))
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
        if hasattr(task, "check_interval"):
            task.check_interval = 1
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
