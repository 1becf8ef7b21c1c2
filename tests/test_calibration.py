"""Calibration (kt.calibration): ECE, temperature scaling, the reliability diagram, and its hooks.

Training stores T in model.json, inference applies it on every path, evaluation
scores DKT as served; a model.json without a temperature serves as before.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from kt import calibration, evaluate, inference
from kt.calibration import apply_temperature, calibrate, expected_calibration_error, fit_temperature
from kt.data import SkillVocab, make_windows, read_sequences
from kt.inference import JSON, JSON_LINES, input_fn, predict_fn

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def overconfident(n: int, true_temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Answers drawn from sigmoid(z) and a model that says sigmoid(z * T): T times too sure."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.float64)
    return y, 1 / (1 + np.exp(-z * true_temperature))


def test_ece_uses_15_equal_width_bins():
    # 0.27 and 0.33 share the bin [4/15, 5/15): one bin of accuracy 0.5 and confidence 0.30
    assert expected_calibration_error(np.array([1, 0]), np.array([0.27, 0.33])) == pytest.approx(0.2)
    # two bins: |0.5 - 0.05| and |1 - 0.95|, each with half the answers
    assert expected_calibration_error(np.array([0, 1, 1, 1]), np.array([0.05, 0.05, 0.95, 0.95])) == pytest.approx(0.25)
    assert evaluate.expected_calibration_error is expected_calibration_error  # one implementation


def test_temperature_scaling_recovers_an_overconfident_model():
    y, p = overconfident(50_000, true_temperature=2.5)
    fitted = fit_temperature(y, p)
    assert fitted == pytest.approx(2.5, rel=0.05)
    assert expected_calibration_error(y, p) > 0.05
    assert expected_calibration_error(y, apply_temperature(p, fitted)) < 0.01
    assert evaluate.metrics(y, apply_temperature(p, fitted))["auc"] == pytest.approx(evaluate.metrics(y, p)["auc"])


def test_calibrate_keeps_the_model_when_temperature_does_not_lower_ece():
    # two exactly calibrated groups: ECE is 0 and no T can lower it
    y = np.array([1] * 3 + [0] * 7 + [1] * 7 + [0] * 3, dtype=np.float64)
    p = np.array([0.3] * 10 + [0.7] * 10)
    kept = calibrate(y, p)
    assert kept["temperature"] == 1.0
    assert kept["calibration"]["valid_ece_after"] >= kept["calibration"]["valid_ece_before"]
    y, p = overconfident(5_000, true_temperature=3.0)
    fitted = calibrate(y, p)
    assert fitted["temperature"] == fitted["calibration"]["fitted_temperature"] > 1.5
    assert fitted["calibration"]["valid_ece_after"] < fitted["calibration"]["valid_ece_before"]


def test_reliability_diagram_is_a_png_of_the_ece_bins(tmp_path):
    y, p = overconfident(2_000, true_temperature=2.0)
    mean_p, accuracy, counts = calibration.reliability_curve(y, p)
    assert counts.sum() == len(y) and len(counts) <= calibration.ECE_BINS
    assert np.sum(counts * np.abs(accuracy - mean_p)) / len(y) == pytest.approx(expected_calibration_error(y, p))
    out = calibration.reliability_diagram({"model": (y, p), "scaled": (y, apply_temperature(p, 2.0))},
                                          str(tmp_path / "reliability.png"), "test")
    with open(out, "rb") as f:
        assert f.read(8) == PNG_MAGIC


def test_training_fits_the_temperature_on_valid_as_served_and_keeps_it_only_when_it_lowers_ece(
        tiny_model_dir, sample_lake):
    with open(f"{tiny_model_dir}/model.json") as f:
        info = json.load(f)
    stored = info["calibration"]
    assert info["temperature"] in (1.0, stored["fitted_temperature"])
    assert (info["temperature"] != 1.0) == (stored["valid_ece_after"] < stored["valid_ece_before"])
    loaded = inference.model_fn(tiny_model_dir)
    valid = read_sequences(f"{sample_lake}/processed/ednet", "valid")
    served = evaluate.served_windows(valid, SkillVocab(loaded.skill_ids), loaded.model.config.max_seq_len)
    y, p = evaluate.predict_windows(loaded.model, served)  # warm context, as the endpoint predicts
    assert stored["valid_ece_before"] == pytest.approx(expected_calibration_error(y, p))
    assert stored["valid_answers"] == len(y)
    cold = make_windows(valid, SkillVocab(loaded.skill_ids), loaded.model.config.max_seq_len)
    # served windows predict the answers cold windows start from (no context): more targets, warm state
    assert any(w.scored_from for w in served) and len(evaluate.predict_windows(loaded.model, cold)[0]) < len(y)


@pytest.fixture(scope="module")
def sharpened_model_dir(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny model with T = 0.25 written into its model.json (a large change, easy to see)."""
    out = str(tmp_path_factory.mktemp("sharpened") / "model")
    shutil.copytree(tiny_model_dir, out)
    with open(f"{out}/model.json") as f:
        info = json.load(f)
    info["temperature"] = 0.25
    with open(f"{out}/model.json", "w") as f:
        json.dump(info, f)
    return out


def _served(model, body: dict | list[dict]) -> list[dict]:
    if isinstance(body, list):
        data = input_fn("".join(json.dumps(b) + "\n" for b in body), JSON_LINES)
    else:
        data = input_fn(json.dumps(body), JSON)
    return predict_fn(data, model)["results"]


