"""What the DAGs call: the runtime switch between the Amazon operators and ours, and the steps around them.

    from kt import runtime
    train = runtime.operator("training", task_id="train_model", config=requests["training"])

``operator`` is the one place that picks the executor of an AWS job: the
Amazon provider's operator on ``KT_RUNTIME=aws``, the operator of the same
name in ``plugins/kt_local_operators.py`` on ``local``. Both take the same
arguments (``config=`` and ``wait_for_completion`` for SageMaker, the Glue
arguments for Glue), so a DAG file is the same on both runtimes and never
branches on ``KT_RUNTIME`` itself. On aws the waits of the kinds in
``DEFERRABLE`` are deferred (``deferrable=True``): the provider's trigger polls
the job in the triggerer and the worker slot is freed until it ends.

DAG files call ``operator`` while they are parsed, so it looks at
``KT_RUNTIME`` alone and reads nothing else; the other settings (and on aws
the SSM parameter) are read by ``task_settings`` when a task runs. The other
functions here are the small steps the DAG tasks call: the Glue job
arguments, the promotion gate, the refresh's preparation, the failure
callback. Airflow is imported lazily: ``kt`` stays importable without it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from datetime import datetime
from typing import Any

# Only kt.config at the top: DAG files import this module while they are parsed, and the other
# kt modules pull in boto3, pyarrow or torch, so each function imports what it uses.
from kt.config import ConfigError, Settings, env_var, load_settings

log = logging.getLogger(__name__)

# kind -> (Amazon provider operator, local operator in plugins/kt_local_operators.py)
OPERATORS = {
    "glue": ("airflow.providers.amazon.aws.operators.glue.GlueJobOperator", "kt_local_operators.LocalGlueJobOperator"),
    "training": ("airflow.providers.amazon.aws.operators.sagemaker.SageMakerTrainingOperator",
                 "kt_local_operators.LocalSageMakerTrainingOperator"),
    # The provider's, made safe to retry after the resource was created (plugins/kt_aws_operators.py).
    "model": ("kt_aws_operators.SageMakerModelOnceOperator", "kt_local_operators.LocalSageMakerModelOperator"),
    "endpoint_config": ("kt_aws_operators.SageMakerEndpointConfigOnceOperator",
                        "kt_local_operators.LocalSageMakerEndpointConfigOperator"),
    "endpoint": ("airflow.providers.amazon.aws.operators.sagemaker.SageMakerEndpointOperator",
                 "kt_local_operators.LocalSageMakerEndpointOperator"),
    "transform": ("airflow.providers.amazon.aws.operators.sagemaker.SageMakerTransformOperator",
                  "kt_local_operators.LocalSageMakerTransformOperator"),
}
# Kinds whose operator waits for a job (training up to 10 h): on aws they defer to the triggerer.
DEFERRABLE = frozenset({"glue", "training", "transform", "endpoint"})
# load_settings reads SSM on aws unless given the parameter's content; at parse time it must not
# (no network while parsing), and the aws runtime's lake, which only SSM knows, is not needed yet.
# On aws, set KT_LAKE in Airflow's environment as well so asset URIs name the real bucket
# (docs/airflow.md); without it they are the logical s3://kt-lake/... below.
PARSE_TIME_SSM = {"lake": "s3://kt-lake"}
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOCAL_GLUE_SCRIPT = os.path.join(REPO, "glue", "ednet_preprocessor.py")
PROMOTION_TOLERANCE = 0.002  # test AUC the candidate must gain over the current model


def runtime_name() -> str:
    """KT_RUNTIME, validated, without reading SSM: what a DAG file may know while it is parsed."""
    return load_settings(ssm=PARSE_TIME_SSM).runtime


def lake_asset(which: str) -> Any:
    """The lake's raw or processed EdNet prefix as an Airflow Asset (ednet_etl runs on raw, dkt_train on processed)."""
    from airflow.sdk import Asset

    return Asset(lake_asset_uri(which))  # named by its URI: another lake is another asset, never a name clash


