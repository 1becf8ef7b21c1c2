"""Static checks of terraform/: there is no terraform binary or provider registry here.

Every .tf file is parsed with python-hcl2 and checked for documented, declared and resolvable
names, the names the DAGs and the API rely on (docs/contracts.md, kt.config.Settings), least-privilege
IAM, and the alarm thresholds. Tools that must not enter the app venv run from `.venv-lint`
(built by `make lint`): checkov, the AWS provider schema of the CDKTF bindings (read as source,
never imported) and a VTL engine that renders the API Gateway mapping templates.

    .venv/bin/python -m pytest tests/test_terraform.py -q
"""

from __future__ import annotations

import ast
import functools
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import jsonschema
import pytest
from hcl2 import SerializationOptions
from kt_testing import render_vtl

ROOT = Path(__file__).resolve().parents[1]
TF_DIR = ROOT / "terraform"
TEMPLATES = TF_DIR / "templates"
CONFIG_PY = ROOT / "src" / "kt" / "config.py"
LINT_VENV = ROOT / ".venv-lint"
CHECKOV = LINT_VENV / "bin" / "checkov"
MAKE_LINT_HINT = "run `make lint`, which builds .venv-lint from requirements-lint.txt"

PARSE_OPTIONS = SerializationOptions(strip_string_quotes=True, with_comments=False, explicit_blocks=False)
META_ARGUMENTS = {"count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection"}
# Settings fields that are runtime-only and never written by Terraform.
RUNTIME_ONLY_SETTINGS = {"runtime", "aws_endpoint_url", "ssm_parameter", "api_key"}

VAR_REF = re.compile(r"\bvar\.([A-Za-z_][\w-]*)")
LOCAL_REF = re.compile(r"\blocal\.([A-Za-z_][\w-]*)")
DATA_REF = re.compile(r"\bdata\.(aws_\w+)\.(\w+)")
RESOURCE_REF = re.compile(r"(?<![\w.])(aws_\w+)\.([A-Za-z_][\w-]*)")


# HCL loading


@functools.cache
def tf_files() -> dict[str, dict]:
    """Every .tf file of terraform/, parsed."""
    files = sorted(TF_DIR.glob("*.tf"))
    assert files, f"no .tf files in {TF_DIR}"
    return {path.name: hcl2.load(path.open(), serialization_options=PARSE_OPTIONS) for path in files}


def blocks(kind: str) -> Iterator[tuple[str, str, str, dict]]:
    """(file, type, name, body) of every `resource` or `data` block."""
    for file, doc in tf_files().items():
        for entry in doc.get(kind, []):
            for type_, named in entry.items():
                for name, body in named.items():
                    yield file, type_, name, body


def resource(type_: str, name: str) -> dict:
    found = [body for _, t, n, body in blocks("resource") if (t, n) == (type_, name)]
    assert len(found) == 1, f"expected one resource {type_}.{name}, found {len(found)}"
    return found[0]


def data_source(type_: str, name: str) -> dict:
    found = [body for _, t, n, body in blocks("data") if (t, n) == (type_, name)]
    assert len(found) == 1, f"expected one data source {type_}.{name}, found {len(found)}"
    return found[0]


@functools.cache
def variables() -> dict[str, dict]:
    found: dict[str, dict] = {}
    for doc in tf_files().values():
        for entry in doc.get("variable", []):
            for name, body in entry.items():
                assert name not in found, f"variable {name} declared twice"
                found[name] = body
    return found


@functools.cache
def locals_() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for doc in tf_files().values():
        for entry in doc.get("locals", []):
            for name, value in entry.items():
                assert name not in found, f"local {name} declared twice"
                found[name] = value
    return found


@functools.cache
def outputs() -> dict[str, dict]:
    return {
        name: body for doc in tf_files().values() for entry in doc.get("output", []) for name, body in entry.items()
    }


