"""dkt_train's endpoint config against Terraform's, field by field, as `terraform plan` would resolve them.

Terraform creates the first endpoint config (terraform/sagemaker.tf); every promotion replaces it with
the one kt.aws_requests builds from the SSM config (terraform/locals.tf ssm_config -> kt.config). Here
both are rendered for the same variable values: the HCL expressions are evaluated (a small evaluator
for the subset these files use), the SSM JSON goes through kt.config.load_settings, and the
aws_sagemaker_endpoint_configuration arguments are mapped to CreateEndpointConfig's fields (the AWS
provider's argument names are the API's in snake case). Any argument this mapping does not know
fails the test, so a new Terraform setting cannot be left out of promotions unnoticed. Both requests
are checked against botocore's service model. The variable validations are evaluated the same way and
must accept nothing the code refuses.

    .venv/bin/python -m pytest tests/test_promotion_parity.py -q
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import botocore.session
import hcl2
import pytest
from botocore.validate import validate_parameters
from hcl2 import SerializationOptions

from kt import aws_requests, drift, etl, lake
from kt.config import ConfigError, load_settings

TF_DIR = Path(__file__).resolve().parents[1] / "terraform"
PARSE_OPTIONS = SerializationOptions(strip_string_quotes=True, with_comments=False, explicit_blocks=False)
SAGEMAKER = botocore.session.get_session().get_service_model("sagemaker")
RUN = "2026-11-25-0200"
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
# Values known only after apply, or computed by functions this evaluator leaves out (data sources, regex).
KNOWN_AFTER_APPLY = {
    "local.account_id": "123456789012",
    "local.partition": "aws",
    "local.lake_bucket_name": "pythagoras-kt-lake-123456789012-us-east-1",
    "local.training_image_uri": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.6.0-gpu-py312",
    "local.inference_image_uri": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-cpu-py312",
    "aws_kms_key.this.arn": KMS_KEY,
}
# aws_sagemaker_endpoint_configuration arguments -> CreateEndpointConfig fields. A tuple names a nested
# block: (field, its own mapping, True when the block occurs at most once, i.e. the API takes an object).
ENDPOINT_CONFIG_FIELDS: dict[str, Any] = {
    "kms_key_arn": "KmsKeyId",
    "production_variants": ("ProductionVariants", {
        "variant_name": "VariantName",
        "model_name": "ModelName",
        "instance_type": "InstanceType",
        "initial_instance_count": "InitialInstanceCount",
        "initial_variant_weight": "InitialVariantWeight",
        "serverless_config": ("ServerlessConfig", {
            "memory_size_in_mb": "MemorySizeInMB",
            "max_concurrency": "MaxConcurrency",
            "provisioned_concurrency": "ProvisionedConcurrency",
        }, True),
    }, False),
    "data_capture_config": ("DataCaptureConfig", {
        "enable_capture": "EnableCapture",
        "initial_sampling_percentage": "InitialSamplingPercentage",
        "destination_s3_uri": "DestinationS3Uri",
        "kms_key_id": "KmsKeyId",
        "capture_options": ("CaptureOptions", {"capture_mode": "CaptureMode"}, False),
        "capture_content_type_header": ("CaptureContentTypeHeader", {
            "json_content_types": "JsonContentTypes",
            "csv_content_types": "CsvContentTypes",
        }, True),
    }, True),
}
NAMING_AND_META = {"name", "name_prefix", "tags", "count", "lifecycle", "depends_on"}
PROVIDER_UNIQUE_SUFFIX = "20261125020000000000000001"  # what the AWS provider appends to a name_prefix: 26 characters


# HCL: the files, and an evaluator for the expressions they use


@functools.cache
def tf_files() -> tuple[dict, ...]:
    return tuple(hcl2.load(path.open(), serialization_options=PARSE_OPTIONS) for path in sorted(TF_DIR.glob("*.tf")))


def declared(kind: str) -> dict[str, Any]:
    """Every variable, local or resource ('type.name' -> body) of terraform/."""
    found: dict[str, Any] = {}
    for doc in tf_files():
        for entry in doc.get(kind, []):
            for key, value in entry.items():
                if kind == "resource":
                    found.update({f"{key}.{name}": body for name, body in value.items()})
                else:
                    found[key] = value
    return found


class _NoMatch:
    """What regex() gives when it finds nothing (Terraform raises an error, which can() turns into false)."""


def _regex(pattern: str, text: str) -> Any:
    match = re.search(pattern, text)  # RE2 and re agree on the patterns used here
    return _NoMatch() if match is None else match.group(0)


FUNCTIONS = {
    "contains": lambda items, value: value in items,
    "can": lambda value: not isinstance(value, _NoMatch),
    "regex": _regex,
    "floor": math.floor,
    "lower": str.lower,
    "md5": lambda text: hashlib.md5(text.encode()).hexdigest(),
    "substr": lambda text, offset, length: text[offset:offset + length],
    "coalesce": lambda *values: next(v for v in values if v not in (None, "")),
}
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
REFERENCE = re.compile(r"\b(?:var|local)\.\w+|\baws_\w+\.\w+(?:\[\d+\])?\.\w+")


class Plan:
    """Terraform's values for one set of input variables, resolved like `terraform plan`."""

    def __init__(self, **variables: Any):
        declared_variables = declared("variable")
        assert set(variables) <= set(declared_variables), set(variables) - set(declared_variables)
        self.variables = {name: body["default"] for name, body in declared_variables.items()} | variables
        self.locals = declared("locals")
        self.resources = declared("resource")

    def value(self, node: Any) -> Any:
        """A parsed HCL value with every expression and template evaluated."""
        if isinstance(node, dict):
            return {key: self.value(item) for key, item in node.items()}
        if isinstance(node, list):
            return [self.value(item) for item in node]
        if not isinstance(node, str) or "${" not in node:
            return node
        whole = re.fullmatch(r"\$\{(.*)\}", node, re.S)
        if whole and "${" not in whole.group(1):
            return self.expression(whole.group(1))
        return re.sub(r"\$\{([^{}]*)\}", lambda m: str(self.expression(m.group(1))), node)

    def reference(self, name: str) -> Any:
        if name in KNOWN_AFTER_APPLY:
            return KNOWN_AFTER_APPLY[name]
        kind, _, rest = name.partition(".")
        if kind == "var":
            return self.variables[rest]
        if kind == "local":
            return self.value(self.locals[rest])
        resource, attribute = re.sub(r"\[\d+\]", "", name).rsplit(".", 1)
        body = self.resources[resource]
        if attribute in body:  # an argument: its value
            return self.value(body[attribute])
        return f"{resource}.{attribute}"  # an attribute known after apply (arn, id): stands for itself

    def expression(self, text: str) -> Any:
        """One HCL expression (literals, references, functions, operators, one conditional) via Python."""
        names: dict[str, Any] = {}

        def keep(value: Any) -> str:
            names[f"_v{len(names)}"] = value
            return f"_v{len(names) - 1}"

        code = STRING.sub(lambda m: keep(self.value(json.loads(m.group(0)))), text)
        code = REFERENCE.sub(lambda m: keep(self.reference(m.group(0))), code)
        code = code.replace("&&", " and ").replace("||", " or ")
        code = re.sub(r"!(?!=)", " not ", code)
        for hcl, python in (("null", "None"), ("true", "True"), ("false", "False")):
            code = re.sub(rf"\b{hcl}\b", python, code)
        conditional = re.fullmatch(r"(.+?)\?(.+?):(.+)", code, re.S)
        if conditional:
            code = f"({conditional[2]}) if ({conditional[1]}) else ({conditional[3]})"
        return eval(code, {"__builtins__": {}}, {**FUNCTIONS, **names})  # noqa: S307 - our own .tf files

    def block(self, body: dict) -> dict:
        """A resource or block body: arguments evaluated, `dynamic` blocks expanded, nulls dropped."""
        out: dict = {}
        for key, item in body.items():
            if key == "dynamic":
                for dynamic in item:
                    for name, spec in dynamic.items():
                        for _ in self.value(spec["for_each"]):
                            out.setdefault(name, []).extend(self.block(content) for content in spec["content"])
                continue
            if isinstance(item, list) and item and all(isinstance(b, dict) for b in item):
                out[key] = [self.block(b) for b in item]
                continue
            value = self.value(item)
            if value is not None:
                out[key] = value
        return out

    def ssm_config(self) -> dict:
        """The SSM parameter's JSON, as jsonencode writes it."""
        return json.loads(json.dumps(self.value(self.locals["ssm_config"])))

    def validation_accepts(self, variable: str, value: Any) -> bool:
        """Whether every validation block of a variable accepts a value."""
        plan = Plan(**{variable: value})
        return all(plan.value(rule["condition"]) for rule in declared("variable")[variable].get("validation", []))


