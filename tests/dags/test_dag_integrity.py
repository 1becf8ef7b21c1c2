"""Every DAG file imports cleanly and fast, on both runtimes, with no network and no lake access at parse time."""

from __future__ import annotations

import os
import socket
import time

import pytest
from dagtest import DAGS_DIR, PARSE_TIMES

# docs/contracts.md §8: dag_id -> what schedules it
DESIGN_DAGS = {
    "ednet_ingest": "manual",
    "ednet_etl": "raw asset",
    "dkt_train": "processed asset",
    "kt_drift_check": "daily",
    "kt_mastery_refresh": "nightly",
}
DAG_FILES = sorted(f for f in os.listdir(DAGS_DIR) if f.endswith(".py"))
AMAZON = "airflow.providers.amazon."


def _bag(monkeypatch, runtime: str, tmp_path):
    """DagBag of dags/ with sockets refused and a lake path that must not be created."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("KT_RUNTIME", runtime)
    monkeypatch.setenv("KT_LAKE", "s3://kt-test-lake" if runtime == "aws" else str(tmp_path / "lake"))

    def no_network(*args, **kwargs):
        raise OSError("DAG files must not touch the network while they are parsed")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    return DagBag(dag_folder=DAGS_DIR)


@pytest.fixture(scope="module")
def local_bag(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    try:
        yield _bag(mp, "local", tmp_path_factory.mktemp("integrity"))
    finally:
        mp.undo()


@pytest.mark.parametrize("runtime", ["local", "aws"])
def test_no_import_errors_and_nothing_touched(runtime, monkeypatch, tmp_path):
    bag = _bag(monkeypatch, runtime, tmp_path)
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == sorted(DESIGN_DAGS)
    assert not os.path.exists(tmp_path / "lake")  # nothing read or written while parsing


@pytest.mark.parametrize("rel_path", DAG_FILES, ids=DAG_FILES)
def test_each_file_imports_and_parses_fast(rel_path):
    """One DagBag per file, so a broken DAG names itself; the parse time is reported at the end."""
    from airflow.dag_processing.dagbag import DagBag

    started = time.perf_counter()
    bag = DagBag(dag_folder=os.path.join(DAGS_DIR, rel_path))
    PARSE_TIMES[rel_path] = time.perf_counter() - started
    assert bag.import_errors == {}, bag.import_errors
    assert len(bag.dags) == 1
    assert PARSE_TIMES[rel_path] < 5.0  # generous: first file pays the provider imports on a busy 2-core box


def test_dag_ids_tags_retries_docs_and_schedules_follow_design(local_bag):
    from airflow.sdk.definitions.timetables.assets import AssetTriggeredTimetable

    for dag_id, schedule in DESIGN_DAGS.items():
        dag = local_bag.get_dag(dag_id)
        module = os.path.basename(dag.fileloc)[:-3]
        assert module == dag_id  # one file per DAG, named after it
        assert dag.tags == {"kt"} or set(dag.tags) == {"kt"}
        assert dag.default_args.get("retries", 0) >= 2, dag_id
        assert dag.default_args.get("on_failure_callback") is not None, dag_id
        assert dag.catchup is False
        assert dag.doc_md and dag.doc_md.lstrip().startswith(f"# {dag_id}"), dag_id
        assert all(t.execution_timeout is not None for t in dag.tasks), dag_id
        if schedule.endswith("asset"):
            assert isinstance(dag.timetable, AssetTriggeredTimetable)
            (asset,) = dag.timetable.asset_condition.objects
            assert asset.uri.endswith(f"/{schedule.split()[0]}/ednet")
        elif schedule == "manual":
            assert dag.schedule is None
        else:  # daily / nightly cron
            assert dag.schedule.startswith("0 ") and dag.schedule.endswith(" * * *")


def test_the_runtime_picks_the_operators(monkeypatch, tmp_path):
    """aws: the Amazon provider's operators; local: ours, with the same config arguments."""
    aws_bag = _bag(monkeypatch, "aws", tmp_path)
    aws_tasks = {t.task_id: t for dag in aws_bag.dags.values() for t in dag.tasks}
    aws_ops = {task_id: type(t) for task_id, t in aws_tasks.items()}
    local_bag = _bag(monkeypatch, "local", tmp_path)
    local_ops = {t.task_id: type(t) for dag in local_bag.dags.values() for t in dag.tasks}
    expected = {"run_glue_job": "GlueJobOperator", "train_model": "SageMakerTrainingOperator",
                "create_model": "SageMakerModelOperator", "create_endpoint_config": "SageMakerEndpointConfigOperator",
                "deploy_endpoint": "SageMakerEndpointOperator", "batch_transform": "SageMakerTransformOperator"}
    for task_id, name in expected.items():
        # The provider's class, or for create_model/create_endpoint_config its retry-safe subclass (kt_aws_operators).
        provider = next(c for c in aws_ops[task_id].__mro__ if c.__module__.startswith(AMAZON))
        assert provider.__name__ == name and aws_ops[task_id].__module__ in (provider.__module__, "kt_aws_operators")
        # The waits are deferred to the triggerer on aws (kt.runtime.DEFERRABLE); locally nothing defers.
        assert getattr(aws_tasks[task_id], "deferrable", False) == (task_id not in ("create_model",
                                                                                     "create_endpoint_config"))
        assert local_ops[task_id].__name__ == "Local" + name and local_ops[task_id].__module__ == "kt_local_operators"
        assert set(aws_ops[task_id].template_fields) >= {"config"} or task_id == "run_glue_job"
        shared = set(local_ops[task_id].template_fields) & set(aws_ops[task_id].template_fields)
        assert shared >= ({"script_args", "job_name", "script_location"} if task_id == "run_glue_job" else {"config"})
    assert {t for t, cls in aws_ops.items() if any(c.__module__.startswith(AMAZON) for c in cls.__mro__)} == set(expected)
