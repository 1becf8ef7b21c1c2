"""Wall time of the Airflow demo (`python -m kt.airflow_demo`) against `kt demo`, measured in the same run.

    .venv/bin/python bench/airflow_demo.py [--users 2000]

Both run from a fresh temporary directory (their own .kt/), one after the
other; the ratio is what matters on a shared machine, where absolute seconds
move by tens of percent. The Airflow demo's per-DAG seconds are read from its
own output ("airflow dags test <dag>: success (Ns)").
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

BIN = os.path.dirname(sys.executable)


def timed(command: list[str], cwd: str) -> tuple[float, str]:
    """Run a command to completion in cwd; its wall seconds and its output."""
    env = {k: v for k, v in os.environ.items() if k not in ("KT_LAKE", "AWS_ENDPOINT_URL")}
    started = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-kt-demo-") as a, tempfile.TemporaryDirectory(prefix="bench-af-demo-") as b:
        baseline, _ = timed([os.path.join(BIN, "kt"), "demo", "--users", str(args.users)], a)
        code = f"import sys; from kt import airflow_demo; sys.exit(airflow_demo.main(users={args.users}))"
        airflow_seconds, out = timed([sys.executable, "-c", code], b)
    print(f"{'run':<34} {'seconds':>8}")
    print(f"{'kt demo (baseline)':<34} {baseline:>8.0f}")
    print(f"{'kt.airflow_demo':<34} {airflow_seconds:>8.0f}")
    for dag_id, seconds in re.findall(r"airflow dags test (\S+): success \((\d+)s\)", out):
        print(f"{'  airflow dags test ' + dag_id:<34} {int(seconds):>8}")
    print(f"ratio airflow demo / kt demo: {airflow_seconds / baseline:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