def strings(node: Any) -> Iterator[str]:
    """Every string in a parsed value, including interpolated map keys."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            if key.startswith("${"):
                yield key
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def all_strings() -> Iterator[str]:
    for doc in tf_files().values():
        yield from strings(doc)


def one(body: dict, block: str) -> dict:
    """The single nested block `block` of a body."""
    value = body[block]
    assert isinstance(value, list) and len(value) == 1, f"expected one {block} block"
    return value[0]


def ref(text: str) -> str:
    """`${x}` -> `x` for comparing plain references."""
    match = re.fullmatch(r"\$\{(.*)\}", text)
    return match.group(1) if match else text


# kt.config.Settings, read with ast so the test does not depend on install state


@functools.cache
def settings_defaults() -> dict[str, Any]:
    tree = ast.parse(CONFIG_PY.read_text())
    constants = {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
    }
    settings = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Settings")
    defaults: dict[str, Any] = {}
    for node in settings.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            value = node.value
            if isinstance(value, ast.Constant):
                defaults[node.target.id] = value.value
            elif isinstance(value, ast.Name):
                defaults[node.target.id] = constants[value.id]
            else:
                defaults[node.target.id] = None
    return defaults


# Layout and documentation


def test_each_file_opens_with_a_comment_saying_what_it_provisions():
    for path in sorted(TF_DIR.glob("*.tf")) + [TF_DIR / "backend.tf.example"]:
        assert path.read_text().startswith("# "), f"{path.name} must start with a comment"


def test_versions_tf_holds_constraints_only():
    doc = tf_files()["versions.tf"]
    assert set(doc) == {"terraform"}
    terraform = doc["terraform"][0]
    assert set(terraform) == {"required_version", "required_providers"}
    aws = terraform["required_providers"][0]["aws"]
    assert aws["source"] == "hashicorp/aws"
    # The CDKTF schema used below is AWS provider 6.25; keep the constraint in step.
    assert aws["version"].startswith(">= 6.25")


def test_backend_example_uses_s3_native_locking():
    doc = hcl2.loads((TF_DIR / "backend.tf.example").read_text(), serialization_options=PARSE_OPTIONS)
    backend = doc["terraform"][0]["backend"][0]["s3"]
    assert backend["use_lockfile"] is True
    assert backend["encrypt"] is True


def test_variables_have_description_type_default_in_that_order():
    for name, body in variables().items():
        keys = [key for key in body if key in ("description", "type", "default")]
        assert keys == ["description", "type", "default"], f"variable {name}: {keys}"
        assert isinstance(body["description"], str) and body["description"].strip(), f"variable {name}"


@pytest.mark.parametrize(
    "name", ["environment", "endpoint_mode", "glue_worker_type", "serverless_memory_mb", "glue_input_format"]
)
def test_variables_limited_to_a_few_values_are_validated(name):
    assert variables()[name].get("validation"), f"variable {name} needs a validation block"


def test_every_variable_used_is_declared_and_every_declared_variable_used():
    used = {match for text in all_strings() for match in VAR_REF.findall(text)}
    declared = set(variables())
    assert used - declared == set(), "used but not declared"
    assert declared - used == set(), "declared but never used"


def test_tfvars_set_only_declared_variables():
    for path in sorted((TF_DIR / "envs").glob("*.tfvars")):
        values = hcl2.loads(path.read_text(), serialization_options=PARSE_OPTIONS)
        assert set(values) <= set(variables()), f"{path.name}: {set(values) - set(variables())}"
    assert {p.name for p in (TF_DIR / "envs").glob("*.tfvars")} >= {"dev.tfvars", "prod.tfvars"}


def test_every_local_used_is_declared():
    used = {match for text in all_strings() for match in LOCAL_REF.findall(text)}
    assert used - set(locals_()) == set()


def test_every_resource_and_data_reference_resolves():
    resources = {(t, n) for _, t, n, _ in blocks("resource")}
    datas = {(t, n) for _, t, n, _ in blocks("data")}
    for text in all_strings():
        for found in DATA_REF.findall(text):
            assert found in datas, f"data.{found[0]}.{found[1]} is not declared"
        for found in RESOURCE_REF.findall(text):
            assert found in resources, f"{found[0]}.{found[1]} is not declared (in {text!r})"


def test_outputs_have_descriptions():
    assert outputs()
    for name, body in outputs().items():
        assert isinstance(body.get("description"), str) and body["description"].strip(), f"output {name}"


def test_single_resources_are_named_this_or_by_role():
    for file, type_, name, _ in blocks("resource"):
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name), f"{file}: {type_}.{name}"


# Names and contracts the DAGs and the API rely on


@pytest.mark.parametrize(
    ("variable", "expected"),
    [
        ("project", "pythagoras-kt"),
        ("history_table_name", "kt-history"),
        ("mastery_table_name", "kt-mastery"),
        ("endpoint_name", "pythagoras-dkt-endpoint"),
        ("glue_job_name", "ednet-preprocessor"),
        ("glue_version", "5.1"),
        ("glue_worker_type", "G.1X"),
        ("glue_number_of_workers", 10),
        ("ssm_parameter_name", "/pythagoras-kt/config"),
        ("sagemaker_enabled", False),
        ("endpoint_mode", "serverless"),
        ("serverless_memory_mb", 3072),
        ("serverless_max_concurrency", 20),
        ("endpoint_instance_type", "ml.g4dn.xlarge"),
        ("training_instance_type", "ml.g4dn.xlarge"),
        ("transform_instance_type", "ml.m5.large"),
        ("drift_threshold", 0.2),
    ],
)
def test_contract_defaults(variable, expected):
    assert variables()[variable]["default"] == expected


@pytest.mark.parametrize(
    ("variable", "field"),
    [
        ("history_table_name", "history_table"),
        ("mastery_table_name", "mastery_table"),
        ("endpoint_name", "endpoint_name"),
        ("glue_job_name", "glue_job_name"),
        ("sagemaker_enabled", "sagemaker_enabled"),
        ("endpoint_mode", "endpoint_mode"),
        ("serverless_memory_mb", "serverless_memory_mb"),
        ("serverless_max_concurrency", "serverless_max_concurrency"),
        ("endpoint_instance_type", "endpoint_instance_type"),
        ("training_instance_type", "training_instance_type"),
        ("transform_instance_type", "transform_instance_type"),
        ("region", "region"),
        ("ssm_parameter_name", "ssm_parameter"),
        ("keep_versions", "keep_versions"),
    ],
)
def test_defaults_agree_with_kt_config(variable, field):
    assert variables()[variable]["default"] == settings_defaults()[field]


def test_endpoint_mode_and_memory_validation_values():
    mode = variables()["endpoint_mode"]["validation"][0]["condition"]
    assert '"serverless"' in mode and '"realtime"' in mode
    memory = variables()["serverless_memory_mb"]["validation"][0]["condition"]
    assert all(str(mb) in memory for mb in (1024, 2048, 3072, 4096, 5120, 6144))


def test_ssm_parameter_keys_are_exactly_the_settings_fields():
    expected = set(settings_defaults()) - RUNTIME_ONLY_SETTINGS
    assert set(locals_()["ssm_config"]) == expected
    parameter = resource("aws_ssm_parameter", "this")
    assert parameter["type"] == "String"
    assert parameter["name"] == "${var.ssm_parameter_name}"
    assert parameter["value"] == "${jsonencode(local.ssm_config)}"
    config = locals_()["ssm_config"]
    assert config["lake"] == "${local.lake_uri}"
    assert locals_()["lake_uri"] == "s3://${local.lake_bucket_name}"
    assert config["sagemaker_role_arn"] == "${aws_iam_role.sagemaker.arn}"
    assert config["glue_role_name"] == "${aws_iam_role.glue.name}"
    assert config["alarm_topic_arn"] == "${aws_sns_topic.alarms.arn}"


def test_default_images_are_the_pytorch_dlc_images_of_the_region():
    values = locals_()
    assert values["dlc_registry"] == "${var.dlc_account_id}.dkr.ecr.${var.region}.amazonaws.com"
    assert "pytorch-training:2.6.0-cpu-py312" in values["training_cpu_image_uri"]
    assert "pytorch-training:2.6.0-gpu-py312" in values["training_gpu_image_uri"]
    assert "pytorch-inference:2.6.0-cpu-py312" in values["inference_image_uri"]
    assert variables()["dlc_account_id"]["default"] == "763104351884"
    assert settings_defaults()["training_image_uri"].endswith("pytorch-training:2.6.0-cpu-py312")


def test_dynamodb_tables_match_design():
    history = resource("aws_dynamodb_table", "history")
    mastery = resource("aws_dynamodb_table", "mastery")
    assert history["name"] == "${var.history_table_name}"
    assert mastery["name"] == "${var.mastery_table_name}"
    assert (history["hash_key"], history["range_key"]) == ("user_id", "ts")
    assert mastery["hash_key"] == "user_id" and "range_key" not in mastery
    assert {(a["name"], a["type"]) for a in history["attribute"]} == {("user_id", "S"), ("ts", "S"), ("day", "S")}
    assert {(a["name"], a["type"]) for a in mastery["attribute"]} == {("user_id", "S")}
    gsi = one(history, "global_secondary_index")
    assert (gsi["name"], gsi["hash_key"], gsi["range_key"], gsi["projection_type"]) == (
        "by_day",
        "day",
        "ts",
        "KEYS_ONLY",
    )
    for table in (history, mastery):
        assert table["billing_mode"] == "PAY_PER_REQUEST"
        assert one(table, "point_in_time_recovery")["enabled"] is True
        sse = one(table, "server_side_encryption")
        assert sse["enabled"] is True and sse["kms_key_arn"] == "${aws_kms_key.this.arn}"


def test_glue_job_matches_contract():
    job = resource("aws_glue_job", "this")
    assert job["name"] == "${var.glue_job_name}"
    assert job["glue_version"] == "${var.glue_version}"
    assert job["worker_type"] == "${var.glue_worker_type}"
    assert job["number_of_workers"] == "${var.glue_number_of_workers}"
    assert job["role_arn"] == "${aws_iam_role.glue.arn}"
    command = one(job, "command")
    assert (command["name"], command["python_version"]) == ("glueetl", "3")
    assert command["script_location"] == "${local.glue_script_uri}"
    args = job["default_arguments"]
    assert args["--job-bookmark-option"] == "job-bookmark-disable"  # tests/test_glue_job.py: why
    assert args["--enable-metrics"] == "true"
    assert args["--enable-continuous-cloudwatch-log"] == "true"
    assert args["--extra-py-files"] == "${local.glue_library_uri}"
    assert args["--TempDir"] == "${local.glue_temp_dir}"
    assert args["--raw"] == "${local.raw_uri}" and locals_()["raw_uri"] == "${local.lake_uri}/raw/ednet/"
    assert args["--processed"] == "${local.processed_uri}"
    assert locals_()["processed_uri"] == "${local.lake_uri}/processed/ednet/"
    assert args["--format"] == "${var.glue_input_format}" and variables()["glue_input_format"]["default"] == "riiid"
    assert args["--skill-mappings"] == "${local.skill_mappings_uri}"
    assert locals_()["skill_mappings_key"] == "artifacts/skill_mappings.json"


@pytest.mark.parametrize(
    ("name", "key_local", "key", "source"),
    [
        ("glue_script", "glue_script_key", "artifacts/glue/ednet_preprocessor.py", "../glue/ednet_preprocessor.py"),
        ("skill_mappings", "skill_mappings_key", "artifacts/skill_mappings.json", "../glue/skill_mappings.json"),
        ("glue_library", "glue_library_key", "artifacts/glue/kt_glue.zip", "../dist/kt_glue.zip"),
        ("sagemaker_code", "sagemaker_code_key", "artifacts/sagemaker/sourcedir.tar.gz", "../dist/sourcedir.tar.gz"),
    ],
)
def test_code_is_uploaded_with_its_hash(name, key_local, key, source):
    obj = resource("aws_s3_object", name)
    assert obj["key"] == f"${{local.{key_local}}}" and locals_()[key_local] == key
    assert obj["source"] == f"${{path.module}}/{source}"
    # source_hash, not etag: the bucket is SSE-KMS, where the ETag is not the file's MD5.
    assert obj["source_hash"] == f'${{filemd5("${{path.module}}/{source}")}}'
    assert obj["kms_key_id"] == "${aws_kms_key.this.arn}"


def test_lake_bucket_is_private_encrypted_versioned_and_logged():
    assert one(resource("aws_s3_bucket_versioning", "lake"), "versioning_configuration")["status"] == "Enabled"
    sse = one(
        one(resource("aws_s3_bucket_server_side_encryption_configuration", "lake"), "rule"),
        "apply_server_side_encryption_by_default",
    )
    assert sse == {"sse_algorithm": "aws:kms", "kms_master_key_id": "${aws_kms_key.this.arn}"}
    block = resource("aws_s3_bucket_public_access_block", "lake")
    assert all(
        block[k] is True
        for k in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
    )
    assert resource("aws_s3_bucket_logging", "lake")["target_bucket"] == "${aws_s3_bucket.logs.id}"
    deny = data_source("aws_iam_policy_document", "lake_bucket")["statement"][0]
    assert deny["effect"] == "Deny" and one(deny, "condition")["variable"] == "aws:SecureTransport"


def test_lake_lifecycle_rules():
    rules = {rule["id"]: rule for rule in resource("aws_s3_bucket_lifecycle_configuration", "lake")["rule"]}

    def prefix(rule):
        return one(rule, "filter").get("prefix", "")

    by_prefix = {prefix(rule): rule for rule in rules.values()}
    transition = one(by_prefix["raw/"], "transition")
    assert (transition["days"], transition["storage_class"]) == (30, "STANDARD_IA")
    assert one(by_prefix["inference/batch/"], "expiration")["days"] == 30
    assert one(by_prefix["monitoring/data-capture/"], "expiration")["days"] == 90
    assert one(by_prefix[""], "noncurrent_version_expiration")["noncurrent_days"] == 30
    # Dataset versions (kt.lake): only what the code pruned or left unfinished expires, never the served version.
    from kt import lake

    for dataset in ("raw/ednet/", "processed/ednet/"):
        rule = by_prefix[dataset + lake.VERSION_PREFIX]
        assert one(rule, "noncurrent_version_expiration")["noncurrent_days"] == 7
        assert one(rule, "expiration") == {"expired_object_delete_marker": True}  # no age-based expiry: see s3.tf
        assert one(rule, "abort_incomplete_multipart_upload")["days_after_initiation"] == 1
    assert all(rule["status"] == "Enabled" for rule in rules.values())


def test_lake_prefixes_match_design():
    values = locals_()
    assert values["data_capture_uri"] == "${local.lake_uri}/monitoring/data-capture/"
    assert values["training_output_uri"] == "${local.lake_uri}/models/dkt/"
    assert values["transform_uri"] == "${local.lake_uri}/inference/batch/"
    assert values["glue_library_key"] == "artifacts/glue/kt_glue.zip"


def test_sagemaker_endpoint_serverless_by_default_and_owned_by_the_dag_after_creation():
    endpoint = resource("aws_sagemaker_endpoint", "this")
    assert endpoint["name"] == "${var.endpoint_name}"
    assert one(endpoint, "lifecycle")["ignore_changes"] == ["endpoint_config_name"]
    config = resource("aws_sagemaker_endpoint_configuration", "this")
    variant = one(config, "production_variants")
    serverless = variant["dynamic"][0]["serverless_config"]["content"][0]
    assert serverless == {
        "memory_size_in_mb": "${var.serverless_memory_mb}",
        "max_concurrency": "${var.serverless_max_concurrency}",
    }
    assert variant["instance_type"] == "${local.realtime ? var.endpoint_instance_type : null}"
    capture = config["dynamic"][0]["data_capture_config"]["content"][0]
    assert capture["destination_s3_uri"] == "${local.data_capture_uri}"
    assert capture["kms_key_id"] == "${aws_kms_key.this.arn}"
    model = resource("aws_sagemaker_model", "this")
    assert one(model, "primary_container")["model_data_url"] == "${var.model_data_url}"
    assert model["execution_role_arn"] == "${aws_iam_role.sagemaker.arn}"
    scaling = one(resource("aws_appautoscaling_policy", "endpoint"), "target_tracking_scaling_policy_configuration")
    metric = one(scaling, "predefined_metric_specification")
    assert metric["predefined_metric_type"] == "SageMakerVariantInvocationsPerInstance"
    assert (
        resource("aws_appautoscaling_target", "endpoint")["count"]
        == "${local.create_endpoint && local.realtime ? 1 : 0}"
    )


# IAM


def policy_documents() -> Iterator[tuple[str, dict]]:
    for _, type_, name, body in blocks("data"):
        if type_ == "aws_iam_policy_document":
            yield name, body


def statements(document: dict) -> Iterator[dict]:
    yield from document.get("statement", [])
    for dynamic in document.get("dynamic", []):
        if "statement" in dynamic:
            yield from dynamic["statement"]["content"]


def allow_statements() -> Iterator[tuple[str, dict]]:
    for name, document in policy_documents():
        for statement in statements(document):
            if statement.get("effect", "Allow") == "Allow":
                yield name, statement


def test_no_statement_grants_a_wildcard_action():
    for name, statement in allow_statements():
        assert "not_actions" not in statement, f"{name}: NotAction grants everything else"
        actions = statement["actions"]
        assert isinstance(actions, list), f"{name}: actions must be a literal list"
        for action in actions:
            assert "*" not in action, f"{name}/{statement.get('sid')}: {action}"


def test_star_resources_only_in_the_allowlist():
    allowed = locals_()["iam_star_resource_exceptions"]
    seen = set()
    for name, statement in allow_statements():
        assert "not_resources" not in statement
        if "*" in statement.get("resources", []):
            sid = statement.get("sid")
            assert sid in allowed, (
                f"{name}: statement {sid} has a '*' resource but is not in iam_star_resource_exceptions"
            )
            assert allowed[sid].strip(), f"{sid} needs a reason"
            seen.add(sid)
    assert set(allowed) == seen, f"stale allowlist entries: {set(allowed) - seen}"


def test_star_resource_statements_are_commented_where_written():
    text = "\n".join(path.read_text() for path in TF_DIR.glob("*.tf"))
    for sid in locals_()["iam_star_resource_exceptions"]:
        match = re.search(rf'([^\n]*\n){{1,4}}\s*statement \{{\n\s*sid\s*=\s*"{sid}"', text)
        assert match and '"*" resource' in match.group(0), f"statement {sid} needs a comment giving the reason"


def test_policies_come_from_policy_documents():
    policy_arguments = {
        "aws_iam_role": "assume_role_policy",
        "aws_iam_role_policy": "policy",
        "aws_kms_key": "policy",
        "aws_s3_bucket_policy": "policy",
        "aws_sns_topic_policy": "policy",
    }
    for _, type_, name, body in blocks("resource"):
        assert type_ not in ("aws_iam_policy", "aws_iam_role_policy_attachment", "aws_iam_user"), f"{type_}.{name}"
        if type_ in policy_arguments:
            value = body[policy_arguments[type_]]
            assert re.fullmatch(r"\$\{data\.aws_iam_policy_document\.\w+\.json\}", value), f"{type_}.{name}"


def test_api_integration_roles_allow_one_action_per_resource():
    expected = {
        "api_get_mastery": [("dynamodb:GetItem", "${aws_dynamodb_table.mastery.arn}")],
        "api_post_answer": [("dynamodb:PutItem", "${aws_dynamodb_table.history.arn}"),
                            ("dynamodb:UpdateItem", "${aws_dynamodb_table.mastery.arn}")],  # the Phase 1 counters
        "api_invoke_endpoint": [("sagemaker:InvokeEndpoint", "${local.endpoint_arn}")],
    }
    for name, grants in expected.items():
        document = data_source("aws_iam_policy_document", name)
        main = [s for s in statements(document) if not s["actions"][0].startswith("kms:")]
        assert [(s["actions"], s["resources"]) for s in main] == [([a], [r]) for a, r in grants], name
        for key_use in (s for s in statements(document) if s["actions"][0].startswith("kms:")):
            assert one(key_use, "condition")["variable"] == "kms:ViaService", f"{name}: KMS only via DynamoDB"
            assert key_use["resources"] == ["${aws_kms_key.this.arn}"]
        assert resource("aws_iam_role_policy", name)["policy"] == f"${{data.aws_iam_policy_document.{name}.json}}"


def test_airflow_policy_resources():
    """Which actions the Airflow role needs is tests/dags/test_iam_calls.py's (recorded calls); here, where."""
    by_sid = {s["sid"]: s for s in statements(data_source("aws_iam_policy_document", "airflow"))}
    assert by_sid["PutKtMetrics"]["condition"][0]["values"] == ["KT"]
    assert by_sid["ReadConfig"]["resources"] == ["${aws_ssm_parameter.this.arn}"]
    assert by_sid["RunGlueJob"]["resources"] == ["${local.glue_job_arn}"]
    assert set(by_sid["ReadHistory"]["resources"]) == {
        "${aws_dynamodb_table.history.arn}", "${aws_dynamodb_table.history.arn}/index/by_day"}
    assert by_sid["WriteMastery"]["resources"] == ["${aws_dynamodb_table.mastery.arn}"]
    for sid in ("TrainingJobs", "Models", "EndpointConfigs", "EndpointFromConfigs", "TransformJobs"):
        (arn,) = by_sid[sid]["resources"]
        assert arn.endswith("/${local.sagemaker_name_glob}"), sid
    assert by_sid["Endpoint"]["resources"] == ["${local.endpoint_arn}"]


