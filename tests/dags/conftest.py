"""Airflow for the DAG tests: an isolated AIRFLOW_HOME, one moto server, lakes built from the sample fixtures.

Airflow reads its configuration when it is first imported, so the environment
is set here, at collection, before any test module imports it: a temporary
AIRFLOW_HOME with a SQLite metadata DB (migrated once per session), this
repo's dags/ and plugins/, no examples. One ThreadedMotoServer (in this
process: nothing is left running) stands in for DynamoDB, CloudWatch, S3, SSM,
Glue and SageMaker; each test starts from an empty one. The ``triggerer``
fixture adds a real `airflow triggerer` process on the same metadata DB and
moto server, for the tests of the deferred AWS waits (dagtest.run_dag_deferring).
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from dagtest import DESCRIBES_RUNNING

from kt.aws import free_port

TRIGGERER_READY_S = 90  # its start on a busy 2-core machine; ~5 s when idle
AWS_TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DAGS_DIR = os.path.join(REPO, "dags")
AIRFLOW_HOME = tempfile.mkdtemp(prefix="kt-airflow-test-")
atexit.register(shutil.rmtree, AIRFLOW_HOME, True)  # also when no test here runs (-k, --collect-only)
os.environ.update({
    "AIRFLOW_HOME": AIRFLOW_HOME,
    "AIRFLOW__CORE__DAGS_FOLDER": DAGS_DIR,
    "AIRFLOW__CORE__PLUGINS_FOLDER": os.path.join(REPO, "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME}/airflow.db",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
})


def pytest_terminal_summary(terminalreporter) -> None:
    from dagtest import PARSE_TIMES  # filled by test_dag_integrity

    if PARSE_TIMES:
        terminalreporter.section("DAG parse time per file (DagBag)")
        for name, seconds in sorted(PARSE_TIMES.items()):
            terminalreporter.write_line(f"{name:<28} {seconds * 1000:7.1f} ms")


@pytest.fixture(scope="session", autouse=True)
def airflow_db():
    """`airflow db migrate` once, in process, into the session's SQLite file (the home goes at exit)."""
    from airflow.utils import db

    db.upgradedb()
    return AIRFLOW_HOME



@pytest.fixture(scope="session")
def moto_threaded_server():
    """One moto server for the session, on 127.0.0.1 (the object: tests/iam_recorder.py wraps its application)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_server(moto_threaded_server) -> str:
    """The session's moto server URL."""
    host, port = moto_threaded_server.get_host_and_port()
    return f"http://{host}:{port}"


@pytest.fixture
def aws_env(moto_server, monkeypatch):
    """An empty moto server behind AWS_ENDPOINT_URL, with dummy credentials."""
    import httpx

    httpx.post(f"{moto_server}/moto-api/reset").raise_for_status()
    for key, value in {"AWS_ENDPOINT_URL": moto_server, **AWS_TEST_ENV}.items():
        monkeypatch.setenv(key, value)
    for key in ("KT_RUNTIME", "KT_LAKE", "AWS_PROFILE", "KT_SSM_PARAMETER"):
        monkeypatch.delenv(key, raising=False)
    return moto_server


@pytest.fixture
def local_lake(aws_env, tmp_path, monkeypatch) -> str:
    """KT_RUNTIME=local with an empty lake directory of this test (the local runners' work dir beside it)."""
    lake_root = str(tmp_path / "lake")
    os.makedirs(lake_root)
    monkeypatch.setenv("KT_RUNTIME", "local")
    monkeypatch.setenv("KT_LAKE", lake_root)
    return lake_root


@pytest.fixture(scope="session")
def triggerer(airflow_db, moto_server):
    """`airflow triggerer` on the session's metadata DB, talking to the moto server; its Job row's id.

    Up once its Job row (the session's only triggerer) is running and heartbeating;
    SIGTERM at the end of the session, and its exit awaited.
    """
    from airflow.jobs.job import Job, JobState
    from airflow.utils import timezone
    from airflow.utils.session import create_session
    from sqlalchemy import select

    env = {**os.environ, "AWS_ENDPOINT_URL": moto_server, **AWS_TEST_ENV,
           "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())}  # not 8794: a `make airflow` may run
    for key in ("AWS_PROFILE", "KT_RUNTIME", "KT_LAKE"):
        env.pop(key, None)
    log_path = os.path.join(AIRFLOW_HOME, "triggerer.log")
    launched = timezone.utcnow()
    with open(log_path, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "airflow", "triggerer"], env=env, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TRIGGERER_READY_S
        while True:
            with create_session() as session:
                job = session.scalars(select(Job).where(Job.job_type == "TriggererJob", Job.start_date >= launched,
                                                        Job.state == JobState.RUNNING)).first()
                if job is not None and job.is_alive():
                    job_id = job.id
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"airflow triggerer not running (exit code {process.poll()}): see {log_path}")
            time.sleep(0.5)  # polling its Job row
        yield job_id
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def running_jobs(aws_env, monkeypatch):
    """Jobs that are still running when their operator looks, as on AWS (moto finishes every job at once).

    Glue: moto's own state manager (`moto_api`), manual progression: a run
    goes STARTING -> RUNNING -> SUCCEEDED, one step per GetJobRun. SageMaker
    training and transform jobs, which moto creates Completed and has no state
    model for: their first DESCRIBES_RUNNING describes say InProgress (the
    operator's, then the trigger's first poll), the later ones what moto says.
    Patched on moto's backend class: the moto server runs in this process.
    """
    import httpx
    from moto.sagemaker.models import SageMakerModelBackend

    transitions = f"{aws_env}/moto-api/state-manager"
    httpx.post(f"{transitions}/set-transition", json={
        "model_name": "glue::job_run", "transition": {"progression": "manual", "times": 1}}).raise_for_status()
    describes: collections.Counter = collections.Counter()

    def running_at_first(describe, kind: str):
        def patched(self, *args, **kwargs) -> dict:
            response = describe(self, *args, **kwargs)
            describes[response[f"{kind}JobName"]] += 1
            if describes[response[f"{kind}JobName"]] <= DESCRIBES_RUNNING:
                return {**response, f"{kind}JobStatus": "InProgress"}
            return response
        return patched

    for kind in ("Training", "Transform"):
        method = f"describe_{kind.lower()}_job"
        monkeypatch.setattr(SageMakerModelBackend, method, running_at_first(getattr(SageMakerModelBackend, method), kind))
    yield describes
    httpx.post(f"{transitions}/unset-transition", json={"model_name": "glue::job_run"}).raise_for_status()
