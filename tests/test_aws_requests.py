"""Every SageMaker request dict against botocore's service model (types, required keys, patterns, ranges) and moto."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import boto3
import botocore.session
import pytest
import regex  # AWS patterns use \p{...} classes, which re lacks (regex is in requirements.txt)
from botocore.validate import validate_parameters
from moto import mock_aws

from kt import aws_requests, lake, package
from kt.config import Settings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = "2026-11-25-0200"
RUN_DATE = "2026-11-25"
VERSION = "v=20261125T020000000000Z"  # a processed version (kt.lake.new_version)
S3_LAKE = "s3://pythagoras-kt-lake-123456789012-us-east-1"
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
MODEL_URL = f"{S3_LAKE}/models/dkt/pythagoras-dkt-{RUN}/output/model.tar.gz"
PREVIOUS_MODEL_URL = f"{S3_LAKE}/models/dkt/pythagoras-dkt-2026-11-18-0200/output/model.tar.gz"  # the promoted one
SAGEMAKER = botocore.session.get_session().get_service_model("sagemaker")


def _requests(settings: Settings) -> dict[str, tuple[str, dict]]:
    """operation -> request, for every builder in kt.aws_requests."""
    hp = {"epochs": 20, "batch_size": 64, "lr": 0.002}
    processed = lake.join(settings.lake, "processed", "ednet", VERSION)
    return {
        "training_spot": ("CreateTrainingJob", aws_requests.training_job(settings, RUN, hp, processed=processed)),
        "training_on_demand": ("CreateTrainingJob",
                               aws_requests.training_job(settings, RUN, hp, spot=False, processed=processed)),
        "training_with_current": ("CreateTrainingJob", aws_requests.training_job(
            settings, RUN, hp, processed=processed, current_model_url=PREVIOUS_MODEL_URL)),
        "model": ("CreateModel", aws_requests.model(settings, RUN, MODEL_URL)),
        "endpoint_config": ("CreateEndpointConfig", aws_requests.endpoint_config(settings, RUN)),
        "endpoint": ("CreateEndpoint", aws_requests.endpoint(settings, RUN)),
        "endpoint_update": ("UpdateEndpoint", aws_requests.endpoint(settings, RUN)),
        "transform": ("CreateTransformJob", aws_requests.transform_job(settings, RUN, RUN_DATE, "pythagoras-dkt-x")),
    }


def _constraints(shape, value, where: str = "") -> list[str]:
    """What ParamValidator leaves out: string patterns and lengths, numeric ranges, enums, list lengths."""
    problems = []
    meta = shape.metadata
    if shape.type_name == "structure":
        for key, member in value.items():
            problems += _constraints(shape.members[key], member, f"{where}.{key}")
    elif shape.type_name == "list":
        if not meta.get("min", 0) <= len(value) <= meta.get("max", 10**9):
            problems.append(f"{where}: {len(value)} items")
        for i, item in enumerate(value):
            problems += _constraints(shape.member, item, f"{where}[{i}]")
    elif shape.type_name == "map":
        for key, item in value.items():
            problems += _constraints(shape.key, key, f"{where}<key>")
            problems += _constraints(shape.value, item, f"{where}[{key}]")
    elif shape.type_name == "string":
        if not meta.get("min", 0) <= len(value) <= meta.get("max", 10**9):
            problems.append(f"{where}: length {len(value)}")
        if "pattern" in meta and not regex.fullmatch(meta["pattern"], value):
            problems.append(f"{where}: {value!r} !~ {meta['pattern']}")
        if shape.enum and value not in shape.enum:
            problems.append(f"{where}: {value!r} not in {shape.enum}")
    elif shape.type_name in ("integer", "long", "float", "double"):
        if not meta.get("min", -10**18) <= value <= meta.get("max", 10**18):
            problems.append(f"{where}: {value} out of range")
    return problems


@pytest.fixture(params=["serverless", "realtime"])
def s3_settings(request) -> Settings:
    return Settings(runtime="aws", lake=S3_LAKE, endpoint_mode=request.param, kms_key_arn=KMS_KEY)


@pytest.mark.parametrize("name", list(_requests(Settings(lake=S3_LAKE))))
def test_requests_satisfy_the_sagemaker_service_model(s3_settings, name):
    operation, request = _requests(s3_settings)[name]
    shape = SAGEMAKER.operation_model(operation).input_shape
    validate_parameters(request, shape)  # types and required keys, as boto3 checks before sending
    assert _constraints(shape, request) == []


def test_requests_built_on_a_local_lake_have_the_same_shape():
    for operation, request in _requests(Settings(lake=".kt/lake")).values():
        validate_parameters(request, SAGEMAKER.operation_model(operation).input_shape)


def test_endpoint_config_is_serverless_or_a_gpu_instance(s3_settings):
    (variant,) = aws_requests.endpoint_config(s3_settings, RUN)["ProductionVariants"]
    assert variant["VariantName"] == "AllTraffic"
    if s3_settings.endpoint_mode == "serverless":
        assert set(variant["ServerlessConfig"]) == {"MemorySizeInMB", "MaxConcurrency"} and "InstanceType" not in variant
    else:
        assert variant["InstanceType"] == "ml.g4dn.xlarge" and "ServerlessConfig" not in variant


def test_serverless_configs_carry_the_key_and_no_capture():
    """AWS: data capture is among the features serverless endpoints do not support."""
    request = aws_requests.endpoint_config(Settings(lake=S3_LAKE, kms_key_arn=KMS_KEY), RUN)
    assert request["KmsKeyId"] == KMS_KEY
    assert "DataCaptureConfig" not in request
    assert "KmsKeyId" not in aws_requests.endpoint_config(Settings(lake=S3_LAKE), RUN)  # no key configured: none sent


def test_realtime_configs_capture_requests_to_the_lake_where_the_drift_check_reads():
    settings = Settings(lake=S3_LAKE, endpoint_mode="realtime", kms_key_arn=KMS_KEY, endpoint_min_instances=2,
                        data_capture_sampling_percentage=35)
    request = aws_requests.endpoint_config(settings, RUN)
    assert "KmsKeyId" not in request  # local NVMe storage of ml.g4dn.* is encrypted by the instance
    assert request["ProductionVariants"][0]["InitialInstanceCount"] == 2
    assert request["DataCaptureConfig"] == {
        "EnableCapture": True,
        "InitialSamplingPercentage": 35,
        "DestinationS3Uri": f"{S3_LAKE}/monitoring/data-capture/",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
        "KmsKeyId": KMS_KEY,
    }
    from kt import drift

    assert drift.capture_prefix(settings) == \
        f"{S3_LAKE}/monitoring/data-capture/{settings.endpoint_name}/{request['ProductionVariants'][0]['VariantName']}"


def test_training_uses_managed_spot_with_checkpoints_in_the_lake():
    settings = Settings(runtime="aws", lake=S3_LAKE)
    request = aws_requests.training_job(settings, RUN, {"epochs": 3}, processed=f"{S3_LAKE}/processed/ednet/{VERSION}")
    assert request["EnableManagedSpotTraining"] is True
    stopping = request["StoppingCondition"]
    assert stopping["MaxWaitTimeInSeconds"] >= stopping["MaxRuntimeInSeconds"]
    assert request["CheckpointConfig"] == {
        "S3Uri": f"{S3_LAKE}/models/dkt/checkpoints/pythagoras-dkt-{RUN}", "LocalPath": "/opt/ml/checkpoints"}
    on_demand = aws_requests.training_job(settings, RUN, {"epochs": 3}, spot=False,
                                          processed=f"{S3_LAKE}/processed/ednet/{VERSION}")
    assert "EnableManagedSpotTraining" not in on_demand and "MaxWaitTimeInSeconds" not in on_demand["StoppingCondition"]


def test_training_runs_the_packaged_script_mode_entry_point():
    request = aws_requests.training_job(Settings(lake=S3_LAKE), RUN, {"epochs": 3, "lr": 0.002},
                                        processed=f"{S3_LAKE}/processed/ednet/{VERSION}")
    hp = request["HyperParameters"]
    assert all(isinstance(v, str) for v in hp.values())  # SageMaker takes strings only
    assert (hp["epochs"], hp["lr"]) == ("3", "0.002")
    assert hp["sagemaker_program"] == package.ENTRY_POINT
    assert hp["sagemaker_submit_directory"] == f"{S3_LAKE}/artifacts/sagemaker/{package.SOURCEDIR}"
    (channel,) = request["InputDataConfig"]
    assert channel["ChannelName"] == "training"  # kt.train reads SM_CHANNEL_TRAINING
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == f"{S3_LAKE}/processed/ednet/{VERSION}/"
    assert request["OutputDataConfig"]["S3OutputPath"] == f"{S3_LAKE}/models/dkt"  # + <job>/output/model.tar.gz


def test_the_promoted_model_is_the_current_channel_of_one_object_and_absent_without_one():
    """An S3Prefix on the model.tar.gz key: SageMaker copies the one object it matches (kt.job_evaluation reads it)."""
    processed = f"{S3_LAKE}/processed/ednet/{VERSION}"
    request = aws_requests.training_job(Settings(lake=S3_LAKE), RUN, {}, processed=processed,
                                        current_model_url=PREVIOUS_MODEL_URL)
    training, current = request["InputDataConfig"]
    assert current == {**training, "ChannelName": "current", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": PREVIOUS_MODEL_URL, "S3DataDistributionType": "FullyReplicated"}}}
    without = aws_requests.training_job(Settings(lake=S3_LAKE), RUN, {}, processed=processed)
    assert without["InputDataConfig"] == [training]


def test_the_test_auc_metric_is_the_candidates_not_the_current_models():
    line = "test_auc=0.71234; current_test_auc=0.70000;\n"  # kt.job_evaluation's line
    regexes = dict(aws_requests.METRIC_REGEXES)
    assert re.findall(regexes["test_auc"], line) == ["0.71234"]
    assert all(not re.findall(regexes[name], line) for name in regexes if name != "test_auc")


def test_every_name_derives_from_the_run_id_on_the_configured_prefix():
    names = aws_requests.names(Settings(), RUN)
    assert all(RUN in n and n.startswith("pythagoras-dkt-") and len(n) <= 63 for n in names.values())
    longest = Settings(sagemaker_name_prefix="a" * 33)
    custom = aws_requests.names(longest, RUN)
    assert all(n.startswith("a" * 33 + "-") and len(n) <= 63 for n in custom.values())
    requests = _requests(longest)
    assert requests["training_spot"][1]["TrainingJobName"] == custom["training_job"]
    assert requests["endpoint_config"][1]["EndpointConfigName"] == requests["endpoint"][1]["EndpointConfigName"] \
        == custom["endpoint_config"]
    assert requests["transform"][1]["TransformJobName"] == custom["transform_job"]
    request = aws_requests.transform_job(Settings(lake=S3_LAKE), RUN, RUN_DATE, names["model"])
    assert request["TransformJobName"] == names["transform_job"]
    assert request["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == \
        f"{S3_LAKE}/inference/batch/{RUN_DATE}/input/"
    assert (request["TransformInput"]["SplitType"], request["BatchStrategy"],
            request["TransformOutput"]["AssembleWith"]) == ("Line", "MultiRecord", "Line")


def test_metric_definitions_capture_what_the_trainer_prints(sample_lake, tmp_path, capsys):
    """One real epoch: the line kt.train prints, read back with the request's regexes."""
    from kt.config import TrainingPaths
    from kt.train import Hyperparameters, Trainer

    paths = TrainingPaths(train_channel=f"{sample_lake}/processed/ednet", model_dir=str(tmp_path / "m"),
                          checkpoint_dir=str(tmp_path / "c"), output_dir=str(tmp_path / "o"))
    record = Trainer(Hyperparameters(hidden=8, layers=1, epochs=1, batch_size=64, max_seq_len=50), paths).train_epoch()
    printed = capsys.readouterr().out
    definitions = aws_requests.training_job(Settings(), RUN, {})["AlgorithmSpecification"]["MetricDefinitions"]
    captured = {d["Name"]: [float(v) for v in re.findall(d["Regex"], printed)] for d in definitions}
    assert captured["train_loss"] == [pytest.approx(record["train_loss"], abs=1e-5)]
    assert captured["valid_auc"] == [pytest.approx(record["valid"]["auc"], abs=1e-5)]
    assert captured["interactions_per_s"] == [pytest.approx(record["interactions_per_s"], abs=1)]