def lake_asset_uri(which: str) -> str:
    """s3://bucket/prefix/<which>/ednet, or file:///abs/path/<which>/ednet for a local lake."""
    root = load_settings(ssm=PARSE_TIME_SSM).lake.rstrip("/")
    uri = f"{root}/{which}/ednet"
    return uri if uri.startswith("s3://") else "file://" + os.path.abspath(uri)


def operator_class(kind: str, runtime: str | None = None) -> type:
    """The operator class that runs one kind of AWS job on this runtime."""
    if kind not in OPERATORS:
        raise ValueError(f"unknown operator kind {kind!r} (known: {', '.join(OPERATORS)})")
    path = OPERATORS[kind][0 if (runtime or runtime_name()) == "aws" else 1]
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def operator(kind: str, task_id: str, **kwargs: Any) -> Any:
    """An Airflow operator for one AWS job: the Amazon provider's on aws, ours from plugins/ on local.

    On aws a waiting kind is deferrable, so a DAG file says nothing about it:
    the job is submitted by a worker, waited for by the triggerer.
    """
    runtime = runtime_name()
    if kind in DEFERRABLE:
        kwargs.setdefault("deferrable", runtime == "aws")
    return operator_class(kind, runtime)(task_id=task_id, **kwargs)


def task_settings() -> Settings:
    """Settings for a running task; locally the DAGs need the shared moto server, not a per-task one."""
    settings = load_settings()
    if settings.runtime == "local" and not settings.aws_endpoint_url:
        raise ConfigError(
            f"{env_var('aws_endpoint_url')}: the local runtime's DAGs keep DynamoDB and CloudWatch in a moto "
            "server that outlives each task: docker-compose's moto service, or the one `kt airflow-demo` starts"
        )
    return settings


def run_date(context: dict) -> str:
    """The ISO date a run works for: its logical date, or when it was triggered (Airflow 3 manual runs)."""
    moment = context.get("logical_date") or context["dag_run"].run_after
    return moment.date().isoformat()


def run_id(context: dict) -> str:
    """The run id every job name of this DAG run derives from (stable across task retries)."""
    from kt import aws_requests

    return aws_requests.run_id(context["dag_run"].run_after)


# --- ednet_etl -----------------------------------------------------------------


def glue_job(settings: Settings) -> dict:
    """GlueJobOperator arguments: Terraform's ednet-preprocessor job, run on this lake.

    ``--raw`` is the raw version the pointer names now (the job reads what the
    format was detected on); ``--processed`` the dataset root, under which the
    job writes a new version. ``pointer_before`` is the processed version
    served before the run, for ``check_manifest``.
    """
    from kt import etl, lake

    uris = lake.uris(settings)
    raw = lake.current(uris["raw"])
    script_args = {"--raw": raw, "--processed": uris["processed"], "--format": etl.detect_format(raw),
                   "--keep-versions": str(settings.keep_versions)}
    mappings = lake.join(raw, "skill_mappings.json")
    if lake.exists(mappings):
        script_args["--skill-mappings"] = mappings
    create_job_kwargs: dict[str, Any] = {"GlueVersion": "5.1", "WorkerType": "G.1X", "NumberOfWorkers": 2}
    if settings.glue_extra_py_files:
        create_job_kwargs["DefaultArguments"] = {"--extra-py-files": settings.glue_extra_py_files}
    pointer = lake.read_pointer(uris["processed"])
    return {
        "job_name": settings.glue_job_name,
        "script_location": settings.glue_script_location or LOCAL_GLUE_SCRIPT,
        "script_args": script_args,
        "iam_role_name": settings.glue_role_name,
        # Used only when the job does not exist yet (Terraform creates it) and the script is a local file.
        "s3_bucket": settings.lake[len("s3://"):].split("/", 1)[0] if lake.is_s3(settings.lake) else None,
        "create_job_kwargs": create_job_kwargs,
        "pointer_before": pointer["version"] if pointer else None,
    }