def to_api(arguments: dict, fields: dict[str, Any]) -> dict:
    """Terraform arguments -> API fields, refusing any argument the mapping does not know."""
    unknown = set(arguments) - set(fields)
    assert not unknown, f"Terraform sets {sorted(unknown)}: map them to CreateEndpointConfig and to kt.aws_requests"
    out: dict = {}
    for key, value in arguments.items():
        field = fields[key]
        if isinstance(field, str):
            out[field] = value
            continue
        name, nested, single = field
        items = [to_api(item, nested) for item in value]
        if single:
            assert len(items) == 1, f"{key} is a single block"
            out[name] = items[0]
        else:
            out[name] = items
    return out


def terraform_endpoint_config(plan: Plan) -> dict:
    """aws_sagemaker_endpoint_configuration.this as the CreateEndpointConfig request the provider sends."""
    body = plan.block(declared("resource")["aws_sagemaker_endpoint_configuration.this"])
    request = to_api({k: v for k, v in body.items() if k not in NAMING_AND_META}, ENDPOINT_CONFIG_FIELDS)
    request["EndpointConfigName"] = body["name_prefix"] + PROVIDER_UNIQUE_SUFFIX
    return request


def dag_endpoint_config(plan: Plan) -> tuple[dict, Any]:
    """The request dkt_train sends, built from the settings the SSM config gives."""
    settings = load_settings(environ={"KT_RUNTIME": "aws"}, ssm=plan.ssm_config())
    return aws_requests.endpoint_config(settings, RUN), settings


