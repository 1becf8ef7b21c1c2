"""The training job scores its model: the candidate and the current model on the test split, inside SageMaker.

    python -m kt.job_evaluation            # in the container (kt_train_entry.py): train, then evaluate

The Airflow worker never loads the dataset: after kt.train has written the
model, the job scores it and the current model (the request's ``current``
channel, its model.tar.gz, when there is a promoted model) on the test split
of its own training channel, the dataset version it trained on, and writes
``evaluation.json`` and ``reliability.png`` into the model directory. They
travel in model.tar.gz next to model.json; dkt_train's gate reads them back
with ``read_report`` (docs/contracts.md §5.4, §5.6). Without a ``current``
channel (SageMaker then sets no ``SM_CHANNEL_CURRENT``) the report's
``current`` is null. There is no oracle inside the job: it is sample data's
(``sample/oracle.parquet``), outside the channel; ``kt evaluate`` reports it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tarfile
import tempfile
import traceback

from kt import evaluate, inference, lake, train
from kt.config import TrainingPaths, training_paths
from kt.data import SkillVocab

log = logging.getLogger(__name__)

REPORT_FILE = "evaluation.json"
RELIABILITY_FILE = "reliability.png"
MODEL_TARBALL = "model.tar.gz"  # the current channel's one object: S3Prefix on the key of the promoted model.tar.gz


def score(model_dir: str, processed: str, oracle_uri: str | None = None, reliability_png: str | None = None) -> dict:
    """Test-split metrics of one model directory as served (its temperature), next to the baselines."""
    loaded = inference.model_fn(model_dir)
    return evaluate.evaluate(loaded.model, SkillVocab(loaded.skill_ids), processed, oracle_uri=oracle_uri,
                             temperature=loaded.temperature, reliability_png=reliability_png)


def evaluate_job(paths: TrainingPaths) -> dict:
    """Score the trained model and the current one on the training channel's test split; write the report."""
    report: dict = {"candidate": score(paths.model_dir, paths.train_channel,
                                       reliability_png=os.path.join(paths.model_dir, RELIABILITY_FILE)),
                    "current": None, "current_model_version": None}
    if paths.current_channel:
        tarball = os.path.join(paths.current_channel, MODEL_TARBALL)
        if not os.path.isfile(tarball):
            raise FileNotFoundError(f"the current channel {paths.current_channel} holds "
                                    f"{sorted(os.listdir(paths.current_channel))}, not {MODEL_TARBALL}")
        with tempfile.TemporaryDirectory(prefix="kt-current-") as tmp:
            with tarfile.open(tarball, "r:gz") as tar:
                tar.extractall(tmp, filter="data")
            report["current"] = score(tmp, paths.train_channel)
            with open(os.path.join(tmp, "model.json")) as f:
                report["current_model_version"] = json.load(f).get("model_version")
    with open(os.path.join(paths.model_dir, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=1)
    current_auc = f" current_test_auc={report['current']['dkt']['auc']:.5f};" if report["current"] else ""
    print(f"test_auc={report['candidate']['dkt']['auc']:.5f};{current_auc}", flush=True)  # MetricDefinitions
    return report


def read_report(model_data_url: str, reliability_uri: str | None = None) -> tuple[dict, dict]:
    """(model.json, evaluation.json) from a model.tar.gz; the reliability diagram copied to reliability_uri."""
    with tempfile.TemporaryDirectory(prefix="kt-report-") as tmp:
        with tarfile.open(lake.stage(model_data_url, tmp), "r:gz") as tar:
            names = set(tar.getnames())
            if REPORT_FILE not in names:
                raise RuntimeError(f"{model_data_url} has no {REPORT_FILE}: the training job did not evaluate (its "
                                   "entry point is kt_train_entry.py of `kt package`, or python -m kt.job_evaluation)")
            wanted = [m for m in tar.getmembers() if m.name in ("model.json", REPORT_FILE, RELIABILITY_FILE)]
            tar.extractall(os.path.join(tmp, "out"), members=wanted, filter="data")
        out = os.path.join(tmp, "out")
        with open(os.path.join(out, "model.json")) as f, open(os.path.join(out, REPORT_FILE)) as g:
            info, report = json.load(f), json.load(g)
        if reliability_uri and RELIABILITY_FILE in names:
            lake.publish(os.path.join(out, RELIABILITY_FILE), reliability_uri)
    return info, report


def main(argv: list[str] | None = None) -> int:
    """kt.train, then the evaluation; an evaluation failure is the job's failure (output/failure)."""
    code = train.main(argv)
    if code:
        return code
    paths = training_paths()
    try:
        evaluate_job(paths)
    except Exception as e:  # noqa: BLE001 - report any failure to SageMaker, then fail
        train.write_failure(paths, f"evaluation: {type(e).__name__}: {e}\n{traceback.format_exc()}")
        log.exception("evaluation failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
