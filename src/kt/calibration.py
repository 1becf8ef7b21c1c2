"""Calibration: the tutor reads mastery as a probability ("78% mastery"), so it has to be one.

- ``expected_calibration_error``: the one ECE of the project (15 equal-width bins).
- ``fit_temperature``: temperature scaling (Guo et al. 2017), one scalar T that
  divides the model's logits, fitted on the valid split by minimising log loss.
  It changes no ranking (AUC stays), only how sure the model says it is.
- ``calibrate``: what training stores in model.json: T when it lowers the valid
  ECE, else 1.0 (the model is left as it is).
- ``reliability_diagram``: observed accuracy against predicted probability per
  bin, one line per method, as a PNG.

Imports only numpy at the top: model.tar.gz bundles this module for
``kt.inference`` (which serves ``apply_temperature``), and neither the serving
nor the training image needs scipy or matplotlib for that (each is imported
where it is used).
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15
TEMPERATURE_BOUNDS = (0.05, 20.0)  # far beyond any useful T; keeps the search finite
EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] before taking logits


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Weighted mean |accuracy - confidence| over equal-width probability bins."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    which = np.clip(np.digitize(p, np.linspace(0.0, 1.0, bins + 1)[1:-1]), 0, bins - 1)
    # per bin, answers * |accuracy - confidence| = |sum of y - sum of p|
    gap = np.bincount(which, weights=y, minlength=bins) - np.bincount(which, weights=p, minlength=bins)
    return float(np.abs(gap).sum() / max(1, len(y)))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(p: np.ndarray, temperature: float) -> np.ndarray:
    """sigmoid(logit(p) / T); T = 1 returns p unchanged."""
    if temperature == 1.0:
        return np.asarray(p, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-logit(p) / temperature))


def _log_loss(y: np.ndarray, z: np.ndarray) -> float:
    """Mean BCE of logits z against 0/1 labels y, computed stably."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(y: np.ndarray, p: np.ndarray) -> float:
    """The T in TEMPERATURE_BOUNDS that minimises the log loss of sigmoid(logit(p) / T) on (y, p)."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y, dtype=np.float64)
    z = logit(p)
    result = minimize_scalar(lambda t: _log_loss(y, z / t), bounds=TEMPERATURE_BOUNDS, method="bounded",
                             options={"xatol": 1e-4})
    return float(result.x)


def calibrate(y: np.ndarray, p: np.ndarray) -> dict:
    """model.json's "temperature" and "calibration": T fitted on (y, p), kept only if it lowers the ECE."""
    fitted = fit_temperature(y, p)
    before = expected_calibration_error(y, p)
    after = expected_calibration_error(y, apply_temperature(p, fitted))
    return {
        "temperature": fitted if after < before else 1.0,
        "calibration": {"method": "temperature", "fitted_temperature": fitted, "valid_ece_before": before,
                        "valid_ece_after": after, "valid_answers": int(len(y))},
    }


def reliability_curve(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per non-empty bin (the ECE's bins): mean predicted probability, observed accuracy, answers."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    which = np.clip(np.digitize(p, np.linspace(0.0, 1.0, bins + 1)[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    seen = counts > 0
    mean_p = np.bincount(which, weights=p, minlength=bins)[seen] / counts[seen]
    accuracy = np.bincount(which, weights=y, minlength=bins)[seen] / counts[seen]
    return mean_p, accuracy, counts[seen]


def reliability_diagram(series: dict[str, tuple[np.ndarray, np.ndarray]], out_uri: str, title: str) -> str:
    """One line per method (name -> (y, p)) against the diagonal, answers per bin below; PNG at a lake URI."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here or on servers
    import matplotlib.pyplot as plt

    from kt import lake

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 7.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, (y, p) in series.items():
        mean_p, accuracy, counts = reliability_curve(y, p)
        line, = top.plot(mean_p, accuracy, marker="o", markersize=4, linewidth=1.5,
                         label=f"{name} (ECE {expected_calibration_error(y, p):.3f})")
        bottom.plot(mean_p, counts, marker="o", markersize=3, linewidth=1, color=line.get_color())
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("observed accuracy")
    top.set_title(title)
    top.legend(loc="upper left", fontsize=8)
    bottom.set_yscale("log")
    bottom.set_xlabel(f"predicted P(correct), {ECE_BINS} equal-width bins")
    bottom.set_ylabel("answers")
    fig.tight_layout()
    with lake.open_write(out_uri) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return out_uri