def test_pass_role_only_for_the_sagemaker_role_to_sagemaker():
    document = data_source("aws_iam_policy_document", "airflow")
    passes = [s for s in statements(document) if "iam:PassRole" in s["actions"]]
    targets = {}
    for statement in passes:
        assert statement["actions"] == ["iam:PassRole"]
        condition = one(statement, "condition")
        assert condition["variable"] == "iam:PassedToService"
        (role,) = statement["resources"]
        targets[role] = condition["values"]
    assert targets == {"${aws_iam_role.sagemaker.arn}": ["sagemaker.amazonaws.com"]}  # the Glue job exists


def test_airflow_role_is_for_self_hosted_workers_not_mwaa():
    principals = {
        identifier
        for statement in statements(data_source("aws_iam_policy_document", "airflow_assume"))
        for principal in statement["principals"]
        if principal["type"] == "Service"
        for identifier in principal["identifiers"]
    }
    assert principals == {"ec2.amazonaws.com"}  # no MWAA: the role lacks what an MWAA execution role needs


# Monitoring


def test_latency_alarm_is_500_ms_in_microseconds():
    alarm = resource("aws_cloudwatch_metric_alarm", "endpoint_latency")
    assert (alarm["namespace"], alarm["metric_name"]) == ("AWS/SageMaker", "ModelLatency")
    assert alarm["threshold"] == 500000
    assert alarm.get("extended_statistic") == "p99" or alarm.get("statistic") == "Average"
    assert alarm["alarm_actions"] == ["${aws_sns_topic.alarms.arn}"]


