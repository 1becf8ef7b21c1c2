"""docker-compose.yaml: the official Airflow 3 services plus moto, our folders mounted, the local runtime by default."""

from __future__ import annotations

import os

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-init")


@pytest.fixture(scope="module")
def compose() -> dict:
    with open(os.path.join(REPO, "docker-compose.yaml")) as f:
        return yaml.safe_load(f)


def test_services(compose):
    assert set(compose["services"]) == {*AIRFLOW_SERVICES, "postgres", "moto"}
    assert compose["services"]["moto"]["image"].startswith("motoserver/moto:")
    assert compose["services"]["postgres"]["image"].startswith("postgres:")
    commands = {name: compose["services"][name].get("command") for name in AIRFLOW_SERVICES[:-1]}
    assert commands == {"airflow-apiserver": "api-server", "airflow-scheduler": "scheduler",
                        "airflow-dag-processor": "dag-processor", "airflow-triggerer": "triggerer"}
    assert compose["services"]["airflow-apiserver"]["ports"] == ["8080:8080"]
    for name in AIRFLOW_SERVICES[:-1]:  # the long-running ones wait for the DB, moto and the migration
        depends = compose["services"][name]["depends_on"]
        assert depends["airflow-init"] == {"condition": "service_completed_successfully"}
        assert depends["postgres"]["condition"] == depends["moto"]["condition"] == "service_healthy"
        assert "healthcheck" in compose["services"][name]


@pytest.mark.parametrize("service", AIRFLOW_SERVICES)
def test_every_airflow_service_mounts_our_folders_and_defaults_to_local(compose, service):
    spec = compose["services"][service]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in spec["volumes"] if v.startswith("./")}
    assert mounts["/opt/airflow/dags"] == "./dags" and mounts["/opt/airflow/plugins"] == "./plugins"
    assert mounts["/opt/airflow/src"] == "./src" and mounts["/opt/airflow/glue"] == "./glue"
    for folder in ("dags", "plugins", "src", "glue"):
        assert os.path.isdir(os.path.join(REPO, folder))
    env = spec["environment"]
    assert env["KT_RUNTIME"] == "${KT_RUNTIME:-local}"
    assert env["AWS_ENDPOINT_URL"] == "${AWS_ENDPOINT_URL-http://moto:5000}"  # unset: moto; set empty: real AWS
    assert env["PYTHONPATH"] == "/opt/airflow/src"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:airflow@postgres/")
    assert env["KT_LAKE"] == "${KT_LAKE:-/opt/airflow/lake}"
    assert mounts["/opt/airflow/lake"].startswith("./.kt/")  # generated data stays out of git (.gitignore: .kt/)


def test_the_glue_script_is_where_the_local_operator_looks(compose):
    """kt.runtime finds glue/ next to src/ on both sides of the mount."""
    from kt import runtime

    assert os.path.relpath(runtime.LOCAL_GLUE_SCRIPT, REPO) == os.path.join("glue", "ednet_preprocessor.py")
    assert os.path.exists(runtime.LOCAL_GLUE_SCRIPT)
