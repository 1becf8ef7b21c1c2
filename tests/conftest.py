"""Shared fixtures: a small simulated lake, its ETL output and a tiny trained model (built once per run)."""

from __future__ import annotations

import logging
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))  # the tests run against the working tree
# Idle OpenMP threads sleep instead of spinning: on 2 cores, spinning workers of one process starve the
# subprocesses (training jobs, servers) that the tests start.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def sample_lake(tmp_path_factory) -> str:
    """300 simulated students in Riiid format, through the reference ETL."""
    from kt import etl, sample

    root = str(tmp_path_factory.mktemp("lake"))
    sample.generate(root, users=300, skills=16, seed=3, tutor_users=12, tutor_days=3)
    etl.run_etl(f"{root}/raw/ednet", f"{root}/processed/ednet", progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(sample_lake, tmp_path_factory) -> str:
    """A DKT trained for one epoch on the sample lake: model.pth, model.json and code/."""
    from kt_testing import train_tiny_model

    return train_tiny_model(f"{sample_lake}/processed/ednet", str(tmp_path_factory.mktemp("tiny-model")), "tiny-model")


@pytest.fixture
def ddb():
    """kt-history and kt-mastery, named as the defaults, in an in-process moto."""
    import boto3
    from moto import mock_aws

    from kt import dynamo

    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        dynamo.ensure_tables(client, "kt-history", "kt-mastery")
        yield client


@pytest.fixture(scope="session")
def spark():
    """The one SparkSession of the test run: 2 local cores, few shuffle partitions, no UI."""
    from kt import spark_etl

    session = spark_etl.local_session("local[2]", driver_memory="1g", shuffle_partitions=2)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    # py4j logs "Closing down clientserver connection" from __del__ at exit, after pytest closed the stream
    logging.getLogger("py4j").setLevel(logging.WARNING)


def pytest_terminal_summary(terminalreporter) -> None:
    """Say in one line which tests did not run for want of something outside the repository, and where it was looked for.

    The real-data tests need ``../shared/data/real`` beside the clone; the browser tests need chromium (``make test``
    installs it). A skip for either is named at the end of the run, never left to the summary count.
    """
    from kt_testing import SHARED_DATA

    skipped = [str(getattr(report, "longrepr", "")) for report in terminalreporter.stats.get("skipped", [])]
    real_data = sum(SHARED_DATA in reason for reason in skipped)
    if real_data:
        terminalreporter.write_line(
            f"real data: {real_data} tests did not run: they need the data beside the repository, looked for "
            f"{os.path.normpath(SHARED_DATA)}", yellow=True)
    browser = sum("chromium" in reason for reason in skipped)
    if browser:
        terminalreporter.write_line(
            f"browser: {browser} tests did not run: no chromium (`make test` installs it: scripts/ensure-chromium.sh)",
            yellow=True)