def test_error_rate_alarm_uses_metric_math():
    alarm = resource("aws_cloudwatch_metric_alarm", "endpoint_error_rate")
    assert alarm["threshold"] == 1 and "metric_name" not in alarm
    queries = {query["id"]: query for query in alarm["metric_query"]}
    (expression,) = [q for q in queries.values() if "expression" in q]
    assert expression["return_data"] is True
    metrics = {one(q, "metric")["metric_name"]: qid for qid, q in queries.items() if "metric" in q}
    assert set(metrics) == {"Invocation5XXErrors", "Invocations"}
    assert f"100 * {metrics['Invocation5XXErrors']} / {metrics['Invocations']}" in expression["expression"]


def test_drift_and_api_alarms():
    drift = resource("aws_cloudwatch_metric_alarm", "drift")
    assert (drift["namespace"], drift["metric_name"]) == ("KT", "DriftScore")
    assert drift["dimensions"] == {"EndpointName": "${var.endpoint_name}"}
    assert drift["threshold"] == "${var.drift_threshold}"
    api = resource("aws_cloudwatch_metric_alarm", "api_5xx")
    assert (api["namespace"], api["metric_name"]) == ("AWS/ApiGateway", "5XXError")
    alarm_names = [body["alarm_name"] for _, t, _, body in blocks("resource") if t == "aws_cloudwatch_metric_alarm"]
    # The SNS topic policy lets CloudWatch publish only for alarms named <project>-*.
    assert all(name.startswith("${var.project}-") for name in alarm_names)
    resource("aws_cloudwatch_dashboard", "this")