def check_manifest(settings: Settings, pointer_before: str | None = None) -> dict:
    """The processed dataset the ETL run switched to, refused unless it checks out (docs/contracts.md §4.4).

    Refused as well when the run left the pointer where it was (``pointer_before``):
    then nothing new was served and nothing may be announced to training.
    """
    dataset = check_dataset(settings)
    if pointer_before is not None and dataset["version"] == pointer_before:
        raise RuntimeError(f"the ETL job finished but {dataset['root']}/_current.json still names {pointer_before}: "
                           "its output was not switched to")
    return dataset["manifest"]


def check_dataset(settings: Settings) -> dict:
    """The processed version readers are served now, checked: its manifest adds up and is the one the pointer recorded.

    dkt_train runs this before training and trains on exactly this version
    (``uri``); ``manifest_sha256`` is what model.json's training_manifest_sha256 must be.
    """
    from kt import etl, lake

    root = lake.uris(settings)["processed"]
    pointer = lake.read_pointer(root)  # read once: the version checked is the version returned
    uri = lake.join(root, pointer["version"]) if pointer else root
    manifest = etl.check_manifest(uri)
    sha = lake.sha256(lake.join(uri, "_manifest.json"))
    if pointer is not None and pointer["manifest_sha256"] != sha:
        raise etl.ManifestError(f"{uri}/_manifest.json changed after {root}/_current.json was switched to it "
                                f"(sha256 {sha}, pointer {pointer['manifest_sha256']})")
    return {"root": root, "version": pointer["version"] if pointer else None, "uri": uri, "manifest_sha256": sha,
            "manifest": {k: v for k, v in manifest.items() if k != "inputs"}}


# --- dkt_train -----------------------------------------------------------------


def evaluate_candidate(settings: Settings, training: dict, dataset: dict | None = None) -> dict:
    """Test-split reports of the new model and of the current one, as the training job wrote them.

    The job scored both on the version it trained on (kt.job_evaluation); this
    reads its report from the candidate's model.tar.gz (small: no dataset is
    loaded here) and publishes its reliability diagram next to the tarball.
    Refused when the candidate's model.json names another manifest than
    ``dataset``'s (check_dataset's), or when the model the job compared with is
    not the one promoted now.
    """
    from kt import aws_requests, job_evaluation, pipeline

    describe = training["Training"]
    candidate_url = describe["ModelArtifacts"]["S3ModelArtifacts"]
    info, report = job_evaluation.read_report(candidate_url, pipeline.reliability_uri(candidate_url))
    pipeline.check_trained_on(info, candidate_url, dataset["manifest_sha256"] if dataset else None)
    current = pipeline.current_model(settings)
    compared = next((c["DataSource"]["S3DataSource"]["S3Uri"] for c in describe["InputDataConfig"]
                     if c["ChannelName"] == aws_requests.CURRENT_CHANNEL), None)
    promoted = current["model_data_url"] if current else None
    if compared != promoted:
        raise RuntimeError(f"{describe['TrainingJobName']} compared its model with {compared}, but the promoted "
                           f"model is {promoted}: rerun the training")
    if (compared is None) != (report["current"] is None):
        raise RuntimeError(f"{candidate_url}: the job's report does not match its current channel ({compared})")
    return {
        "job_name": describe["TrainingJobName"],
        "model_data_url": candidate_url,
        "candidate": report["candidate"],
        "current": report["current"],
        "current_job_name": current["job_name"] if current else None,
    }


def promotion_decision(evaluation: dict, tolerance: float = PROMOTION_TOLERANCE) -> tuple[bool, str]:
    """Promote only a model whose test AUC beats the current model's (same split) by the tolerance."""
    new_auc = evaluation["candidate"]["dkt"]["auc"]
    if evaluation["current"] is None:
        return True, f"no current model: promoting {evaluation['job_name']} (test AUC {new_auc:.4f})"
    old_auc = evaluation["current"]["dkt"]["auc"]
    verdict = new_auc >= old_auc + tolerance
    return verdict, (
        f"{evaluation['job_name']} test AUC {new_auc:.4f} vs current {evaluation['current_job_name']} {old_auc:.4f} "
        f"(tolerance {tolerance}): {'promote' if verdict else 'keep the current model'}"
    )


