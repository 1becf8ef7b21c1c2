"""IAM of the roles whose calls cannot be recorded here: the SageMaker execution role, the Glue job role and the
API Gateway integration and logging roles, from written lists of the calls AWS makes with them.

The lists are built from the requests the code sends (kt.aws_requests, with the settings Terraform writes to
SSM) and from Terraform's own resources (the Glue job's arguments, the tables, the data capture prefix),
so a renamed prefix moves them too. Each call is mapped to its IAM actions and resources with AWS's
catalogue and evaluated against the rendered policies by tests/iam_check.py, like the recorded calls of
the Airflow role in tests/dags/test_iam_calls.py. The evaluator itself is checked first.

    .venv/bin/python -m pytest -q tests/test_iam.py
"""

from __future__ import annotations

import pytest
from iam_check import (
    ACCOUNT,
    Request,
    Requests,
    arn,
    assert_sufficient_and_minimal,
    bucket_policy_denies,
    call_requests,
    decide,
    kms_key_arn,
    lake_bucket,
    policy_json,
    privilege,
    render,
    role_policies,
    terraform_ssm_config,
    tf,
    variable,
)

from kt import aws_requests, dynamo, lake
from kt.config import Settings

RUN = "2026-11-25-0200"
TIME = "1764640800"  # the stream and object names SageMaker adds carry a time

# Granted although no written call needs it, by (role, statement sid, action or resource), with the reason.
KEPT: dict[tuple[str, str, str], str] = {
    ("sagemaker", "WriteModelsOutputsAndCapture", "s3:AbortMultipartUpload"):
        "SageMaker aborts a multipart upload of model or transform output that fails.",
    ("sagemaker", "GrantKeyToVolumes", "kms:CreateGrant"):
        "Terraform's serverless endpoint config names the key (kms_key_arn); SageMaker's documentation does not "
        "say which principal creates the grant for it, so the execution role may.",
    ("glue", "LocateLake", "s3:GetBucketLocation"):
        "AWS's managed policy for Glue job roles (AWSGlueServiceRole) grants it: Glue's S3 client may locate the "
        "bucket; not documented call by call.",
    ("glue", "WriteProcessedAndTemp", "s3:AbortMultipartUpload"):
        "Spark's S3 committer aborts the multipart uploads of a failed task.",
    ("api_post_answer", "TableKeyViaDynamoDB", "kms:GenerateDataKey"):
        "AWS's key policy for DynamoDB users grants kms:GenerateDataKey* with kms:Decrypt; which of them a "
        "PutItem needs when the table key is not cached is not documented call by call.",
}


@pytest.fixture(scope="module")
def settings() -> Settings:
    """The settings the DAGs read on AWS: Terraform's SSM parameter, rendered."""
    return Settings(**terraform_ssm_config())


