"""`kt demo` end to end on a small population: what `make demo` runs, scaled down."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    lake = tmp_path / "lake"
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ENDPOINT_URL", "KT_LAKE")}
    out = subprocess.run(
        [sys.executable, "-m", "kt.cli", "demo", "--users", "200", "--skills", "16", "--epochs", "1", "--lake", str(lake)],
        capture_output=True, text=True, env={**env, "PYTHONPATH": os.path.join(REPO, "src")}, timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = out.stdout.split("=== summary ===")[1]
    assert "DKT test AUC" in summary and "oracle" in summary
    assert "embedded, in-memory moto server" in out.stderr
    assert "rerun wrote 0" in summary
    assert (tmp_path / "knowledge_state.png").stat().st_size > 10_000
    assert (lake / "models" / "dkt" / "current.json").exists()
