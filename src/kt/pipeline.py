"""The pipeline's steps as plain functions, shared by the CLI, the demo and the DAGs.

Each step takes the settings (and a run id or date) and works on the lake of
docs/contracts.md §3, through the same request dictionaries the AWS deployment uses.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone

from kt import artifact, aws, aws_requests, dynamo, lake, local_sagemaker, refresh
from kt.config import Settings

log = logging.getLogger(__name__)

# Chosen on the demo data's valid split (see README, "Measured"): as good as the seed's 2x128 LSTM there, 3x faster.
# count_features (kt.model): valid AUC 0.774 instead of 0.763, test 0.750 instead of 0.738 (oracle 0.775), for
# about 1.4x the CPU time per training step.
DEMO_HYPERPARAMETERS = {"epochs": 8, "batch_size": 32, "lr": 0.005, "patience": 2, "checkpoint_every": 500,
                        "hidden": 64, "layers": 1, "dropout": 0.3, "window_context": 100,
                        "count_features": 1}


def train_local(settings: Settings, run: str, hyperparameters: dict, work_dir: str) -> dict:
    """The CreateTrainingJob request of this run (the current model as its ``current`` channel), executed by
    the local runner; fails loudly."""
    current = current_model(settings)
    request = aws_requests.training_job(settings, run, hyperparameters,
                                        current_model_url=current["model_data_url"] if current else None)
    describe = local_sagemaker.run_training_job(request, work_dir)
    if describe["TrainingJobStatus"] != "Completed":
        raise RuntimeError(f"training job {request['TrainingJobName']} {describe['TrainingJobStatus']}: "
                           f"{describe.get('FailureReason')}")
    return describe


def evaluate_model(settings: Settings, model_data_url: str, processed: str | None = None,
                   manifest_sha256: str | None = None) -> dict:
    """Test-split metrics of a model.tar.gz (as served: its temperature) next to the baselines (and the
    oracle on sample data); draws the reliability diagram of every method (reliability_uri).

    Here, on this machine (``kt evaluate``, the demo); dkt_train reads the
    training job's own evaluation instead (kt.job_evaluation).
    ``processed``: the version to score on (default: the one the pointer names).
    ``manifest_sha256``: refuse a model whose model.json says it was trained on another manifest.
    """
    from kt import job_evaluation

    with tempfile.TemporaryDirectory(prefix="kt-eval-") as tmp:
        model_dir = artifact.unpack(model_data_url, tmp)
        check_trained_on(artifact.read_info(model_dir), model_data_url, manifest_sha256)
        oracle = lake.join(settings.lake, "sample", "oracle.parquet")
        return job_evaluation.score(model_dir, processed or lake.dataset(settings, "processed"), oracle_uri=oracle,
                                    reliability_png=reliability_uri(model_data_url))


def check_trained_on(info: dict, model_data_url: str, manifest_sha256: str | None) -> None:
    """Refuse a model whose model.json names another training manifest than the checked dataset's."""
    trained_on = info.get("training_manifest_sha256")
    if manifest_sha256 is not None and trained_on != manifest_sha256:
        raise RuntimeError(f"{model_data_url} was trained on manifest sha256 {trained_on}, not the checked "
                           f"dataset's {manifest_sha256}")


def reliability_uri(model_data_url: str) -> str:
    """Where evaluate_model draws the reliability diagram: next to the model's tarball."""
    return lake.join(model_data_url.rsplit("/", 1)[0], "reliability.png")


