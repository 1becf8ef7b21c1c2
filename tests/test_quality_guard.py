"""The quality guard: the default model, trained on real data, must keep its measured test AUC and calibration.

STATICS 2011 (the DKVMN paper's files, skill = the question's first tag) on the contract split
(CRC32(user_id) mod 10: 0-7 train, 8 valid, 9 test), through the reference ETL, ``kt.train.train`` with the
default hyperparameters (2 torch threads, as CI has) and ``kt.evaluate.evaluate`` as served (warm context,
model.json's temperature). The floor sits 0.01 under the figure measured when the guard was set
(MEASURED_AUC); the ECE ceiling is the issue's 0.03. A change that costs the model 0.01 AUC on real
students fails here, not only in ``bench/quality.py``. The data is read in place (research licence).
"""

from __future__ import annotations

import os

import pytest

from kt import etl, evaluate, inference
from kt.config import TrainingPaths
from kt.data import SkillVocab
from kt.train import Hyperparameters, train
from kt_testing import SHARED_DATA

STATICS = os.path.join(SHARED_DATA, "statics2011_dkvmn", "riiid")
# this test's own figures, 2026-12-02, twice the same: AUC 0.7684, ECE 0.0234 (bootstrap 95% [0.013, 0.038]),
# 18,638 answers; the test (ETL, 20 epochs, evaluation) took 112 s on the 2 cores at load average 4-5 (another
# training beside it) and 158 s at 6-8: no idle machine was to be had to measure its budget (~120 s idle)
MEASURED_AUC = 0.7684
AUC_FLOOR = MEASURED_AUC - 0.01
ECE_CEILING = 0.03

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.isdir(STATICS), reason=f"no real data at {SHARED_DATA}")]


def test_the_default_model_keeps_its_auc_and_calibration_on_statics(tmp_path):
    processed = str(tmp_path / "processed")
    etl.run_etl(STATICS, processed, fmt="riiid", skill_mappings=str(tmp_path / "no-skill-mappings.json"),
                progress=False)  # absent: the seed's mapping, skill = first tag
    paths = TrainingPaths(train_channel=processed, model_dir=str(tmp_path / "model"),
                          checkpoint_dir=str(tmp_path / "checkpoints"), output_dir=str(tmp_path / "output"),
                          job_name="quality-guard")
    train(Hyperparameters(threads=2), paths)
    loaded = inference.model_fn(paths.model_dir)
    report = evaluate.evaluate(loaded.model, SkillVocab(loaded.skill_ids), processed, temperature=loaded.temperature)
    dkt = report["dkt"]
    print(f"quality guard: test AUC {dkt['auc']:.4f} (floor {AUC_FLOOR:.4f}), ECE {dkt['ece']:.4f} "
          f"{dkt.get('ece_interval')} (ceiling {ECE_CEILING}), {dkt['n']} answers")
    assert dkt["auc"] >= AUC_FLOOR
    assert dkt["ece"] <= ECE_CEILING
    assert dkt["auc"] > report["bayes"]["auc"] + 0.1  # and the model still beats the baselines by far