def test_building_requests_does_not_import_torch():
    """DAG files build these at parse time: no torch there."""
    code = "import sys, kt.aws_requests; sys.exit('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "src")}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def test_moto_accepts_the_requests_as_the_operators_send_them():
    settings = Settings(runtime="aws", lake=S3_LAKE, endpoint_mode="realtime", kms_key_arn=KMS_KEY)
    with mock_aws():
        client = boto3.client("sagemaker", region_name="us-east-1")
        training = aws_requests.training_job(settings, RUN, {"epochs": 3},
                                             processed=f"{S3_LAKE}/processed/ednet/{VERSION}",
                                             current_model_url=PREVIOUS_MODEL_URL)
        client.create_training_job(**training)
        described = client.describe_training_job(TrainingJobName=training["TrainingJobName"])
        assert described["EnableManagedSpotTraining"] is True
        assert described["InputDataConfig"] == training["InputDataConfig"]  # the evaluate task reads the current one
        assert described["CheckpointConfig"] == training["CheckpointConfig"]
        client.create_model(**aws_requests.model(settings, RUN, MODEL_URL))
        config = aws_requests.endpoint_config(settings, RUN)
        client.create_endpoint_config(**config)
        described_config = client.describe_endpoint_config(EndpointConfigName=config["EndpointConfigName"])
        assert described_config["DataCaptureConfig"]["DestinationS3Uri"] == f"{S3_LAKE}/monitoring/data-capture/"
        client.create_endpoint(**aws_requests.endpoint(settings, RUN))
        model_name = aws_requests.names(settings, RUN)["model"]
        client.create_transform_job(**aws_requests.transform_job(settings, RUN, RUN_DATE, model_name))
        assert client.describe_endpoint(EndpointName=settings.endpoint_name)["EndpointConfigName"] == model_name