def deployment_requests(settings: Settings, run: str, model_data_url: str) -> dict:
    """CreateModel, CreateEndpointConfig and CreateEndpoint/UpdateEndpoint requests of one promotion."""
    from kt import aws_requests

    return {
        "model": aws_requests.model(settings, run, model_data_url),
        "endpoint_config": aws_requests.endpoint_config(settings, run),
        "endpoint": aws_requests.endpoint(settings, run),
    }


# --- kt_mastery_refresh --------------------------------------------------------


def sync_history(settings: Settings) -> int:
    """Locally the lake's answer events are the source of truth: load them into kt-history.

    On aws the tutor writes kt-history itself (and a daily export copies it to
    the lake), so there is nothing to load.
    """
    from kt import pipeline

    if settings.runtime == "aws":
        return 0
    return pipeline.sync_local_tables(settings)


def prepare_refresh(settings: Settings, run_date: str, run: str) -> dict:
    """Active users since the watermark -> JSON Lines input (incremental from stored states), and the transform
    request for them."""
    import tempfile

    from kt import artifact, aws, aws_requests, lake, pipeline, refresh

    current = pipeline.current_model(settings)
    if current is None:
        raise RuntimeError(f"no promoted model at {lake.uris(settings)['current_model']}: train first")
    with tempfile.TemporaryDirectory(prefix="kt-refresh-") as tmp:
        info = artifact.read_info(artifact.unpack(current["model_data_url"], tmp))
    client = aws.client(settings, "dynamodb")
    watermark = refresh.read_watermark(settings.lake, run_date)  # a repeated night redoes the same days
    days = refresh.days_to_refresh(watermark, run_date)
    if not days:  # a night older than the watermark: nothing of it is missing
        return {"users": 0, "days": [], "last_day": watermark, "answers_fed": 0, "incremental": 0, "full": 0,
                "transform": None}
    built = refresh.build_inputs(client, settings.history_table, settings.lake, run_date, days,
                                 known_skills={int(s) for s in info["skill_ids"]}, model_version=info["model_version"],
                                 mastery_table=settings.mastery_table)
    model_request = aws_requests.model(settings, run, current["model_data_url"])
    transform_request = aws_requests.transform_job(settings, run, run_date, model_request["ModelName"])
    return {"users": built["users"], "days": days, "last_day": days[-1], "answers_fed": built["answers_fed"],
            "incremental": built["incremental"], "full": built["full"] + built["late"],
            "transform": {"Model": model_request, "Transform": transform_request}}


def load_mastery(settings: Settings, run_date: str, last_day: str) -> dict:
    """Conditional writes of the transform outputs into kt-mastery; the watermark moves after them."""
    import dataclasses

    from kt import aws, refresh

    client = aws.client(settings, "dynamodb")
    return dataclasses.asdict(refresh.load_outputs(client, settings.mastery_table, settings.lake, run_date, last_day))


# --- every DAG -----------------------------------------------------------------


def on_failure(context: dict) -> None:
    """Failure callback: log the failed task and, on aws, tell the alarm topic (SNS)."""
    ti = context.get("task_instance") or context.get("ti")
    where = f"{getattr(ti, 'dag_id', '?')}.{getattr(ti, 'task_id', '?')} try {getattr(ti, 'try_number', '?')}"
    log.error("task failed: %s: %s", where, context.get("exception"))
    try:
        from kt import aws

        settings = load_settings()
        if settings.alarm_topic_arn:
            aws.client(settings, "sns").publish(
                TopicArn=settings.alarm_topic_arn, Subject=f"kt task failed: {where}"[:100],
                Message=json.dumps({"task": where, "error": str(context.get("exception")),
                                    "at": datetime.now().astimezone().isoformat(timespec="seconds")}),
            )
    except Exception:  # noqa: BLE001 - a callback must not hide the task's own failure
        log.exception("could not notify the alarm topic")
