"""KT_RUNTIME=aws: every DAG on the Amazon provider's operators against a moto server.

moto accepts Glue and SageMaker jobs without running anything, so what those
jobs would have written (processed data, model.tar.gz, transform outputs) is
put in the S3 lake beforehand; everything else is real: the settings come from
the SSM parameter, the request dictionaries go through the operators and
botocore's parameter validation to moto, and the results are read back with
describe calls. The Glue, training, transform and endpoint waits are deferred
to a real `airflow triggerer` process (conftest's ``triggerer``) while the
jobs still run (``running_jobs``), and resume from the trigger's event.
"""

from __future__ import annotations

import json
import os
import zipfile

import boto3
import pendulum
import pytest
from botocore.exceptions import ClientError
from dagtest import (DESCRIBES_RUNNING, assert_deferred_then_succeeded, dag_runs, job_output, refuse_dataset_reads,
                     run_dag, run_dag_deferring, try_numbers)
from kt_testing import train_tiny_model

from kt import artifact, dynamo, job_evaluation, lake, local_sagemaker, pipeline, refresh, runtime
from kt.config import load_settings

pytestmark = pytest.mark.slow
LAKE = "s3://kt-lake"
ACCOUNT = "123456789012"  # moto's
GLUE_SCRIPT = f"{LAKE}/artifacts/glue/ednet_preprocessor.py"
ROLE_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": ["glue.amazonaws.com", "sagemaker.amazonaws.com"]},
     "Action": "sts:AssumeRole"}]})
RUN_AFTER = pendulum.datetime(2026, 11, 25, 2, tz="UTC")
JOB = "pythagoras-dkt-2026-11-25-0200"  # kt.aws_requests.names of RUN_AFTER
OLD_JOB = "pythagoras-dkt-2026-11-01-0200"  # a model promoted before


@pytest.fixture
def aws_lake(aws_env, sample_lake, monkeypatch):
    """What Terraform provisions, in moto: bucket, roles, tables, the Glue script, the SSM parameter."""
    monkeypatch.setenv("KT_RUNTIME", "aws")
    boto3.client("s3").create_bucket(Bucket="kt-lake")
    iam = boto3.client("iam")
    for role in ("kt-glue", "kt-sagemaker"):
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=ROLE_POLICY)
    boto3.client("ssm").put_parameter(Name="/pythagoras-kt/config", Type="String", Value=json.dumps({
        "lake": LAKE, "glue_script_location": GLUE_SCRIPT, "glue_role_name": "kt-glue",
        "sagemaker_role_arn": f"arn:aws:iam::{ACCOUNT}:role/kt-sagemaker", "endpoint_mode": "serverless",
    }))
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lake.publish(os.path.join(repo, "glue", "ednet_preprocessor.py"), GLUE_SCRIPT)
    for part in ("processed", "sample"):  # as if the Glue job had run
        lake.publish(os.path.join(sample_lake, part), f"{LAKE}/{part}")
    settings = load_settings()
    assert settings.lake == LAKE and settings.runtime == "aws"  # from SSM
    dynamo.ensure_tables(boto3.client("dynamodb"), settings.history_table, settings.mastery_table)
    return settings


def _promote(settings, tiny_model_dir) -> str:
    url = f"{LAKE}/models/dkt/tiny/output/model.tar.gz"
    artifact.pack(tiny_model_dir, url)
    pipeline.promote(settings, "tiny", url, {"dkt": {"auc": 0.0}})
    return url


def test_ingest_and_the_glue_job(aws_lake, sample_lake, tmp_path, triggerer, running_jobs):
    archive = str(tmp_path / "riiid.zip")
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("train.csv", "questions.csv", "skill_mappings.json"):
            z.write(os.path.join(sample_lake, "raw", "ednet", name), name)
    run, states, _ = run_dag("ednet_ingest", conf={"source": archive, "format": "riiid"})
    assert run.state == "success", states
    raw = lake.dataset(aws_lake, "raw")  # the version ingestion switched raw/ednet/_current.json to
    assert raw.startswith(f"{LAKE}/raw/ednet/{lake.VERSION_PREFIX}")
    assert lake.exists(f"{raw}/train.csv") and lake.exists(f"{raw}/_ingest.json")

    run, states, executions = run_dag_deferring("ednet_etl")
    assert run.state == "success", states
    assert_deferred_then_succeeded(executions, "run_glue_job", "GlueJobCompleteTrigger", triggerer)
    glue = boto3.client("glue")
    job = glue.get_job(JobName="ednet-preprocessor")["Job"]
    assert job["Command"]["ScriptLocation"] == GLUE_SCRIPT
    assert job["Role"].endswith("role/kt-glue")
    (job_run,) = glue.get_job_runs(JobName="ednet-preprocessor")["JobRuns"]
    assert job_run["JobRunState"] == "SUCCEEDED"
    # Deferrable and durable, the provider tags the run with the task to find it again on a retry.
    assert job_run["Arguments"].pop("--airflow_task_uuid").startswith("ednet_etl:run_glue_job:")
    assert job_run["Arguments"] == {"--raw": raw, "--processed": f"{LAKE}/processed/ednet", "--format": "riiid",
                                    "--keep-versions": "3", "--skill-mappings": f"{raw}/skill_mappings.json"}