def test_glue_failures_reach_the_alarm_topic():
    rule = resource("aws_cloudwatch_event_rule", "glue_job_failed")["event_pattern"]
    for word in ('"aws.glue"', '"Glue Job State Change"', "aws_glue_job.this.name", '"FAILED"', '"TIMEOUT"'):
        assert word in rule
    target = resource("aws_cloudwatch_event_target", "glue_job_failed")
    assert target["arn"] == "${aws_sns_topic.alarms.arn}"
    assert resource("aws_sns_topic", "alarms")["kms_master_key_id"] == "${aws_kms_key.this.arn}"
    assert resource("aws_sns_topic_subscription", "email")["count"] == '${var.alarm_email == "" ? 0 : 1}'


# API Gateway


@pytest.mark.parametrize(
    ("method", "http", "uri", "role"),
    [
        ("get_mastery", "GET", "dynamodb:action/GetItem", "api_get_mastery"),
        (
            "post_mastery",
            "POST",
            "runtime.sagemaker:path//endpoints/${var.endpoint_name}/invocations",
            "api_invoke_endpoint",
        ),
        ("post_answer", "POST", "dynamodb:action/TransactWriteItems", "api_post_answer"),
    ],
)
def test_api_routes_integrate_directly_with_aws(method, http, uri, role):
    declared = resource("aws_api_gateway_method", method)
    assert declared["http_method"] == http
    assert declared["api_key_required"] is True
    assert declared["request_validator_id"].startswith("${aws_api_gateway_request_validator.")
    integration = resource("aws_api_gateway_integration", method)
    assert integration["type"] == "AWS" and integration["integration_http_method"] == "POST"
    assert integration["uri"] == f"arn:${{local.partition}}:apigateway:${{var.region}}:{uri}"
    assert integration["credentials"] == f"${{aws_iam_role.{role}.arn}}"