def test_package_builds_what_the_requests_name(tmp_path):
    """`kt package`: the Glue zip imports on a Python without torch; the sourcedir holds the entry point."""
    paths = package.build(str(tmp_path / "dist"))
    assert sorted(os.listdir(tmp_path / "dist")) == [package.GLUE_ZIP, package.SOURCEDIR]
    blocked = ", ".join(f"{name!r}: None" for name in package.NOT_ON_GLUE)  # import of any of them fails
    modules = [name[:-3] for name in package.glue_modules()]
    code = (f"import sys; sys.path.insert(0, {paths['glue_zip']!r}); sys.modules.update({{{blocked}}})\n"
            f"import importlib, kt\nassert kt.__file__.startswith({paths['glue_zip']!r}), kt.__file__\n"
            f"for m in {modules!r}: importlib.import_module('kt.' + m)\n")
    result = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr
    assert {"spark_etl", "readers", "schema", "lake"} <= set(modules)
    assert not {"model", "train", "inference", "data", "serve"} & set(modules)

    import tarfile

    with tarfile.open(paths["sourcedir"]) as tar:
        names = tar.getnames()
        requirements = tar.extractfile("requirements.txt").read().decode()
    assert package.ENTRY_POINT in names and "kt/train.py" in names and "kt/inference.py" in names
    assert "pyarrow==" in requirements and "torch" not in requirements  # the image brings torch
    first = open(paths["sourcedir"], "rb").read()
    package.build(str(tmp_path / "again"))
    assert open(tmp_path / "again" / package.SOURCEDIR, "rb").read() == first  # reproducible: terraform's filemd5