def test_training_deploys_and_promotes_through_sagemaker(aws_lake, sample_lake, tiny_model_dir, tmp_path,
                                                         monkeypatch, triggerer, running_jobs):
    """The gate reads the job's report from model.tar.gz: the worker, which cannot read the dataset here, succeeds;
    the training and deploy waits defer to the triggerer and resume."""
    url = f"{LAKE}/models/dkt/{JOB}/output/model.tar.gz"
    job_output(tiny_model_dir, f"{sample_lake}/processed/ednet", url, str(tmp_path))  # what the job would write
    refuse_dataset_reads(monkeypatch)
    run, states, executions = run_dag_deferring("dkt_train", conf={"hyperparameters": {"epochs": 1}},
                                                run_after=RUN_AFTER)
    assert run.state == "success", states
    assert_deferred_then_succeeded(executions, "train_model", "SageMakerTrigger", triggerer)
    assert_deferred_then_succeeded(executions, "deploy_endpoint", "SageMakerTrigger", triggerer)
    assert running_jobs[JOB] > DESCRIBES_RUNNING  # the trigger polled the job until it completed
    sagemaker = boto3.client("sagemaker")
    training = sagemaker.describe_training_job(TrainingJobName=JOB)
    assert training["EnableManagedSpotTraining"] is True
    assert training["StoppingCondition"]["MaxWaitTimeInSeconds"] >= training["StoppingCondition"]["MaxRuntimeInSeconds"]
    assert training["CheckpointConfig"]["S3Uri"] == f"{LAKE}/models/dkt/checkpoints/{JOB}"
    assert training["HyperParameters"]["epochs"] == "1"
    assert training["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == f"{LAKE}/processed/ednet/"
    assert len(training["InputDataConfig"]) == 1  # no promoted model yet: no current channel
    assert lake.exists(pipeline.reliability_uri(url))  # the job's diagram, published by the evaluate task
    model = sagemaker.describe_model(ModelName=JOB)
    assert model["PrimaryContainer"]["ModelDataUrl"] == training["ModelArtifacts"]["S3ModelArtifacts"]
    config = sagemaker.describe_endpoint_config(EndpointConfigName=JOB)
    assert config["ProductionVariants"][0]["ServerlessConfig"]["MaxConcurrency"] > 0
    assert sagemaker.describe_endpoint(EndpointName="pythagoras-dkt-endpoint")["EndpointConfigName"] == JOB
    assert pipeline.current_model(aws_lake)["job_name"] == JOB
    assert pipeline.current_model(aws_lake)["metrics"] == job_evaluation.read_report(url)[1]["candidate"]


def test_the_refresh_runs_the_batch_transform_and_loads_its_outputs(aws_lake, sample_lake, tiny_model_dir, tmp_path,
                                                                    triggerer, running_jobs):
    _promote(aws_lake, tiny_model_dir)
    client = boto3.client("dynamodb")
    refresh.sync_history(client, aws_lake.history_table, sample_lake)  # the tutor wrote kt-history
    # What SageMaker would compute from the inputs the DAG is about to write: the same inputs, run here.
    days = refresh.days_to_refresh(None, "2026-11-25")
    refresh.build_inputs(client, aws_lake.history_table, LAKE, "2026-11-25", days)
    night = f"{LAKE}/inference/batch/2026-11-25"
    model_request = {"ModelName": "precomputed",
                     "PrimaryContainer": {"Image": "x", "ModelDataUrl": f"{LAKE}/models/dkt/tiny/output/model.tar.gz"}}
    transform = {
        "TransformJobName": "precomputed", "ModelName": "precomputed", "BatchStrategy": "MultiRecord",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"{night}/input/"}},
                           "ContentType": "application/jsonlines", "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": f"{night}/output/", "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
    }
    local_sagemaker.run_transform_job({"Model": model_request, "Transform": transform}, str(tmp_path))

    run, states, executions = run_dag_deferring("kt_mastery_refresh", run_after=RUN_AFTER)
    assert run.state == "success", states
    assert set(states.values()) == {"success"}
    assert_deferred_then_succeeded(executions, "batch_transform", "SageMakerTrigger", triggerer)
    sagemaker = boto3.client("sagemaker")
    job = sagemaker.describe_transform_job(TransformJobName="pythagoras-dkt-refresh-2026-11-25-0200")
    assert job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == f"{LAKE}/inference/batch/2026-11-25/input/"
    assert job["BatchStrategy"] == "MultiRecord" and job["TransformOutput"]["AssembleWith"] == "Line"
    model = sagemaker.describe_model(ModelName=job["ModelName"])
    assert model["PrimaryContainer"]["ModelDataUrl"].endswith("tiny/output/model.tar.gz")
    rows = dynamo.scan_all(client, aws_lake.mastery_table)
    assert len(rows) == 12 and {r["source"] for r in rows} == {"dkt"}
    assert json.loads(lake.read_text(refresh.watermark_uri(LAKE)))["last_day"] == "2026-11-25"