def _comparable(request: dict) -> dict:
    """A request without its name, tags and model name (compared apart), with the API's default
    InitialVariantWeight (1.0 when left out) filled in: what SageMaker will use."""
    variants = [{"InitialVariantWeight": 1.0, **{k: v for k, v in variant.items() if k != "ModelName"}}
                for variant in request["ProductionVariants"]]
    return {**{k: v for k, v in request.items() if k not in ("EndpointConfigName", "Tags")}, "ProductionVariants": variants}


PLANS = {
    "serverless defaults": {},
    "realtime defaults": {"endpoint_mode": "realtime"},
    "realtime custom": {"endpoint_mode": "realtime", "sagemaker_name_prefix": "acme-kt", "endpoint_min_instances": 2,
                        "endpoint_instance_type": "ml.m5.xlarge", "data_capture_sampling_percentage": 35,
                        "endpoint_name": "acme-endpoint", "model_data_url": "s3://b/models/x/model.tar.gz"},
    "serverless custom": {"sagemaker_name_prefix": "acme-kt", "serverless_memory_mb": 6144,
                          "serverless_max_concurrency": 7, "model_data_url": "s3://b/models/x/model.tar.gz"},
}


@pytest.mark.parametrize("case", list(PLANS))
def test_promotion_sends_terraforms_endpoint_config_field_by_field(case):
    plan = Plan(**PLANS[case])
    terraform = terraform_endpoint_config(plan)
    dag, settings = dag_endpoint_config(plan)
    prefix = plan.variables["sagemaker_name_prefix"]
    # Names: both on the prefix that scopes the Airflow role's IAM (lower-cased in ARNs, as locals.tf globs it).
    assert settings.sagemaker_name_prefix == prefix
    assert terraform["EndpointConfigName"].startswith(f"{prefix}-tf-") and dag["EndpointConfigName"].startswith(f"{prefix}-")
    assert terraform["ProductionVariants"][0]["ModelName"].startswith(f"{prefix}-tf-")
    assert dag["ProductionVariants"][0]["ModelName"] == aws_requests.names(settings, RUN)["model"]
    assert all(n.lower().startswith(plan.value("${local.sagemaker_name_glob}").rstrip("*"))
               for n in aws_requests.names(settings, RUN).values())
    # Everything else, field by field.
    assert _comparable(dag) == _comparable(terraform)
    # The modes as AWS allows them: capture only on realtime, the volume key only on serverless.
    realtime = plan.variables["endpoint_mode"] == "realtime"
    assert ("DataCaptureConfig" in dag) is realtime and ("KmsKeyId" in dag) is not realtime
    if realtime:
        capture = dag["DataCaptureConfig"]
        assert capture["KmsKeyId"] == KMS_KEY and capture["EnableCapture"] is True
        assert capture["DestinationS3Uri"] == plan.value("${local.data_capture_uri}") == \
            lake.uris(settings)["data_capture"]
        assert drift.capture_prefix(settings) == (capture["DestinationS3Uri"] + settings.endpoint_name + "/"
                                                  + dag["ProductionVariants"][0]["VariantName"])
        assert dag["ProductionVariants"][0]["VariantName"] == plan.value("${local.variant_name}")