def test_api_paths():
    parts = {
        name: resource("aws_api_gateway_resource", name)["path_part"] for name in ("api", "kt", "mastery", "answers")
    }
    assert parts == {"api": "api", "kt": "kt", "mastery": "mastery", "answers": "answers"}
    assert resource("aws_api_gateway_method", "get_mastery")["request_parameters"] == {
        "method.request.querystring.user_id": True
    }


MODEL_HEADERS = {"Accept", "Content-Type"}  # the request headers kt.inference answers about


def model_error_statuses(passed_headers: set[str]) -> set[int]:
    """The statuses kt.inference answers with (RequestError's status, 400 by default) to a request through the API.

    An error about a header the integration does not pass to InvokeEndpoint cannot come from an API client.
    """
    tree = ast.parse((ROOT / "src" / "kt" / "inference.py").read_text())
    statuses = set()
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "RequestError":
            field = call.args[1].value if isinstance(call.args[1], ast.Constant) else None
            if field in MODEL_HEADERS and field not in passed_headers:
                continue
            given = [k.value for k in call.keywords if k.arg == "status"] + call.args[2:3]
            statuses.add(given[0].value if given else 400)
    return statuses


def test_api_method_responses_are_what_each_route_answers():
    """Each route's integration responses and method responses come from local.api_routes, one for_each each.

    A route's method responses are its integration responses' statuses plus the statuses its templates set
    through $context.responseOverride.status (those no integration response has): rendered here, so every
    declared one is answered and every answered one declared.
    """
    routes = locals_()["api_routes"]
    assert set(routes) == {"get_mastery", "post_mastery", "post_answer"}
    for route, spec in routes.items():
        method_responses = resource("aws_api_gateway_method_response", route)
        integration_responses = resource("aws_api_gateway_integration_response", route)
        assert method_responses["for_each"] == (
            f"${{toset(concat(keys(local.api_routes.{route}.responses), local.api_routes.{route}.overrides))}}")
        assert integration_responses["for_each"] == f"${{local.api_routes.{route}.responses}}"
        assert integration_responses["status_code"] == (
            f"${{aws_api_gateway_method_response.{route}[each.key].status_code}}")
        assert integration_responses["depends_on"] == [f"${{aws_api_gateway_integration.{route}}}"]
        assert {s: r["pattern"] for s, r in spec["responses"].items()} == {
            "200": None, "400": "4\\d{2}", "502": "5\\d{2}"}

    passed = {p.rsplit(".", 1)[1] for p in resource("aws_api_gateway_integration", "post_mastery")["request_parameters"]}
    model_statuses = sorted(model_error_statuses(passed))
    assert passed == {"Content-Type"} and {400, 413, 415} <= set(model_statuses)
    cases = {
        "get_mastery": [{"file": "get_mastery_response.vtl", "body": {},
                         "vars": {"skill_topics": "{}", "topics": "[]", "dkt_enabled": "false"}}],
        "post_mastery": [{"file": "post_mastery_error.vtl", "body": {
            "ErrorCode": "CLIENT_ERROR_FROM_MODEL", "OriginalStatusCode": status,
            "OriginalMessage": json.dumps({"error": "e", "field": "f"})}} for status in model_statuses],
        "post_answer": [{"file": "post_answer_error.vtl", "body": {
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException", "Message": "m",
            "CancellationReasons": [{"Code": "ConditionalCheckFailed"}, {"Code": code}, {"Code": "None"}]}}
            for code in ("ConditionalCheckFailed", "None")],  # a duplicate (200), a conflict (409)
    }  # fmt: skip
    for route, spec in routes.items():
        overridden = {str(r["status"]) for r in render_vtl(cases[route])}
        assert set(spec["overrides"]) == overridden - set(spec["responses"]), route


def test_api_stage_usage_plan_and_logs():
    stage = resource("aws_api_gateway_stage", "this")
    assert stage["xray_tracing_enabled"] is True
    assert one(stage, "access_log_settings")["destination_arn"] == "${aws_cloudwatch_log_group.api_access.arn}"
    assert resource("aws_cloudwatch_log_group", "api_access")["kms_key_id"] == "${aws_kms_key.this.arn}"
    assert one(resource("aws_api_gateway_method_settings", "this"), "settings")["metrics_enabled"] is True
    plan = resource("aws_api_gateway_usage_plan", "this")
    assert one(plan, "throttle_settings") == {
        "rate_limit": "${var.api_throttle_rate_limit}",
        "burst_limit": "${var.api_throttle_burst_limit}",
    }
    assert one(plan, "quota_settings")["limit"] == "${var.api_quota_limit}"
    resource("aws_api_gateway_usage_plan_key", "this")


ANSWER = {
    "user_id": "U1",
    "answer_id": "a-1",
    "skill_id": 42,
    "correct": 1,
    "content_id": 7,
    "answered_at": "2026-11-25T01:02:03.456Z",
}


@pytest.mark.parametrize(
    ("change", "valid"),
    [
        ({}, True),
        ({"content_id": None}, True),
        ({"correct": 2}, False),
        ({"correct": "1"}, False),
        ({"skill_id": 1.5}, False),
        ({"answered_at": "2026-11-25T01:02:03Z"}, False),
        ({"answered_at": "2026-11-25 01:02:03.456Z"}, False),
        ({"user_id": None}, False),
        ({"extra": 1}, False),
    ],
)
def test_answer_model_validates_the_body(change, valid):
    body = {**ANSWER, **change}
    body = {key: value for key, value in body.items() if value is not None}
    schema = json.loads((TEMPLATES / "answer.schema.json").read_text())
    errors = list(jsonschema.Draft4Validator(schema).iter_errors(body))
    assert (not errors) is valid, errors


# Mapping templates, rendered by a VTL engine (airspeed-ext) from .venv-lint