def _key(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def s3(operation: str, uri: str, **extra: str) -> tuple[str, str, dict]:
    bucket, key = _key(uri)
    if operation in ("ListObjectsV2", "GetBucketLocation"):
        params = {"Bucket": bucket, **({"Prefix": key} if operation == "ListObjectsV2" else {})}
    else:
        params = {"Bucket": bucket, "Key": key}
    return "s3", operation, {**params, **extra}


def upload(uri: str) -> list[tuple[str, str, dict]]:
    """A multipart upload, as SageMaker and Spark write large objects."""
    return [s3(op, uri) for op in ("CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload")]


def pull(image_uri: str) -> list[tuple[str, str, dict]]:
    """Pulling an image from ECR with the role ("CreateTrainingJob API: Execution Role Permissions")."""
    registry, _, rest = image_uri.partition("/")
    repository = rest.split(":")[0].split("@")[0]
    params = {"registryId": registry.split(".")[0], "repositoryName": repository}
    return [("ecr", "GetAuthorizationToken", {})] + [
        ("ecr", op, params) for op in ("BatchCheckLayerAvailability", "GetDownloadUrlForLayer", "BatchGetImage")]


VERSION, NEW_VERSION = "v=20261118T020000000000Z", "v=20261125T020000000000Z"  # kt.lake.new_version


def logs(group: str, stream: str, describe: bool = True, create_group: bool = True) -> list[tuple[str, str, dict]]:
    """A container's CloudWatch Logs: the group (made if missing), its streams, a new stream, the events."""
    return [
        *([("logs", "CreateLogGroup", {"logGroupName": group})] if create_group else []),
        *([("logs", "DescribeLogStreams", {"logGroupName": group})] if describe else []),
        ("logs", "CreateLogStream", {"logGroupName": group, "logStreamName": stream}),
        ("logs", "PutLogEvents", {"logGroupName": group, "logStreamName": stream}),
    ]


def sagemaker_calls(settings: Settings) -> list[tuple[str, str, dict]]:
    """What SageMaker does with the execution role for the DAG's training job, transform job and endpoint."""
    version = lake.join(lake.uris(settings)["processed"], VERSION)  # the processed version dkt_train checked
    promoted = lake.join(lake.uris(settings)["models"], "pythagoras-dkt-2026-11-18-0200", "output", "model.tar.gz")
    training = aws_requests.training_job(settings, RUN, {"epochs": 1}, processed=version, current_model_url=promoted)
    job = training["TrainingJobName"]
    channel, current = (c["DataSource"]["S3DataSource"]["S3Uri"] for c in training["InputDataConfig"])
    output = f"{training['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{job}/output/model.tar.gz"
    checkpoints = training["CheckpointConfig"]["S3Uri"].rstrip("/")
    calls = pull(training["AlgorithmSpecification"]["TrainingImage"])
    calls += [  # training: the channels (File mode copies each prefix), the code, checkpoints both ways, the model
        s3("ListObjectsV2", channel), s3("GetObject", f"{channel}sequences.parquet/split=train/part-00000.parquet"),
        s3("ListObjectsV2", current), s3("GetObject", current),  # the current model's channel: one object's key
        s3("GetObject", training["HyperParameters"]["sagemaker_submit_directory"]),
        s3("ListObjectsV2", f"{checkpoints}/"), s3("GetObject", f"{checkpoints}/checkpoint.pt"),
        s3("PutObject", f"{checkpoints}/checkpoint.pt"), *upload(output),
        *logs("/aws/sagemaker/TrainingJobs", f"{job}/algo-1-{TIME}"),
        ("cloudwatch", "PutMetricData", {"Namespace": "/aws/sagemaker/TrainingJobs"}),
    ]
    model = aws_requests.model(settings, RUN, output)
    transform = aws_requests.transform_job(settings, RUN, "2026-11-25", model["ModelName"])
    source = transform["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    calls += pull(model["PrimaryContainer"]["Image"])
    calls += [  # batch transform: the model, every input object, one output object per input
        s3("GetObject", model["PrimaryContainer"]["ModelDataUrl"]),
        s3("ListObjectsV2", source), s3("GetObject", f"{source}part-00000.jsonl"),
        *upload(f"{transform['TransformOutput']['S3OutputPath']}part-00000.jsonl.out"),
        *logs("/aws/sagemaker/TransformJobs", f"{transform['TransformJobName']}/i-0abc-{TIME}"),
        ("cloudwatch", "PutMetricData", {"Namespace": "/aws/sagemaker/TransformJobs"}),
    ]
    capture = render("${local.data_capture_uri}")
    calls += [  # the endpoint: the model, logs, metrics, and (real-time) data capture encrypted with the key
        s3("GetObject", model["PrimaryContainer"]["ModelDataUrl"]),
        *logs(f"/aws/sagemaker/Endpoints/{settings.endpoint_name}", f"AllTraffic/i-0abc-{TIME}"),
        ("cloudwatch", "PutMetricData", {"Namespace": "/aws/sagemaker/Endpoints"}),
        s3("PutObject", f"{capture}{settings.endpoint_name}/AllTraffic/2026/11/25/02/capture-{TIME}.jsonl"),
        # DataCaptureConfig.KmsKeyId (API reference): "the SageMaker execution role must include
        # permissions to call kms:Encrypt".
        ("kms", "Encrypt", {"KeyId": kms_key_arn()}),
    ]
    return calls


def glue_calls(settings: Settings) -> list[tuple[str, str, dict]]:
    """What a Glue 5 run of Terraform's job does with the Glue role (its arguments from glue.tf)."""
    job = _glue_job()
    args = render(job["default_arguments"])
    script = render(job["command"][0]["script_location"])
    raw, processed, temp = args["--raw"], args["--processed"], args["--TempDir"]
    raw_version, new, old = f"{raw}{VERSION}/", f"{processed}{NEW_VERSION}/", f"{processed}{VERSION}/"
    calls = [
        s3("GetObject", script), s3("GetObject", args["--extra-py-files"]), s3("GetObject", args["--skill-mappings"]),
        # the raw pointer, then the version it names (kt.lake.current)
        s3("HeadObject", f"{raw}_current.json"), s3("GetObject", f"{raw}_current.json"),
        s3("ListObjectsV2", raw_version), s3("GetObject", f"{raw_version}train.csv"),
        s3("GetObject", f"{raw_version}questions.csv"),
        # Spark writes a new version (overwrite: list and delete what a killed attempt left) and stages through --TempDir
        s3("ListObjectsV2", new), s3("DeleteObject", f"{new}sequences.parquet/split=train/old.parquet"),
        *upload(f"{new}sequences.parquet/split=train/part-00000.parquet"), s3("PutObject", f"{new}_manifest.json"),
        # kt.lake.publish_version: check, switch the pointer (one PUT), prune the versions beyond --keep-versions
        s3("GetObject", f"{new}_manifest.json"), s3("GetObject", f"{processed}_current.json"),
        s3("PutObject", f"{processed}_current.json"), s3("ListObjectsV2", processed),
        s3("DeleteObject", f"{old}_manifest.json"),  # DeleteObjects: s3:DeleteObject on each key
        s3("PutObject", processed),  # pyarrow's empty directory marker processed/ednet/ after deleting below it
        s3("ListObjectsV2", temp), *[s3(op, f"{temp}partitionlisting/x") for op in ("PutObject", "GetObject",
                                                                                    "DeleteObject")],
        # continuous logging, KMS-encrypted by the security configuration ("Setting up encryption in AWS Glue":
        # the role needs logs:AssociateKmsKey; job bookmarks are encrypted client side with kms:Encrypt/Decrypt)
        *[call for group in ("/aws-glue/jobs/logs-v2", "/aws-glue/jobs/output", "/aws-glue/jobs/error")
          for call in logs(group, f"jr_0abc-{TIME}", describe=False)],
        ("logs", "AssociateKmsKey", {"logGroupName": "/aws-glue/jobs/logs-v2"}),
        ("kms", "Encrypt", {"KeyId": kms_key_arn()}), ("kms", "Decrypt", {"KeyId": kms_key_arn()}),
        ("cloudwatch", "PutMetricData", {"Namespace": "Glue"}),  # --enable-metrics
    ]
    return calls


def _glue_job() -> dict:
    return next(entry["aws_glue_job"]["this"] for entry in tf("glue.tf")["resource"] if "aws_glue_job" in entry)


# TransactWriteItems has no IAM action of its own: IAM authorises each write inside it as the single-item call.
TRANSACT_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem"}


def answer_transaction_calls(settings: Settings) -> list[tuple[str, str, dict]]:
    """POST /api/kt/answers: the writes of kt.dynamo.answer_transaction (what post_answer_request.vtl renders)."""
    answer = {"user_id": "u1", "answer_id": "a1", "answered_at": "2026-11-25T10:00:00.000Z", "skill_id": 3, "correct": 1}
    request = dynamo.answer_transaction(answer, settings.history_table, settings.mastery_table)
    return [("dynamodb", TRANSACT_ACTIONS[kind], {"TableName": write["TableName"]})
            for item in request["TransactItems"] for kind, write in item.items()]


def api_calls(settings: Settings) -> dict[str, list[tuple[str, str, dict]]]:
    """What API Gateway does with each integration role (api_gateway.tf) and its logging role."""
    execution_group = f"API-Gateway-Execution-Logs_a1b2c3d4e5/{variable('api_stage_name')}"
    access_group = render("${aws_cloudwatch_log_group.api_access.name}")
    return {
        "api_get_mastery": [("dynamodb", "GetItem", {"TableName": settings.mastery_table})],
        "api_post_answer": answer_transaction_calls(settings),
        "api_invoke_endpoint": [("sagemaker", "InvokeEndpoint", {"EndpointName": settings.endpoint_name})],
        "api_cloudwatch": [("logs", "DescribeLogGroups", {}),
                           *logs(execution_group, f"{TIME}-abc"),
                           *logs(access_group, f"{TIME}-abc", create_group=False)],
    }


def written_requests(settings: Settings) -> list[Request]:
    out: list[Request] = []
    calls = {"sagemaker": sagemaker_calls(settings), "glue": glue_calls(settings), **api_calls(settings)}
    for principal, listed in calls.items():
        requests = Requests(principal)
        for service, operation, params in listed:
            call_requests(requests, service, operation, params)
        out += requests.items
    return out


def test_every_written_call_is_allowed_and_every_grant_used(settings, capsys):
    requests = written_requests(settings)
    with capsys.disabled():
        assert_sufficient_and_minimal(
            requests, ("sagemaker", "glue", "api_get_mastery", "api_post_answer", "api_invoke_endpoint", "api_cloudwatch"),
            KEPT, f"SageMaker, Glue and API Gateway roles: {len(requests)} authorization requests")


# The evaluator and the catalogue


def test_the_catalogue_lists_both_resources_for_create_and_update_endpoint():
    for action in ("sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint"):
        required = {t for t, spec in privilege(action)["resource_types"].items() if spec["required"]}
        assert required == {"endpoint", "endpoint-config"}, action


def test_create_endpoint_is_checked_on_the_endpoint_config_too(settings):
    requests = Requests("airflow")
    call_requests(requests, "sagemaker", "CreateEndpoint", aws_requests.endpoint(settings, RUN))
    resources = {r.resource for r in requests.items if r.action == "sagemaker:CreateEndpoint"}
    prefix = f"arn:aws:sagemaker:{variable('region')}:{ACCOUNT}"
    assert resources == {f"{prefix}:endpoint/{settings.endpoint_name}",
                         f"{prefix}:endpoint-config/{aws_requests.names(settings, RUN)['endpoint_config']}"}


@pytest.mark.parametrize("statement, request_, decision", [
    ({"Effect": "Allow", "Action": ["s3:Get*"], "Resource": ["arn:aws:s3:::b/a/*"]},
     Request("x", "s3:GetObject", "arn:aws:s3:::b/a/k"), "Allow"),
    ({"Effect": "Allow", "Action": ["S3:GETOBJECT"], "Resource": ["arn:aws:s3:::b/a/*"]},  # actions: any case
     Request("x", "s3:GetObject", "arn:aws:s3:::b/A/k"), "ImplicitDeny"),  # resources: case matters
    ({"Effect": "Allow", "NotAction": ["s3:PutObject"], "Resource": ["*"]},
     Request("x", "s3:GetObject", "arn:aws:s3:::b/k"), "Allow"),
    ({"Effect": "Allow", "NotAction": ["s3:*"], "Resource": ["*"]},
     Request("x", "s3:GetObject", "arn:aws:s3:::b/k"), "ImplicitDeny"),
    ({"Effect": "Allow", "Action": ["s3:ListBucket"], "NotResource": ["arn:aws:s3:::other"]},
     Request("x", "s3:ListBucket", "arn:aws:s3:::b"), "Allow"),
    ({"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": ["arn:aws:s3:::b"],
      "Condition": {"StringLike": {"s3:prefix": ["raw/*"]}}},
     Request("x", "s3:ListBucket", "arn:aws:s3:::b"), "ImplicitDeny"),  # no prefix in the request: no Allow
    ({"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": ["arn:aws:s3:::b"],
      "Condition": {"StringLike": {"s3:prefix": ["raw/*"]}}},
     Request("x", "s3:ListBucket", "arn:aws:s3:::b", (("s3:prefix", "raw/x/"),)), "Allow"),
    ({"Effect": "Allow", "Action": ["sagemaker:CreateEndpoint"], "Resource": ["arn:aws:sagemaker:r:1:endpoint/e?"]},
     Request("x", "sagemaker:CreateEndpoint", "arn:aws:sagemaker:r:1:endpoint/e12"), "ImplicitDeny"),
])
def test_statements_match_as_iam_matches_them(statement, request_, decision):
    assert decide({"Statement": [statement]}, request_) == decision


def test_an_explicit_deny_wins():
    allow = {"Effect": "Allow", "Action": ["s3:*"], "Resource": ["*"]}
    deny = {"Effect": "Deny", "Action": ["s3:DeleteObject"], "Resource": ["arn:aws:s3:::b/*"]}
    assert decide({"Statement": [allow, deny]}, Request("x", "s3:DeleteObject", "arn:aws:s3:::b/k")) == "Deny"
    assert decide({"Statement": [allow, deny]}, Request("x", "s3:GetObject", "arn:aws:s3:::b/k")) == "Allow"


def test_the_lake_bucket_policy_denies_only_requests_without_tls():
    request = Request("airflow", "s3:GetObject", arn("s3", "object", BucketName=lake_bucket(), ObjectName="raw/x"))
    assert not bucket_policy_denies(request)
    plain = Request(request.principal, request.action, request.resource, (("aws:SecureTransport", "false"),))
    assert decide(policy_json("lake_bucket"), plain) == "Deny"


def test_rendered_policies_resolve_every_reference():
    for principal, document in role_policies().items():
        for statement in document["Statement"]:
            for value in statement.get("Resource", []) + [v for c in statement.get("Condition", {}).values()
                                                          for vs in c.values() for v in vs]:
                assert "${" not in value and "local." not in value, (principal, value)
    assert arn("s3", "bucket", BucketName=render("${local.lake_bucket_name}")) == render("${local.lake_arn}")