def promote(settings: Settings, job_name: str, model_data_url: str, report: dict) -> dict:
    """Record the promoted model in models/dkt/current.json."""
    current = {"job_name": job_name, "model_data_url": model_data_url, "metrics": report,
               "promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    lake.write_text(lake.uris(settings)["current_model"], json.dumps(current, indent=1))
    return current


def current_model(settings: Settings) -> dict | None:
    """models/dkt/current.json (job_name, model_data_url, metrics), or None before the first promotion."""
    uri = lake.uris(settings)["current_model"]
    return json.loads(lake.read_text(uri)) if lake.exists(uri) else None


@dataclass
class RefreshSummary:
    run_date: str
    days: list[str]
    answers_synced: int
    users: int
    written: int
    skipped_stale: int
    errors: int
    incremental: int = 0  # users fed their stored state and the answers since
    full: int = 0  # users fed their whole history (no usable state, or a late answer)
    answers_fed: int = 0


def refresh_local(settings: Settings, run_date: str, run: str, work_dir: str) -> RefreshSummary:
    """The nightly refresh on this machine: kt-history from the lake, local transform, conditional load."""
    current = current_model(settings)
    if current is None:
        raise RuntimeError(f"no promoted model at {lake.uris(settings)['current_model']}: train first")
    client = aws.client(settings, "dynamodb")
    dynamo.ensure_tables(client, settings.history_table, settings.mastery_table)
    synced = refresh.sync_history(client, settings.history_table, settings.lake)
    days = refresh.days_to_refresh(refresh.read_watermark(settings.lake, run_date), run_date)
    if not days:
        log.info("kt-mastery already holds every day up to %s: nothing to refresh", run_date)
        return RefreshSummary(run_date, days, synced, 0, 0, 0, 0)
    with tempfile.TemporaryDirectory() as tmp:
        info = artifact.read_info(artifact.unpack(current["model_data_url"], tmp))
    built = refresh.build_inputs(client, settings.history_table, settings.lake, run_date, days,
                                 known_skills={int(s) for s in info["skill_ids"]}, model_version=info["model_version"],
                                 mastery_table=settings.mastery_table)
    model_request = aws_requests.model(settings, run, current["model_data_url"])
    transform_request = aws_requests.transform_job(settings, run, run_date, model_request["ModelName"])
    if built["users"]:
        local_sagemaker.run_transform_job({"Model": model_request, "Transform": transform_request}, work_dir)
    loaded = refresh.load_outputs(client, settings.mastery_table, settings.lake, run_date, last_day=days[-1])
    return RefreshSummary(run_date, days, synced, built["users"], loaded.written, loaded.skipped_stale, loaded.errors,
                          built["incremental"], built["full"] + built["late"], built["answers_fed"])


def sagemaker_work_dir(settings: Settings) -> str:
    """Where the local runners keep job records: beside a local lake, else under .kt/."""
    if lake.is_s3(settings.lake):
        return os.path.abspath(local_sagemaker.DEFAULT_WORK_DIR)
    return os.path.join(os.path.dirname(os.path.abspath(settings.lake)), "sagemaker")


def sync_local_tables(settings: Settings) -> int:
    """Locally both tables are projections of the lake: answers from events/, mastery from batch outputs."""
    client = aws.client(settings, "dynamodb")
    dynamo.ensure_tables(client, settings.history_table, settings.mastery_table)
    refresh.rebuild_mastery(client, settings.mastery_table, settings.lake)
    return refresh.sync_history(client, settings.history_table, settings.lake)


def user_chart(settings: Settings, user_id: str, out_path: str) -> str:
    """The spider chart of one user: DKT topic mastery from kt-mastery, Bayesian from kt-history."""
    from kt import bayes, chart

    client = aws.client(settings, "dynamodb")
    history = dynamo.user_history(client, settings.history_table, user_id)
    row = dynamo.get_mastery(client, settings.mastery_table, user_id)
    if not history and row is None:
        raise ValueError(f"unknown user {user_id!r}: no answers in {settings.history_table}")
    series = {}
    if row is not None and row.get("source") == "dkt":
        series["DKT"] = row["topic_mastery"]
    skill_topics = _skill_topics(settings)
    answers = [(int(h["skill_id"]), int(h["correct"])) for h in history]
    series["Bayesian"] = bayes.topic_mastery(answers, skill_topics)
    return chart.spider_chart(series, f"Knowledge state of {user_id} ({len(answers)} answers)", out_path)


def _skill_topics(settings: Settings) -> dict[int, str]:
    """skill -> topic from the promoted model (what the API speaks)."""
    current = current_model(settings)
    if current is None:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        info = artifact.read_info(artifact.unpack(current["model_data_url"], tmp))
    return {int(s): t for s, t in info["skill_topics"].items()}