MASTERY_ITEM = {
    "user_id": {"S": "U1"},
    "mastery": {"M": {"42": {"N": "0.78"}, "15": {"N": "0.34"}}},
    "topic_mastery": {"M": {"algebra": {"N": "0.61"}, "geometry": {"N": "0.48"}}},
    "next_skill_recommendation": {"N": "15"},
    "predicted_accuracy": {"N": "0.45"},
    "model_version": {"S": "pythagoras-dkt-2026-11-25-0200"},
    "source": {"S": "dkt"},
    "as_of": {"S": "2026-11-25T01:00:00.000Z"},
    "updated_at": {"S": "2026-11-25T02:00:03Z"},
    "n_interactions": {"N": "12"},
}


def test_mapping_templates_use_only_the_variables_api_gateway_tf_gives_them():
    tf = (ROOT / "terraform" / "api_gateway.tf").read_text()
    expected = {"get_mastery_request.vtl": {"table"}, "post_answer_request.vtl": {"history_table", "mastery_table"},
                "get_mastery_response.vtl": {"skill_topics", "topics", "dkt_enabled"}}
    for name, variables in expected.items():
        assert set(re.findall(r"\$\{(\w+)\}", (TEMPLATES / name).read_text())) == variables, name
        needle = f'templatefile("${{local.api_templates}}/{name}"'
        call = tf[tf.index(needle) + len(needle):]
        call = call[: call.index("}")]  # the variables' object
        assert set(re.findall(r"(\w+)\s*=", call)) == variables, name
    for path in TEMPLATES.glob("*.vtl"):
        assert "%{" not in path.read_text(), f"{path.name}: %{{ is a Terraform template directive"


CATALOG_VARS = {"skill_topics": json.dumps({"15": "geometry", "42": "algebra"}), "topics": '["algebra", "geometry"]',
                "dkt_enabled": "true"}


def test_get_mastery_templates_give_the_design_shape_and_404():
    request, found, missing = render_vtl([
        {"file": "get_mastery_request.vtl", "params": {"user_id": "U1"}, "table": "kt-mastery"},
        {"file": "get_mastery_response.vtl", "body": {"Item": MASTERY_ITEM}, "vars": CATALOG_VARS},
        {"file": "get_mastery_response.vtl", "body": {}, "vars": CATALOG_VARS},
    ])  # fmt: skip
    assert json.loads(request["body"]) == {"TableName": "kt-mastery", "Key": {"user_id": {"S": "U1"}}}
    assert found["status"] is None
    assert json.loads(found["body"]) == {
        "user_id": "U1",
        "mastery": {"42": 0.78, "15": 0.34},
        "topic_mastery": {"algebra": 0.61, "geometry": 0.48},
        "answers_by_topic": {},  # an item without the Phase 1 counters
        "next_skill_recommendation": 15,
        "predicted_accuracy": 0.45,
        "model_version": "pythagoras-dkt-2026-11-25-0200",
        "source": "dkt",
        "as_of": "2026-11-25T01:00:00.000Z",
        "updated_at": "2026-11-25T02:00:03Z",
        "n_interactions": 12,
    }
    assert missing["status"] == 404
    assert json.loads(missing["body"]) == {"error": "unknown user_id", "field": "user_id"}


def test_post_answer_templates_build_the_transaction_and_make_repeats_idempotent():
    without_content = {key: value for key, value in ANSWER.items() if key != "content_id"}
    tables = {"history_table": "kt-history", "mastery_table": "kt-mastery"}

    def cancelled(*codes: str) -> dict:
        return {"__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException", "Message": "cancelled",
                "CancellationReasons": [{"Code": c} for c in codes]}

    full, partial, duplicate, restamped, conflict, invalid = render_vtl([
        {"file": "post_answer_request.vtl", "body": ANSWER, "vars": tables},
        {"file": "post_answer_request.vtl", "body": without_content, "vars": tables},
        {"file": "post_answer_error.vtl", "body": cancelled(*["ConditionalCheckFailed"] * 3, "None")},
        {"file": "post_answer_error.vtl", "body": cancelled("ConditionalCheckFailed", "ConditionalCheckFailed",
                                                            "None", "None")},
        {"file": "post_answer_error.vtl", "body": cancelled("ConditionalCheckFailed", "None", "None", "None")},
        {"file": "post_answer_error.vtl", "body": {
            "__type": "com.amazon.coral.validate#ValidationException",
            "message": "One or more parameter values were invalid"}},
    ])  # fmt: skip
    items = json.loads(full["body"])["TransactItems"]
    assert [next(iter(i)) for i in items] == ["Put", "Put", "Put", "Update"]
    assert {i["Put"]["TableName"] for i in items[:3]} == {"kt-history"}
    assert {i["Put"]["ConditionExpression"] for i in items[:3]} == {"attribute_not_exists(ts)"}
    assert [i["Put"]["Item"]["ts"]["S"] for i in items[:2]] == ["answer#a-1", "content#42#1#7#a-1"]
    assert items[2]["Put"]["Item"] == {
        "user_id": {"S": "U1"},
        "ts": {"S": "2026-11-25T01:02:03.456Z#a-1"},
        "day": {"S": "2026-11-25"},
        "answer_id": {"S": "a-1"},
        "skill_id": {"N": "42"},
        "correct": {"N": "1"},
        "content_id": {"N": "7"},
    }
    assert items[3]["Update"]["TableName"] == "kt-mastery"
    assert items[3]["Update"]["ExpressionAttributeNames"] == {"#answers": "answers#42", "#right": "right#42"}
    partial_items = json.loads(partial["body"])["TransactItems"]
    assert "content_id" not in partial_items[2]["Put"]["Item"]
    assert partial_items[1]["Put"]["Item"]["ts"]["S"] == "content#42#1#-#a-1"
    for repeat in (duplicate, restamped):
        assert (repeat["status"], json.loads(repeat["body"])) == (200, {"status": "duplicate"})
    assert (conflict["status"], json.loads(conflict["body"])["field"]) == (409, "answer_id")
    assert invalid["status"] is None
    assert json.loads(invalid["body"]) == {"error": "One or more parameter values were invalid", "field": "body"}


