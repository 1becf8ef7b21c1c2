"""Drift checks of the promoted model (the kt_drift_check DAG, `kt drift`).

    kt drift --run-date 2026-11-25

The tutor answers of the last ``RECENT_DAYS`` days (the lake's
``events/answers/``, docs/contracts.md §3) are compared with the ``reference`` that
training stored in ``model.json``:

- skill mix: population stability index (PSI) of the share of answers per
  skill of the model (answers on skills the model does not know are counted apart);
- correctness rate: PSI of the two bins (wrong, right);
- predictions: PSI of the histogram (10 bins on [0, 1]) of the model's
  next-answer predictions, against the histogram of its predictions on the
  validation split;
- AUC of those predictions on the answers labelled after the model was
  trained (``answered_at`` later than model.json's ``created_at``), next to the
  model's validation AUC;
- what the endpoint itself was sent (realtime endpoints): the requests SageMaker's
  data capture wrote under ``monitoring/data-capture/<endpoint>/AllTraffic/yyyy/mm/dd/hh/``
  in the same days, as JSON Lines of ``captureData.endpointInput`` /
  ``endpointOutput`` (``observedContentType``, ``mode``, ``data``, ``encoding``:
  JSON or CSV text, else BASE64), ``eventMetadata`` and ``eventVersion``. The
  answers in their ``user_sequence`` give the PSI of the endpoint's skill mix and
  correctness rate against the same reference. Serverless endpoints have no
  capture (AWS does not support it there): the report says so.

``DriftScore`` is the largest PSI. It is published to CloudWatch (namespace
``KT``, dimension ``EndpointName``: what the Terraform alarm watches) with the
other PSIs and the AUC, and the report goes to
``monitoring/drift/<run-date>.json``. Retraining is due when the score
exceeds the threshold (0.2, like the alarm) or the AUC dropped by more than
``AUC_DROP``. With fewer than ``MIN_ANSWERS`` recent answers nothing is
concluded: PSI on a handful of answers is noise.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import date, datetime, timedelta, timezone

import numpy as np

from kt.config import Settings

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.2  # = Terraform's drift_threshold (the alarm on KT/DriftScore)
RECENT_DAYS = 7
MIN_ANSWERS = 100  # recent answers needed before a PSI means anything
MIN_LABELLED = 50  # answers since training needed for an AUC
AUC_DROP = 0.05
PSI_EPSILON = 1e-4  # stands in for empty bins, so ln(a/e) stays finite
PREDICTION_BINS = 10
NAMESPACE = "KT"
# Content types of the bodies the endpoint accepts (kt.inference.input_fn): one request, or one per line.
JSON_TYPES = ("application/json",)
JSON_LINES_TYPES = ("application/jsonlines", "application/x-jsonlines", "application/jsonl")


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = PSI_EPSILON) -> float:
    """Population stability index: sum((a - e) * ln(a / e)) over the bins of two distributions."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.sum() <= 0 or a.sum() <= 0:
        raise ValueError(f"psi needs two non-empty distributions of the same shape, got {e.shape} and {a.shape}")
    e = np.clip(e / e.sum(), eps, None)
    a = np.clip(a / a.sum(), eps, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def skill_mix(skill_ids: list[int], answers_skills: np.ndarray) -> tuple[np.ndarray, int]:
    """Counts of answers per model skill (index order), and how many answers were on unknown skills."""
    index = {int(s): i for i, s in enumerate(skill_ids)}
    counts = np.zeros(len(skill_ids), dtype=np.float64)
    unknown = 0
    for s in answers_skills:
        i = index.get(int(s))
        if i is None:
            unknown += 1
        else:
            counts[i] += 1
    return counts, unknown


def correctness_psi(reference_rate: float, correct: np.ndarray) -> float:
    """PSI of (wrong, right) between the training answers and the recent ones."""
    rate = float(np.mean(correct))
    return psi(np.array([1 - reference_rate, reference_rate]), np.array([1 - rate, rate]))


def prediction_histogram(predictions: np.ndarray, bins: int = PREDICTION_BINS) -> np.ndarray:
    """The same binning as the reference's prediction_histogram (kt.train.Trainer.model_info)."""
    return np.histogram(predictions, bins=bins, range=(0, 1))[0]


def auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC, or None when there are too few labelled answers or only one class."""
    from sklearn.metrics import roc_auc_score

    if len(y) < MIN_LABELLED or y.min() == y.max():
        return None
    return float(roc_auc_score(y, p))


def recent_answers(answers: list[dict], run_date: str, days: int = RECENT_DAYS) -> list[dict]:
    """Answers of the days (run_date - days, run_date]."""
    end = date.fromisoformat(run_date)
    first = (end - timedelta(days=days - 1)).isoformat()
    return [a for a in answers if first <= a["answered_at"][:10] <= run_date]


def capture_prefix(settings: Settings) -> str:
    """Where SageMaker writes this endpoint's captured requests: <DestinationS3Uri>/<endpoint>/<variant>."""
    from kt import aws_requests, lake

    return lake.join(lake.uris(settings)["data_capture"], settings.endpoint_name,
                     aws_requests.VARIANT_NAME)


def capture_files(settings: Settings, run_date: str, days: int = RECENT_DAYS) -> list[str]:
    """The capture files of the days (run_date - days, run_date], from SageMaker's yyyy/mm/dd/hh folders."""
    from kt import lake

    end = date.fromisoformat(run_date)
    files: list[str] = []
    for back in range(days - 1, -1, -1):
        day = end - timedelta(days=back)
        folder = lake.join(capture_prefix(settings), f"{day.year:04d}", f"{day.month:02d}", f"{day.day:02d}")
        files += [uri for uri in lake.list_files(folder) if uri.endswith(".jsonl")]
    return files


def decode_captured(payload: dict) -> str:
    """The body SageMaker captured: JSON and CSV encodings keep the text, BASE64 holds the bytes."""
    encoding, data = payload.get("encoding"), payload.get("data")
    if not isinstance(data, str):
        raise ValueError("captured data is not a string")
    if encoding == "BASE64":
        return base64.b64decode(data, validate=True).decode("utf-8")
    if encoding in ("JSON", "CSV"):
        return data
    raise ValueError(f"unknown capture encoding {encoding!r}")


def captured_requests(record: dict) -> list[dict]:
    """The request bodies of one capture record (a JSON Lines batch holds several); ValueError if unreadable."""
    endpoint_input = record["captureData"]["endpointInput"]
    text = decode_captured(endpoint_input)
    content_type = str(endpoint_input.get("observedContentType") or "").split(";")[0].strip().lower()
    if content_type in JSON_TYPES:
        bodies = [json.loads(text)]
    elif content_type in JSON_LINES_TYPES:
        bodies = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        raise ValueError(f"content type {content_type!r} is not one the endpoint accepts")
    if not all(isinstance(b, dict) for b in bodies):
        raise ValueError("a request body is not a JSON object")
    return bodies


def request_answers(body: dict) -> list[tuple[int, int]]:
    """(skill_id, correct) of each answer in a request's user_sequence; ValueError if it is not one."""
    sequence = body.get("user_sequence")
    if not isinstance(sequence, list):
        raise ValueError("no user_sequence list")
    answers = []
    for answer in sequence:
        skill, correct = (answer.get("skill_id"), answer.get("correct")) if isinstance(answer, dict) else (None, None)
        if type(skill) is not int or type(correct) is not int or correct not in (0, 1):  # as kt.inference checks
            raise ValueError(f"not an answer: {answer!r}")
        answers.append((skill, correct))
    return answers


def endpoint_inputs(settings: Settings, skill_ids: list[int], reference: dict, run_date: str,
                    days: int = RECENT_DAYS) -> dict:
    """PSIs of the answers the endpoint was sent (its data capture) against the training reference.

    Requests the endpoint would refuse (unreadable body, no user_sequence, a bad
    answer) are counted apart, not guessed at.
    """
    from kt import lake

    section: dict = {"prefix": capture_prefix(settings), "files": 0, "requests": 0, "unreadable": 0, "answers": 0,
                     "psi": {"skill_mix": None, "correct_rate": None}}
    if settings.endpoint_mode == "serverless":
        section["status"] = "not captured: serverless endpoints do not support data capture"
        return section
    files = capture_files(settings, run_date, days)
    answers: list[tuple[int, int]] = []
    for uri in files:
        for line in lake.read_text(uri).splitlines():
            if not line.strip():
                continue
            try:
                bodies = captured_requests(json.loads(line))
                found = [request_answers(body) for body in bodies]
            except (KeyError, TypeError, ValueError) as e:  # json and base64 errors are ValueErrors
                log.warning("unreadable capture record in %s: %s", uri, e)
                section["unreadable"] += 1
                continue
            section["requests"] += len(found)
            answers += [a for request in found for a in request]
    section.update({"files": len(files), "answers": len(answers)})
    if len(answers) < MIN_ANSWERS:
        section["status"] = f"too few captured answers ({len(answers)} < {MIN_ANSWERS}): nothing concluded"
        return section
    counts, unknown = skill_mix(skill_ids, np.array([s for s, _ in answers]))
    section["unknown_skill_answers"] = unknown
    section["psi"] = {
        "skill_mix": psi(np.array(reference["skill_mix"]), counts) if counts.sum() else None,
        "correct_rate": correctness_psi(reference["correct_rate"], np.array([c for _, c in answers])),
    }
    section["status"] = "ok"
    return section


def next_answer_predictions(loaded, answers: list[dict], run_date: str) -> list[tuple[dict, float]]:
    """(answer, P(correct) the model gave before seeing it) for every answer it can predict.

    Each user's history up to the run date is replayed in time order, in
    windows of the model's max_seq_len as in evaluation (a window's first
    answer has no prediction); answers on unknown skills are left out.
    """
    import pyarrow as pa

    from kt.data import SkillVocab, make_windows
    from kt.evaluate import predict_windows, target_positions

    by_user: dict[str, list[dict]] = {}
    for a in answers:
        if a["answered_at"][:10] <= run_date and int(a["skill_id"]) in loaded.index:
            by_user.setdefault(str(a["user_id"]), []).append(a)
    users = sorted(by_user)
    histories = [sorted(by_user[u], key=lambda a: (a["answered_at"], str(a["answer_id"]))) for u in users]
    table = pa.table({"skill_id": [[int(a["skill_id"]) for a in h] for h in histories],
                      "correct": [[int(a["correct"]) for a in h] for h in histories]})
    windows = make_windows(table, SkillVocab(loaded.skill_ids), loaded.model.config.max_seq_len)
    if not windows:
        return []
    _, p = predict_windows(loaded.model, windows)
    rows, positions = target_positions(windows)
    return [(histories[r][i], float(q)) for r, i, q in zip(rows, positions, p)]


def compute(settings: Settings, run_date: str, threshold: float = DEFAULT_THRESHOLD, days: int = RECENT_DAYS) -> dict:
    """The drift report of the promoted model for the days up to run_date."""
    import tempfile

    from kt import artifact, inference, pipeline, refresh

    report: dict = {"run_date": run_date, "days": days, "threshold": threshold, "drift_score": None,
                    "retrain": False, "reasons": []}
    current = pipeline.current_model(settings)
    if current is None:
        report["status"] = "no promoted model"
        return report
    with tempfile.TemporaryDirectory(prefix="kt-drift-") as tmp:
        model_dir = artifact.unpack(current["model_data_url"], tmp)
        info = artifact.read_info(model_dir)
        loaded = inference.model_fn(model_dir)
    reference = info["reference"]
    answers = refresh.read_answer_events(settings.lake)
    recent = recent_answers(answers, run_date, days)
    report.update({"model_version": info["model_version"], "model_created_at": info.get("created_at"),
                   "answers": len(recent), "users": len({a["user_id"] for a in recent})})
    report["endpoint_inputs"] = endpoint_inputs(settings, info["skill_ids"], reference, run_date, days)
    if len(recent) < MIN_ANSWERS:
        report["status"] = f"too few answers ({len(recent)} < {MIN_ANSWERS}): nothing concluded"
        return report
    counts, unknown = skill_mix(info["skill_ids"], np.array([a["skill_id"] for a in recent]))
    correct = np.array([int(a["correct"]) for a in recent])
    in_window = {id(a) for a in recent}
    predicted = [(a, p) for a, p in next_answer_predictions(loaded, answers, run_date) if id(a) in in_window]
    predictions = np.array([p for _, p in predicted])
    report["psi"] = {
        "skill_mix": psi(np.array(reference["skill_mix"]), counts) if counts.sum() else None,
        "correct_rate": correctness_psi(reference["correct_rate"], correct),
        "predictions": psi(np.array(reference["prediction_histogram"]), prediction_histogram(predictions))
        if len(predictions) else None,
        "endpoint_skill_mix": report["endpoint_inputs"]["psi"]["skill_mix"],
        "endpoint_correct_rate": report["endpoint_inputs"]["psi"]["correct_rate"],
    }
    report["unknown_skill_answers"] = unknown
    report["correct_rate"] = {"recent": float(correct.mean()), "reference": reference["correct_rate"]}
    created = info.get("created_at") or ""
    labelled = [(a, p) for a, p in predicted if _utc(a["answered_at"]) > created]
    y = np.array([int(a["correct"]) for a, _ in labelled])
    valid_auc = info.get("metrics", {}).get("valid", {}).get("auc")
    report["auc_since_training"] = {"auc": auc(y, np.array([p for _, p in labelled])), "n": len(labelled),
                                    "valid_auc": valid_auc}
    scores = [v for v in report["psi"].values() if v is not None]
    report["drift_score"] = max(scores) if scores else None
    for name, value in report["psi"].items():
        if value is not None and value > threshold:
            report["reasons"].append(f"{name} PSI {value:.3f} > {threshold}")
    recent_auc = report["auc_since_training"]["auc"]
    if recent_auc is not None and valid_auc is not None and recent_auc < valid_auc - AUC_DROP:
        report["reasons"].append(f"AUC since training {recent_auc:.4f} < valid AUC {valid_auc:.4f} - {AUC_DROP}")
    report["retrain"] = bool(report["reasons"])
    report["status"] = "drift" if report["retrain"] else "ok"
    return report


def _utc(answered_at: str) -> str:
    """An answer's time in model.json's created_at form (ISO, +00:00) so the two compare as strings."""
    return datetime.fromisoformat(answered_at.replace("Z", "+00:00")).astimezone(timezone.utc).isoformat(
        timespec="seconds")


def metric_data(settings: Settings, report: dict) -> list[dict]:
    """CloudWatch datapoints of a report: DriftScore (the alarm's metric), the PSIs and the AUC."""
    dimensions = [{"Name": "EndpointName", "Value": settings.endpoint_name}]
    now = datetime.now(timezone.utc)
    values = {"DriftScore": report["drift_score"]}
    for name, key in (("SkillMixPSI", "skill_mix"), ("CorrectRatePSI", "correct_rate"), ("PredictionPSI", "predictions"),
                      ("EndpointSkillMixPSI", "endpoint_skill_mix"), ("EndpointCorrectRatePSI", "endpoint_correct_rate")):
        values[name] = report.get("psi", {}).get(key)
    values["AUCSinceTraining"] = (report.get("auc_since_training") or {}).get("auc")
    return [{"MetricName": name, "Dimensions": dimensions, "Timestamp": now, "Value": float(value),
             "Unit": "None"} for name, value in values.items() if value is not None]


def report_uri(settings: Settings, run_date: str) -> str:
    from kt import lake

    return lake.join(lake.uris(settings)["drift"], f"{run_date}.json")


def check(settings: Settings, run_date: str, threshold: float = DEFAULT_THRESHOLD, days: int = RECENT_DAYS) -> dict:
    """Compute the report, write it to the lake and publish its metrics; return it."""
    from kt import aws, lake

    report = compute(settings, run_date, threshold, days)
    data = metric_data(settings, report)
    if data:
        aws.client(settings, "cloudwatch").put_metric_data(Namespace=NAMESPACE, MetricData=data)
    report["metrics_published"] = [d["MetricName"] for d in data]
    report["uri"] = report_uri(settings, run_date)
    lake.write_text(report["uri"], json.dumps(report, indent=1))
    log.info("drift %s: score %s (threshold %s) %s", run_date, report["drift_score"], threshold,
             "; ".join(report["reasons"]) or report["status"])
    return report


def main(settings: Settings, run_date: str) -> int:
    """`kt drift`: the report as JSON (locally, CloudWatch is the configured or an embedded moto server)."""
    from kt import aws

    with aws.local_aws(settings) as settings:
        report = check(settings, run_date)
    print(json.dumps(report, indent=1))
    return 0