def test_drift_publishes_to_cloudwatch_and_triggers_training(aws_lake, tiny_model_dir):
    _promote(aws_lake, tiny_model_dir)
    lines = [json.dumps({"user_id": f"u{u}", "answer_id": f"{u}-{i}", "skill_id": 1, "correct": 0,
                         "answered_at": f"2026-11-24T10:00:{i:02d}.000Z"}) for u in range(10) for i in range(30)]
    lake.write_text(f"{LAKE}/events/answers/day=2026-11-24/part.jsonl", "\n".join(lines) + "\n")
    run, states, _ = run_dag("kt_drift_check")
    assert run.state == "success", states
    assert states["trigger_retraining"] == "success"
    metrics = boto3.client("cloudwatch").list_metrics(Namespace="KT", MetricName="DriftScore")["Metrics"]
    assert metrics and metrics[0]["Dimensions"] == [{"Name": "EndpointName", "Value": "pythagoras-dkt-endpoint"}]
    assert json.loads(lake.read_text(f"{LAKE}/monitoring/drift/2026-11-25.json"))["retrain"]
    assert any(run_id == f"drift__{run.run_id}" for run_id, _ in dag_runs("dkt_train"))


def test_a_failed_task_tells_the_alarm_topic(aws_lake):
    """on_failure publishes to the SNS topic Terraform names in the SSM parameter; an SQS queue subscribed reads it."""
    sns, sqs, ssm = boto3.client("sns"), boto3.client("sqs"), boto3.client("ssm")
    topic = sns.create_topic(Name="kt-alarms")["TopicArn"]
    queue = sqs.create_queue(QueueName="kt-alarms")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    config = json.loads(ssm.get_parameter(Name="/pythagoras-kt/config")["Parameter"]["Value"])
    ssm.put_parameter(Name="/pythagoras-kt/config", Type="String", Overwrite=True,
                      Value=json.dumps({**config, "alarm_topic_arn": topic}))
    run, states, _ = run_dag("kt_mastery_refresh", run_after=RUN_AFTER, retries=0)  # no promoted model yet
    assert run.state == "failed" and states["build_inputs"] == "failed", states
    (message,) = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    envelope = json.loads(message["Body"])
    assert envelope["TopicArn"] == topic
    assert envelope["Subject"] == "kt task failed: kt_mastery_refresh.build_inputs try 1"
    body = json.loads(envelope["Message"])
    assert body["task"] == "kt_mastery_refresh.build_inputs try 1" and "no promoted model" in body["error"]


@pytest.fixture
def create_model_then_fail(aws_env, monkeypatch):
    """SageMaker as moto does not model it: CreateModel and CreateEndpointConfig refuse a name that exists
    (moto replaces it), and the first DescribeModel of a new model fails, as a try of create_model would
    that dies after CreateModel succeeded. The model names whose DescribeModel failed."""
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import SageMakerModelBackend

    def refusing(create, kind: str, key: str, store: str):
        def patched(self, **kwargs):
            if kwargs[key] in getattr(self, store):
                raise ValidationError(message=f'Cannot create already existing {kind} "{kwargs[key]}".')
            return create(self, **kwargs)
        return patched

    monkeypatch.setattr(SageMakerModelBackend, "create_model",
                        refusing(SageMakerModelBackend.create_model, "model", "model_name", "_models"))
    monkeypatch.setattr(SageMakerModelBackend, "create_endpoint_config",
                        refusing(SageMakerModelBackend.create_endpoint_config, "endpoint configuration",
                                 "endpoint_config_name", "endpoint_configs"))
    failed: list[str] = []
    describe = SageMakerModelBackend.describe_model

    def describe_failing_once(self, model_name: str):
        model = describe(self, model_name)
        if model_name not in failed:
            failed.append(model_name)
            raise ValidationError(message="the connection was reset (injected by the test)")
        return model

    monkeypatch.setattr(SageMakerModelBackend, "describe_model", describe_failing_once)
    return failed


