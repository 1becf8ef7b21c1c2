"""Airflow for the DAG tests: an isolated AIRFLOW_HOME, one moto server, lakes built from the sample fixtures.

Airflow reads its configuration when it is first imported, so the environment
is set here, at collection, before any test module imports it: a temporary
AIRFLOW_HOME with a SQLite metadata DB (migrated once per session), this
repo's dags/ and plugins/, no examples. One ThreadedMotoServer (in this
process: nothing is left running) stands in for DynamoDB, CloudWatch, S3, SSM,
Glue and SageMaker; each test starts from an empty one.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile

import pytest

from kt.aws import free_port

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
    for key, value in {"AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
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
