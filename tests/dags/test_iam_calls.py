"""IAM of the Airflow role: every AWS call the aws-runtime DAGs make, recorded, is allowed by terraform/iam.tf.

The DAGs run on the Amazon provider's operators against moto, as tests/dags/test_aws_runtime.py runs them,
but with what Terraform provisions: its bucket, role, table and job names and its SSM parameter
(local.ssm_config rendered, sagemaker_enabled set as a deployer sets it). tests/iam_recorder.py records
each call (botocore and the lake's pyarrow S3 calls) while the flows run: ingestion, the Glue ETL,
training with promotion, the nightly refresh, the drift check. tests/iam_check.py maps each call to the
IAM actions and resource ARNs of AWS's catalogue and evaluates the rendered policy of the Airflow role.
Setup (what the jobs would have written, the tutor's answers) is not recorded: it is not the Airflow role's.

    .venv/bin/python -m pytest -q tests/dags/test_iam_calls.py
"""

from __future__ import annotations

import json
import os
import zipfile

import boto3
import pendulum
import pytest
from dagtest import job_output, run_dag
from iam_check import (
    ACCOUNT,
    Requests,
    assert_sufficient_and_minimal,
    call_requests,
    render,
    role_arn,
    terraform_ssm_config,
)
from iam_recorder import recording

from kt import dynamo, lake, local_sagemaker, refresh
from kt.config import load_settings

pytestmark = pytest.mark.slow
RUN_AFTER = pendulum.datetime(2026, 11, 25, 2, tz="UTC")
JOB = "pythagoras-dkt-2026-11-25-0200"  # kt.aws_requests.names of RUN_AFTER
ROLE_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": ["glue.amazonaws.com", "sagemaker.amazonaws.com"]},
     "Action": "sts:AssumeRole"}]})

# Granted to the Airflow role although no call of the test needs it, by (role, statement sid, action or
# resource), with the reason it stays.
KEPT: dict[tuple[str, str, str], str] = {
    ("airflow", "TrainingJobs", "sagemaker:StopTrainingJob"):
        "SageMakerTrainingOperator.on_kill stops the job when its task is cleared or times out; no test kills one.",
    ("airflow", "ReadWriteLake", "s3:AbortMultipartUpload"):
        "pyarrow's S3 output stream (kt.lake) aborts its multipart upload when a write fails; none fails here.",
    ("airflow", "GrantKeyToSageMaker", "kms:CreateGrant"):
        "CreateEndpoint/UpdateEndpoint of an endpoint config with a KmsKeyId (Terraform's serverless config "
        "has one; the DAG's gets one with issue 17 item 4).",
    ("airflow", "UseKey", "kms:DescribeKey"): "As kms:CreateGrant: an endpoint config with a KmsKeyId.",
}


def written_calls(settings) -> list[tuple[str, str, dict]]:
    """Calls of the Airflow role the recorded runs cannot make, built as the code builds them."""
    from kt import runtime

    # A later promotion: the endpoint exists, SageMakerEndpointOperator's CreateEndpoint is refused by
    # SageMaker (after IAM allowed it) and the operator calls UpdateEndpoint with the same request.
    later = runtime.deployment_requests(settings, "2026-12-02-0200", f"{settings.lake}/models/dkt/x/model.tar.gz")
    return [
        ("sagemaker", "CreateEndpointConfig", later["endpoint_config"]),
        ("sagemaker", "CreateEndpoint", later["endpoint"]),
        ("sagemaker", "UpdateEndpoint", later["endpoint"]),
        # kt.runtime's failure callback: a task that fails for good tells the alarm topic.
        ("sns", "Publish", {"TopicArn": settings.alarm_topic_arn, "Subject": "kt task failed", "Message": "..."}),
    ]


@pytest.fixture
def terraform_lake(aws_env, sample_lake, monkeypatch):
    """What Terraform provisions, in moto, under Terraform's names: bucket, roles, tables, job, SSM parameter."""
    monkeypatch.setenv("KT_RUNTIME", "aws")
    config = terraform_ssm_config()
    bucket = config["lake"][len("s3://"):]
    boto3.client("s3").create_bucket(Bucket=bucket)
    iam = boto3.client("iam")
    for role in ("glue", "sagemaker"):
        iam.create_role(RoleName=role_arn(role).rsplit("/", 1)[1], AssumeRolePolicyDocument=ROLE_POLICY)
    boto3.client("ssm").put_parameter(Name=render("${var.ssm_parameter_name}"), Type="String",
                                      Value=json.dumps(config))
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lake.publish(os.path.join(repo, "glue", "ednet_preprocessor.py"), config["glue_script_location"])
    boto3.client("glue").create_job(Name=config["glue_job_name"], Role=role_arn("glue"),
        Command={"Name": "glueetl", "ScriptLocation": config["glue_script_location"]},
        GlueVersion="5.0")
    boto3.client("sns").create_topic(Name=config["alarm_topic_arn"].rsplit(":", 1)[1])
    for part in ("processed", "sample"):  # as if the Glue job had run
        lake.publish(os.path.join(sample_lake, part), f"{config['lake']}/{part}")
    settings = load_settings()
    assert settings.lake == config["lake"] and settings.runtime == "aws"  # from SSM
    dynamo.ensure_tables(boto3.client("dynamodb"), settings.history_table, settings.mastery_table)
    return settings