def test_post_mastery_passes_the_models_4xx_through():
    model_error, no_endpoint = render_vtl([
        {"file": "post_mastery_error.vtl", "body": {
            "ErrorCode": "CLIENT_ERROR_FROM_MODEL", "OriginalStatusCode": 415,
            "OriginalMessage": json.dumps({"error": "unsupported content type", "field": "Content-Type"}),
            "Message": "Received client error (415) from primary"}},
        {"file": "post_mastery_error.vtl", "body": {"message": "Endpoint pythagoras-dkt-endpoint not found."}},
    ])  # fmt: skip
    assert model_error["status"] == 415
    assert json.loads(model_error["body"]) == {"error": "unsupported content type", "field": "Content-Type"}
    assert no_endpoint["status"] is None
    assert json.loads(no_endpoint["body"])["field"] is None


def test_post_mastery_hides_what_the_model_server_itself_answers():
    """TorchServe's own replies (a dead worker's 500, the 413 of its response limit, empty) never reach clients."""
    worker_died, empty_413 = render_vtl([
        {"file": "post_mastery_error.vtl", "body": {
            "ErrorCode": "SERVER_ERROR_FROM_MODEL", "OriginalStatusCode": 500,
            "OriginalMessage": json.dumps({"code": 500, "type": "InternalServerException", "message": "Worker died."})}},
        {"file": "post_mastery_error.vtl", "body": {
            "ErrorCode": "CLIENT_ERROR_FROM_MODEL", "OriginalStatusCode": 413, "OriginalMessage": ""}},
    ])  # fmt: skip
    for reply in (worker_died, empty_413):
        assert reply["status"] == 502
        assert json.loads(reply["body"]) == {"error": "the model failed to answer", "field": None}


# AWS provider schema: argument and block names from the CDKTF bindings (AWS provider 6.25)


def provider_package() -> Path:
    found = sorted(LINT_VENV.glob("lib/python3*/site-packages/cdktf_cdktf_provider_aws"))
    assert found, f"cdktf-cdktf-provider-aws is missing from .venv-lint: {MAKE_LINT_HINT}"
    return found[0]


class ProviderModule:
    """Argument names of one resource or data source, read from its CDKTF module's source."""

    def __init__(self, path: Path):
        tree = ast.parse(path.read_text())
        self.classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
        self.top = next(
            node for node in self.classes.values()
            if any(ast.unparse(base).endswith((".TerraformResource", ".TerraformDataSource")) for base in node.bases)
        )  # fmt: skip

    @staticmethod
    def _init(node: ast.ClassDef) -> ast.FunctionDef:
        """The class's __init__ (an empty one for classes without, such as enums)."""
        for item in node.body:
            if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                return item
        return ast.parse("def __init__(self): pass").body[0]

    def arguments(self, node: ast.ClassDef) -> dict[str, tuple[str | None, bool]]:
        """name -> (nested block struct, ANY for an untyped block, or None for an attribute; required)."""
        init = self._init(node).args
        found = {}
        for arg, default in zip(init.kwonlyargs, init.kw_defaults, strict=True):
            annotation = ast.unparse(arg.annotation) if arg.annotation else ""
            structs = [name for name in re.findall(r"'(\w+)'", annotation) if name in self.classes]
            struct = structs[0] if structs else (ANY if annotation == "typing.Any" else None)
            found[arg.arg] = (struct, default is None)
        return found


ANY = "typing.Any"  # a block too deeply nested for the bindings to type (wafv2 rule statements)


def check_body(module: ProviderModule, node: ast.ClassDef, body: dict, where: str, top: bool) -> list[str]:
    problems = []
    arguments = module.arguments(node)
    present = set(body)
    for key, value in body.items():
        if top and key in META_ARGUMENTS:
            continue
        if key == "dynamic":
            for dynamic in value:
                for name, spec in dynamic.items():
                    present.add(name)
                    problems += check_block(module, arguments, name, spec["content"], where)
            continue
        if key not in arguments:
            problems.append(f"{where}: unknown argument {key!r}")
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            problems += check_block(module, arguments, key, value, where)
    meta = {"connection", "count", "depends_on", "for_each", "lifecycle", "provider", "provisioners"}
    for name, (_, required) in arguments.items():
        if required and name not in present and not (top and name in meta):
            problems.append(f"{where}: missing required argument {name!r}")
    return problems


def check_block(module: ProviderModule, arguments: dict, name: str, instances: list, where: str) -> list[str]:
    if name not in arguments:
        return [f"{where}: unknown block {name!r}"]
    struct = arguments[name][0]
    if struct is None:
        return [f"{where}: {name!r} is an attribute, not a block"]
    if struct == ANY:
        return []
    problems = []
    for instance in instances:
        problems += check_body(module, module.classes[struct], instance, f"{where}.{name}", top=False)
    return problems


def test_arguments_exist_in_the_aws_provider_schema():
    package = provider_package()
    problems = []
    modules: dict[str, ProviderModule] = {}
    for kind in ("resource", "data"):
        for file, type_, name, body in blocks(kind):
            module_name = type_.removeprefix("aws_") if kind == "resource" else f"data_{type_}"
            path = package / module_name / "__init__.py"
            if not path.exists():
                problems.append(f"{file}: {type_} is not an AWS provider {kind}")
                continue
            module = modules.setdefault(module_name, ProviderModule(path))
            problems += check_body(module, module.top, body, f"{file}: {type_}.{name}", top=True)
    assert problems == []


# checkov


def test_checkov_reports_no_failed_checks():
    assert CHECKOV.exists(), f"{CHECKOV} is missing: {MAKE_LINT_HINT}"
    done = subprocess.run(
        [str(CHECKOV), "-d", "terraform", "--quiet", "--compact", "-o", "json", "--skip-download"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}"
        for item in reports
        for check in item["results"].get("failed_checks", [])
    ]
    assert failed == []
    assert all(item["summary"]["parsing_errors"] == 0 for item in reports)
    assert sum(item["summary"]["passed"] for item in reports) > 0


def test_checkov_skips_are_inline_with_a_reason():
    for path in TF_DIR.rglob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                match = re.fullmatch(r"\s*#checkov:skip=CKV2?_AWS_\d+:(.{20,})", line)
                assert match, f"{path.name}: {line.strip()!r} needs a written reason"
    assert not (ROOT / ".checkov.yaml").exists() and not (ROOT / ".checkov.yml").exists(), "skip inline only"