def test_every_prediction_path_applies_the_temperature(tiny_model_dir, sharpened_model_dir):
    plain = inference.model_fn(tiny_model_dir)
    plain.temperature = 1.0
    sharp = inference.model_fn(sharpened_model_dir)
    assert sharp.temperature == 0.25
    history = [{"skill_id": plain.skill_ids[i % len(plain.skill_ids)], "correct": i % 3 % 2} for i in range(40)]
    pairs = [(a["skill_id"], a["correct"]) for a in history]
    expected = apply_temperature(inference.run_model(plain, [pairs])[0][0], 0.25)
    expected_all = apply_temperature(inference.run_model(plain, [pairs], window=False)[0][0], 0.25)
    stateless = _served(sharp, {"user_sequence": history})[0]
    stateful = _served(sharp, {"user_sequence": history, "return_state": True})[0]
    batch = _served(sharp, [{"user_id": "u1", "user_sequence": history}])[0]
    for body, want in ((stateless, expected), (stateful, expected_all), (batch, expected)):
        got = np.array([body["mastery"][str(s)] for s in sharp.skill_ids])
        assert np.abs(got - want).max() <= 1e-4  # responses carry 4 decimals
    unscaled = np.array([_served(plain, {"user_sequence": history})[0]["mastery"][str(s)] for s in plain.skill_ids])
    assert np.abs(unscaled - expected).max() > 0.01  # T did change the answer
    prior = _served(sharp, {"user_sequence": []})[0]["mastery"]
    assert prior == _served(plain, {"user_sequence": []})[0]["mastery"]  # base rates are probabilities already


def test_a_model_json_without_temperature_serves_as_before(tiny_model_dir, tmp_path):
    out = str(tmp_path / "model")
    shutil.copytree(tiny_model_dir, out)
    with open(f"{out}/model.json") as f:
        info = json.load(f)
    for key in ("temperature", "calibration"):
        info.pop(key)
    with open(f"{out}/model.json", "w") as f:
        json.dump(info, f)
    assert inference.model_fn(out).temperature == 1.0


def test_evaluation_scores_dkt_as_served_and_draws_the_diagram(sharpened_model_dir, sample_lake, tmp_path, monkeypatch):
    loaded = inference.model_fn(sharpened_model_dir)
    processed = f"{sample_lake}/processed/ednet"
    vocab = SkillVocab(loaded.skill_ids)
    raw = evaluate.evaluate(loaded.model, vocab, processed)
    predicted = []
    predict_windows = evaluate.predict_windows

    def recorded(*args, **kwargs):
        predicted.append(predict_windows(*args, **kwargs))
        return predicted[-1]

    monkeypatch.setattr(evaluate, "predict_windows", recorded)
    png = str(tmp_path / "eval" / "reliability.png")
    report = evaluate.evaluate(loaded.model, vocab, processed, temperature=loaded.temperature, reliability_png=png)
    y, p = predicted[0]
    low, high = report["dkt"].pop("ece_interval")  # the sample's test split has under 100 users
    auc_low, auc_high = report["dkt"].pop("auc_interval")
    assert report["dkt"] == evaluate.metrics(y, apply_temperature(p, 0.25))
    assert low < report["dkt"]["ece"] < high
    assert auc_low < report["dkt"]["auc"] < auc_high
    assert report["dkt"]["auc"] == pytest.approx(raw["dkt"]["auc"])  # a temperature keeps the ranking
    assert report["dkt"]["ece"] != pytest.approx(raw["dkt"]["ece"])
    assert report["base_rate"] == raw["base_rate"] and report["bayes"] == raw["bayes"]
    with open(png, "rb") as f:
        assert f.read(8) == PNG_MAGIC


def test_bootstrap_ece_interval_resamples_users_and_holds_the_ece():
    rng = np.random.default_rng(5)
    users = np.repeat(np.arange(40), 50)
    p = rng.uniform(0.05, 0.95, len(users))
    y = (rng.random(len(users)) < p).astype(float)
    low, high = evaluate.bootstrap_interval(expected_calibration_error, y, p, users, resamples=300)
    assert low < expected_calibration_error(y, p) < high < 0.1
    # users made miscalibrated by +0.3 widen the interval
    shifted = np.clip(p + 0.3 * (users % 2), 0, 1)
    low2, high2 = evaluate.bootstrap_interval(expected_calibration_error, y, shifted, users, resamples=300)
    assert high2 - low2 > high - low and low2 > high


def test_bootstrap_auc_interval_resamples_users_not_answers():
    """Users whose answers move together (each user's own ability) make the AUC a sample of 40 users, not of
    4,000 answers: resampling users gives the wider, honest interval; one answer a user gives the answers' one."""
    rng = np.random.default_rng(6)
    users = np.repeat(np.arange(40), 100)
    ability = rng.normal(0, 1, 40)[users]
    p = 1 / (1 + np.exp(-(ability + rng.normal(0, 1, len(users)))))
    y = (rng.random(len(users)) < 1 / (1 + np.exp(-2 * ability))).astype(float)
    auc = evaluate.metrics(y, p)["auc"]
    low, high = evaluate.bootstrap_interval(evaluate.auc, y, p, users, resamples=300)
    low1, high1 = evaluate.bootstrap_interval(evaluate.auc, y, p, np.arange(len(users)), resamples=300)
    assert low < auc < high and low1 < auc < high1
    assert high - low > 2 * (high1 - low1)