@pytest.mark.parametrize("case", list(PLANS))
def test_both_endpoint_configs_satisfy_the_sagemaker_service_model(case):
    from test_aws_requests import _constraints  # pattern, length, range and enum checks botocore leaves out

    plan = Plan(**PLANS[case])
    shape = SAGEMAKER.operation_model("CreateEndpointConfig").input_shape
    for request in (terraform_endpoint_config(plan), dag_endpoint_config(plan)[0]):
        validate_parameters(request, shape)
        assert _constraints(shape, request) == []


def test_the_ssm_config_carries_what_promotions_need():
    config = Plan(endpoint_mode="realtime", sagemaker_name_prefix="acme-kt").ssm_config()
    assert config["sagemaker_name_prefix"] == "acme-kt" and config["kms_key_arn"] == KMS_KEY
    assert config["lake"] == "s3://pythagoras-kt-lake-123456789012-us-east-1"
    settings = load_settings(environ={"KT_RUNTIME": "aws"}, ssm=config)
    assert lake.uris(settings)["data_capture"] == Plan().value("${local.data_capture_uri}")


# Variable validations accept only what the code accepts.

# variable -> (sample values, whether the code accepts one)
def _setting_accepts(env_var: str):
    def accepts(value: Any) -> bool:
        try:
            load_settings(environ={env_var: str(value)})
        except ConfigError:
            return False
        return True

    return accepts


VALIDATED = {
    "glue_input_format": (["riiid", "kt1", "ednet-kt1", "KT1", ""], lambda v: v in etl.FORMATS),
    "endpoint_mode": (["serverless", "realtime", "async", ""], _setting_accepts("KT_ENDPOINT_MODE")),
    "sagemaker_name_prefix": (["pythagoras-dkt", "a", "a" * 33, "a" * 34, "-dkt", "dkt-", "dkt_x", "dk t", "a--b", ""],
                              _setting_accepts("KT_SAGEMAKER_NAME_PREFIX")),
    "data_capture_sampling_percentage": ([-1, 0, 20, 100, 101], _setting_accepts("KT_DATA_CAPTURE_SAMPLING_PERCENTAGE")),
    "endpoint_min_instances": ([0, 1, 2], _setting_accepts("KT_ENDPOINT_MIN_INSTANCES")),
    "serverless_memory_mb": ([512, 1024, 3072, 6144, 7168], _setting_accepts("KT_SERVERLESS_MEMORY_MB")),
    "serverless_max_concurrency": ([0, 1, 200, 201], _setting_accepts("KT_SERVERLESS_MAX_CONCURRENCY")),
}


@pytest.mark.parametrize("variable", list(VALIDATED))
def test_variable_validations_accept_only_what_the_code_accepts(variable):
    samples, code_accepts = VALIDATED[variable]
    plan = Plan()
    verdicts = {value: (plan.validation_accepts(variable, value), code_accepts(value)) for value in samples}
    assert all(code for terraform, code in verdicts.values() if terraform), verdicts
    assert any(terraform for terraform, _ in verdicts.values()), verdicts  # the samples hit both sides
    assert not all(terraform for terraform, _ in verdicts.values()), verdicts
    assert plan.validation_accepts(variable, plan.variables[variable])  # the default passes


def test_the_name_prefix_rule_is_the_same_in_terraform_and_kt_config():
    """Terraform and the code refuse exactly the same prefixes, and the longest keeps every name within 63."""
    plan = Plan()
    samples = VALIDATED["sagemaker_name_prefix"][0]
    accepts = _setting_accepts("KT_SAGEMAKER_NAME_PREFIX")
    assert [plan.validation_accepts("sagemaker_name_prefix", s) for s in samples] == [accepts(s) for s in samples]
    longest = Plan(sagemaker_name_prefix="a" * 33, model_data_url="s3://b/m.tar.gz")
    assert len(terraform_endpoint_config(longest)["EndpointConfigName"]) == 63
    settings = load_settings(environ={"KT_RUNTIME": "aws"}, ssm=longest.ssm_config())
    assert max(len(n) for n in aws_requests.names(settings, RUN).values()) <= 63


@pytest.mark.parametrize("case", list(PLANS))
def test_promoted_models_run_with_terraforms_container_environment(case):
    """The model dkt_train creates gets the container environment of Terraform's (TorchServe's response limit included)."""
    plan = Plan(**PLANS[case])
    terraform = plan.block(declared("resource")["aws_sagemaker_model.this"])["primary_container"][0]["environment"]
    _, settings = dag_endpoint_config(plan)
    dag = aws_requests.model(settings, RUN, "s3://b/models/x/model.tar.gz")["PrimaryContainer"]["Environment"]
    assert dag == terraform
    assert int(dag["TS_MAX_RESPONSE_SIZE"]) == aws_requests.MAX_RESPONSE_BYTES