def _flows(settings, sample_lake, tiny_model_dir, tmp_path, server):
    """Run ingestion, ETL, training with promotion, refresh and drift check; the recorded calls of each."""
    root = settings.lake
    calls = []
    archive = str(tmp_path / "riiid.zip")
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("train.csv", "questions.csv", "skill_mappings.json"):
            z.write(os.path.join(sample_lake, "raw", "ednet", name), name)
    with recording(server) as recorder:
        recorder.where = "ednet_ingest"
        run, states, _ = run_dag("ednet_ingest", conf={"source": archive, "format": "riiid"})
        assert run.state == "success", states
        recorder.where = "ednet_etl"
        run, states, _ = run_dag("ednet_etl")
        assert run.state == "success", states
    calls += recorder.calls

    # what the job would write: the model and its own evaluation
    job_output(tiny_model_dir, f"{sample_lake}/processed/ednet", f"{root}/models/dkt/{JOB}/output/model.tar.gz",
               str(tmp_path))
    logs = boto3.client("logs")  # and its log stream, which the training operator tails
    logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    stream = f"{JOB}/algo-1-1764640800"
    logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream)
    logs.put_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream,
                        logEvents=[{"timestamp": 1764640800000, "message": "epoch=1; train_loss=0.7;"}])
    with recording(server) as recorder:
        recorder.where = "dkt_train"
        run, states, _ = run_dag("dkt_train", conf={"hyperparameters": {"epochs": 1}}, run_after=RUN_AFTER)
        assert run.state == "success", states
    calls += recorder.calls

    client = boto3.client("dynamodb")
    refresh.sync_history(client, settings.history_table, sample_lake)  # the tutor wrote kt-history
    days = refresh.days_to_refresh(None, "2026-11-25")
    refresh.build_inputs(client, settings.history_table, root, "2026-11-25", days)
    night = f"{root}/inference/batch/2026-11-25"
    transform = {  # what SageMaker would compute from the inputs the DAG is about to write: run here
        "TransformJobName": "precomputed", "ModelName": "precomputed", "BatchStrategy": "MultiRecord",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"{night}/input/"}},
                           "ContentType": "application/jsonlines", "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": f"{night}/output/", "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
    }
    model = {"ModelName": "precomputed",
             "PrimaryContainer": {"Image": "x", "ModelDataUrl": f"{root}/models/dkt/{JOB}/output/model.tar.gz"}}
    local_sagemaker.run_transform_job({"Model": model, "Transform": transform}, str(tmp_path))
    lines = [json.dumps({"user_id": f"u{u}", "answer_id": f"{u}-{i}", "skill_id": 1, "correct": 0,
                         "answered_at": f"2026-11-24T10:00:{i:02d}.000Z"}) for u in range(10) for i in range(30)]
    lake.write_text(f"{root}/events/answers/day=2026-11-24/part.jsonl", "\n".join(lines) + "\n")
    with recording(server) as recorder:
        recorder.where = "kt_mastery_refresh"
        run, states, _ = run_dag("kt_mastery_refresh", run_after=RUN_AFTER)
        assert run.state == "success", states
        recorder.where = "kt_drift_check"
        run, states, _ = run_dag("kt_drift_check")
        assert run.state == "success", states
        assert states["trigger_retraining"] == "success"
    calls += recorder.calls
    return calls


def test_every_call_of_the_dags_is_allowed_and_every_grant_used(terraform_lake, sample_lake, tiny_model_dir,
                                                                 tmp_path, moto_threaded_server, capsys):
    calls = _flows(terraform_lake, sample_lake, tiny_model_dir, tmp_path, moto_threaded_server)
    assert {c.where for c in calls} == {"ednet_ingest", "ednet_etl", "dkt_train", "kt_mastery_refresh",
                                        "kt_drift_check"}
    assert any(c.client == "aws-sdk-cpp" for c in calls), "the lake's pyarrow calls were not recorded"
    requests = Requests("airflow")
    endpoint_configs: dict[str, dict] = {}
    for call in calls:
        call_requests(requests, call.service, call.operation, call.params, endpoint_configs)
    for service, operation, params in written_calls(terraform_lake):
        call_requests(requests, service, operation, params, endpoint_configs)
    assert all(ACCOUNT in r.resource or r.resource == "*" or ":s3:::" in r.resource for r in requests.items)

    actions = sorted({f"{c.service}:{c.operation}" for c in calls})
    with capsys.disabled():
        assert_sufficient_and_minimal(
            requests.items, ("airflow",), KEPT,
            f"Airflow role: {len(calls)} calls recorded, {len(actions)} operations: {', '.join(actions)}")