def test_a_retry_after_the_model_was_created_goes_through(aws_lake, sample_lake, tiny_model_dir, tmp_path,
                                                          create_model_then_fail):
    job_output(tiny_model_dir, f"{sample_lake}/processed/ednet", f"{LAKE}/models/dkt/{JOB}/output/model.tar.gz",
               str(tmp_path))  # what the job would write
    run, states, _ = run_dag("dkt_train", conf={"hyperparameters": {"epochs": 1}}, run_after=RUN_AFTER)
    assert run.state == "success", states
    assert create_model_then_fail == [JOB]  # the first try created the model, then failed
    assert try_numbers(run)["create_model"] == 2 and try_numbers(run)["create_endpoint_config"] == 1
    sagemaker = boto3.client("sagemaker")
    model = sagemaker.describe_model(ModelName=JOB)
    with pytest.raises(ClientError, match="Cannot create already existing model"):  # as on SageMaker
        sagemaker.create_model(ModelName=JOB, PrimaryContainer=model["PrimaryContainer"],
                               ExecutionRoleArn=model["ExecutionRoleArn"])
    assert sagemaker.describe_endpoint(EndpointName="pythagoras-dkt-endpoint")["EndpointConfigName"] == JOB
    assert pipeline.current_model(aws_lake)["job_name"] == JOB


def test_a_better_model_replaces_the_current_one_and_the_endpoint_moves_to_it(aws_lake, sample_lake, tiny_model_dir,
                                                                             tmp_path, triggerer):
    """The gate promotes over an existing model; the endpoint is pointed at the new config, the old one is kept.

    SageMaker (UpdateEndpoint) keeps serving the old config until the new one is
    InService and one must not delete a config an endpoint uses meanwhile; moto
    has no UpdateEndpoint and lets CreateEndpoint replace the endpoint at once
    (the provider's create->update fallback cannot run there). What is checked:
    the deploy waits (deferred) for InService, and nothing of the old model is deleted.
    """
    old_run = "2026-11-01-0200"
    old_dir = train_tiny_model(lake.current(f"{sample_lake}/processed/ednet"), str(tmp_path / "old"), "old", lr=1e-7)
    old_url = f"{LAKE}/models/dkt/{OLD_JOB}/output/model.tar.gz"
    artifact.pack(old_dir, old_url)  # barely trained: any trained model beats it
    sagemaker = boto3.client("sagemaker")
    old = runtime.deployment_requests(aws_lake, old_run, old_url)
    sagemaker.create_model(**old["model"])
    sagemaker.create_endpoint_config(**old["endpoint_config"])
    sagemaker.create_endpoint(**old["endpoint"])
    pipeline.promote(aws_lake, OLD_JOB, old_url, {"dkt": {"auc": 0.5}})
    job_output(tiny_model_dir, f"{sample_lake}/processed/ednet", f"{LAKE}/models/dkt/{JOB}/output/model.tar.gz",
               str(tmp_path / "job"), current_url=old_url)  # the job scores both: any trained model beats the old

    run, states, executions = run_dag_deferring("dkt_train", conf={"hyperparameters": {"epochs": 1}},
                                                run_after=RUN_AFTER)
    assert run.state == "success" and set(states.values()) == {"success"}, states  # the gate let it through
    assert_deferred_then_succeeded(executions, "deploy_endpoint", "SageMakerTrigger", triggerer)  # until InService
    endpoint = sagemaker.describe_endpoint(EndpointName="pythagoras-dkt-endpoint")
    assert endpoint["EndpointConfigName"] == JOB and endpoint["EndpointStatus"] == "InService"
    assert sagemaker.describe_endpoint_config(EndpointConfigName=OLD_JOB)["ProductionVariants"][0]["ModelName"] == OLD_JOB
    assert sagemaker.describe_model(ModelName=OLD_JOB)["PrimaryContainer"]["ModelDataUrl"] == old_url
    current = pipeline.current_model(aws_lake)
    assert current["job_name"] == JOB and current["model_data_url"].endswith(f"{JOB}/output/model.tar.gz")
