"""The asset chain through Airflow's scheduler (`make airflow`) against `make demo`'s `airflow dags test`, one run.

    .venv/bin/python bench/airflow_stack.py [--users 2000]

Both on the same simulated students, one after the other, each in a fresh
temporary directory:

- `make demo` (`kt.airflow_demo`): the seconds it prints for `airflow dags
  test` of ednet_ingest, ednet_etl, dkt_train and the first
  kt_mastery_refresh, summed: the same steps with no scheduler in between;
- `make airflow` (`kt.airflow_stack`): once it is up, from the REST trigger of
  ednet_ingest to the promoted model (`current.json`, dkt_train's run
  succeeded: ednet_etl and dkt_train started by the scheduler on the assets),
  and to the refreshed kt-mastery (kt_mastery_refresh for 2026-11-25
  triggered as soon as the model is promoted, and its run succeeded).

The difference is what the scheduler, the executor and the task processes
cost (and what running each task in its own process buys: the DAG runs of
`airflow dags test` share one warm process). Figures in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from kt import pipeline
from kt.airflow_stack import REFRESH_DATE, Api
from kt.aws import free_port
from kt.config import Settings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NIGHT = f"{REFRESH_DATE}T02:00:00Z"
STEPS = ("ednet_ingest", "ednet_etl", "dkt_train", "kt_mastery_refresh")


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KT_LAKE", "AWS_ENDPOINT_URL", "AIRFLOW_HOME")}
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(REPO, "src"), env.get("PYTHONPATH", "")])
    return env


def demo_seconds(users: int, cwd: str) -> dict[str, int]:
    """`make demo`'s own seconds per `airflow dags test` (the first refresh only)."""
    code = f"import sys; from kt import airflow_demo; sys.exit(airflow_demo.main(users={users}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=environment(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the demo failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    seconds: dict[str, int] = {}
    for dag_id, s in re.findall(r"airflow dags test (\S+): success \((\d+)s\)", done.stdout):
        seconds.setdefault(dag_id, int(s))
    return seconds


def until(condition, seconds: float, what: str, stack: subprocess.Popen):
    deadline = time.monotonic() + seconds
    while True:
        if stack.poll() is not None:
            raise SystemExit(f"the stack exited waiting for {what}")
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"no {what} after {seconds:.0f}s")
        time.sleep(1)  # polling the REST API's states


def stack_seconds(users: int, home: str) -> tuple[float, float, float]:
    """(start-up, trigger -> promoted model, trigger -> refreshed kt-mastery) through the scheduler."""
    port = free_port()
    log = open(os.path.join(home, "supervisor.log"), "w")
    started = time.monotonic()
    stack = subprocess.Popen([sys.executable, "-m", "kt.airflow_stack", "--home", home, "--port", str(port),
                              "--users", str(users)], env=environment(), stdout=log, stderr=subprocess.STDOUT)
    try:
        until(lambda: "(ready in" in open(log.name).read(), 600, "ready stack", stack)
        up = time.monotonic() - started
        state = json.load(open(os.path.join(home, "stack.json")))
        settings = Settings(runtime="local", lake=state["lake"], aws_endpoint_url=state["moto"])
        api = Api(f"http://127.0.0.1:{port}")

        def succeeded(dag_id: str, run_id: str | None = None) -> bool:
            runs = [r for r in api.dag_runs(dag_id) if run_id in (None, r["dag_run_id"])]
            if any(r["state"] == "failed" for r in runs):
                raise SystemExit(f"{dag_id} failed")
            return bool(runs) and all(r["state"] == "success" for r in runs)

        source = os.path.join(home, "source", "raw", "ednet")
        t0 = time.monotonic()
        api.trigger("ednet_ingest", {"source": source, "format": "riiid", "consolidate_kt1": True})
        until(lambda: succeeded("dkt_train") and pipeline.current_model(settings), 1800, "promoted model", stack)
        model = time.monotonic() - t0
        night = api.trigger("kt_mastery_refresh", logical_date=NIGHT, run_after=NIGHT)
        api.set_paused("kt_mastery_refresh", False)
        until(lambda: succeeded("kt_mastery_refresh", night["dag_run_id"]), 900, "refreshed kt-mastery", stack)
        mastery = time.monotonic() - t0
    finally:
        stack.send_signal(signal.SIGINT)
        stack.wait(timeout=120)
    return up, model, mastery


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as a, tempfile.TemporaryDirectory(prefix="bench-af-") as b:
        demo = demo_seconds(args.users, a)
        up, model, mastery = stack_seconds(args.users, b)
    demo_model = sum(demo[d] for d in STEPS[:3])
    demo_mastery = demo_model + demo[STEPS[3]]
    print(f"{args.users} students; load average at the end {os.getloadavg()[0]:.1f}")
    print(f"{'':44} {'make demo':>10} {'make airflow':>13} {'ratio':>6}")
    print(f"{'trigger of ednet_ingest -> promoted model':44} {demo_model:>9}s {model:>12.0f}s "
          f"{model / demo_model:>6.2f}")
    print(f"{'trigger of ednet_ingest -> kt-mastery':44} {demo_mastery:>9}s {mastery:>12.0f}s "
          f"{mastery / demo_mastery:>6.2f}")
    print(f"make demo per DAG: {demo}; make airflow start-up {up:.0f}s (not counted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
