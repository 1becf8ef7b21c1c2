"""`make airflow` operated as a user would: the real Airflow 3 stack, its REST API and its UI in a browser.

One stack for the module (`python -m kt.airflow_stack` in a subprocess, on a
free port, in a temporary home, 200 simulated students):

1. ednet_ingest is triggered through the REST API with the trigger form's
   parameters; the scheduler alone then runs ednet_etl on the raw asset and
   dkt_train on the processed asset (the DAG's default hyperparameters: on 200
   students an epoch takes about a second); kt_mastery_refresh runs for the
   night of 2026-11-25 as its schedule would (logical date and run_after at
   02:00) once it is unpaused, next to the scheduled run unpausing brings.
   Every run must succeed; the lake, the promoted model and kt-mastery are
   checked.
2. Headless chromium (over the DevTools protocol: the UI is a React app) finds
   the five DAGs, opens ednet_ingest's trigger form and sees its parameters,
   and shows the asset chain's graph; screenshots in test-artifacts/.
3. Ctrl-C (SIGINT to the supervisor) stops it: no process of the stack is left
   on the machine; a second start finds the runs and pause states of the first.

The waits poll the REST API for states, each with a deadline.

    .venv/bin/python -m pytest -q tests/test_airflow_stack.py
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cdp import Browser, require_chromium
from kt import artifact, aws, dynamo, lake, pipeline, refresh, runtime
from kt.airflow_stack import ASSET_CHAIN, DAG_IDS, REFRESH_DATE, Api
from kt.aws import free_port
from kt.config import Settings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
USERS = 200
READY_S = 240  # a cold start on a busy 2-core machine; ~20 s when idle
CHAIN_S = 420  # ingest + Spark ETL + training + deployment through the scheduler; ~2.5 min when idle
REFRESH_S = 180
NIGHT = f"{REFRESH_DATE}T02:00:00Z"  # kt_mastery_refresh's cron tick of that night
TERMINAL = {"success", "failed"}


class Running:
    """The stack's supervisor process, its home and REST API, and every process of its tree seen so far."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.log = home / "supervisor.log"
        self.seen: set[tuple[int, float]] = set()  # (pid, create_time): a reused pid is another process
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("AWS_ENDPOINT_URL", "KT_LAKE", "AIRFLOW_HOME")}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
        offset = self.log.stat().st_size if self.log.exists() else 0  # a restart appends to the same log
        with open(self.log, "a") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kt.airflow_stack", "--home", str(self.home), "--port", str(self.port),
                 "--users", str(USERS)],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.api = Api(f"http://127.0.0.1:{self.port}")
        self.poll(lambda: "(ready in" in self.output()[offset:], READY_S, "the stack's ready banner")
        self.state = json.loads((self.home / "stack.json").read_text())
        self.settings = Settings(runtime="local", lake=self.state["lake"], aws_endpoint_url=self.state["moto"])

    def output(self) -> str:
        return self.log.read_bytes().decode(errors="replace")

    def record_tree(self) -> None:
        import psutil

        try:
            for p in psutil.Process(self.process.pid).children(recursive=True):
                self.seen.add((p.pid, p.create_time()))
        except psutil.Error:
            pass

    def poll(self, condition, seconds: float, what: str):
        """Check a state until it holds, with a deadline; the stack must stay up meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            self.record_tree()
            if self.process.poll() is not None:
                pytest.fail(f"the stack exited ({self.process.returncode}) waiting for {what}:\n"
                            f"{self.output()[-3000:]}")
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {seconds:.0f}s; supervisor output:\n{self.output()[-3000:]}")
            time.sleep(2)  # polling Airflow's state, not waiting for it

    def interrupt(self) -> int:
        """Ctrl-C, as in the terminal; the supervisor's exit code."""
        self.record_tree()
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=120)

    def runs_settled(self, dag_ids: tuple[str, ...]) -> dict[str, list[dict]] | None:
        """Every run of these DAGs, once each has one and none is queued or running."""
        runs = {d: self.api.dag_runs(d) for d in dag_ids}
        if all(runs[d] and all(r["state"] in TERMINAL for r in runs[d]) for d in dag_ids):
            return runs
        return None


def leftovers(running: Running) -> list[str]:
    """Processes of the stack still on the machine: seen in its tree, or working in its Airflow home."""
    import psutil

    left = []
    for pid, created in running.seen:
        try:
            p = psutil.Process(pid)
            if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid} {' '.join(p.cmdline())[:120]}")
        except psutil.Error:
            pass
    airflow_home = str(running.home / "airflow")
    for p in psutil.process_iter():
        try:
            if p.environ().get("AIRFLOW_HOME") == airflow_home and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.Error:
            pass
    return left


@pytest.fixture(scope="module")
def stack():
    home = Path(tempfile.mkdtemp(prefix="kt-airflow-stack-"))
    running = Running(home)
    try:
        running.start()
        yield running
    finally:
        if running.process is not None and running.process.poll() is None:
            running.interrupt()
        shutil.rmtree(home, ignore_errors=True)


def test_an_ingest_trigger_runs_the_asset_chain_and_the_nightly_refresh_fills_kt_mastery(stack):
    api = stack.api
    assert api.import_errors() == []
    paused = {d["dag_id"]: d["is_paused"] for d in api.get("/dags")["dags"]}
    assert paused == {d: d not in ASSET_CHAIN for d in DAG_IDS}
    source = str(stack.home / "source" / "raw" / "ednet")
    triggered = api.trigger("ednet_ingest", {"source": source, "format": "riiid", "consolidate_kt1": True})
    assert triggered["state"] == "queued" and triggered["conf"]["source"] == source

    runs = stack.poll(lambda: stack.runs_settled(ASSET_CHAIN), CHAIN_S, "settled runs of the asset chain")
    assert [r["run_type"] for r in runs["ednet_ingest"]] == ["manual"]
    assert [r["run_type"] for r in runs["ednet_etl"]] == ["asset_triggered"]  # the scheduler, on the raw asset
    assert [r["run_type"] for r in runs["dkt_train"]] == ["asset_triggered"]  # and on the processed one
    for dag_id in ASSET_CHAIN:
        run = runs[dag_id][0]
        states = api.task_states(dag_id, run["dag_run_id"])
        assert run["state"] == "success" and set(states.values()) == {"success"}, (dag_id, states)

    manifest = runtime.check_manifest(stack.settings)  # what ednet_etl checked: every input row accounted for
    assert manifest["rows_in"] == manifest["rows_out"] + manifest["lectures"] + manifest["quarantined"] > 0
    current = pipeline.current_model(stack.settings)  # promoted by dkt_train's last task
    assert current is not None and lake.exists(current["model_data_url"])
    with tempfile.TemporaryDirectory() as tmp:
        model_version = artifact.read_info(artifact.unpack(current["model_data_url"], tmp))["model_version"]

    # The night of REFRESH_DATE as the schedule runs it; unpausing also brings today's scheduled run,
    # which runs after it (max_active_runs=1, ordered by run_after) and finds nobody new.
    night = api.trigger("kt_mastery_refresh", logical_date=NIGHT, run_after=NIGHT)
    api.set_paused("kt_mastery_refresh", False)
    refreshes = stack.poll(lambda: stack.runs_settled(("kt_mastery_refresh",)), REFRESH_S,
                           "settled kt_mastery_refresh runs")["kt_mastery_refresh"]
    assert refreshes[0]["dag_run_id"] == night["dag_run_id"]
    assert all(r["state"] == "success" for r in refreshes), refreshes
    assert set(api.task_states("kt_mastery_refresh", night["dag_run_id"]).values()) == {"success"}

    tutor_users = {a["user_id"] for a in refresh.read_answer_events(stack.settings.lake)}
    rows = dynamo.scan_all(aws.client(stack.settings, "dynamodb"), stack.settings.mastery_table)
    assert tutor_users and {r["user_id"] for r in rows} == tutor_users
    assert {(r["source"], r["model_version"]) for r in rows} == {("dkt", model_version)}
    assert all(r["as_of"] < REFRESH_DATE and 0 <= float(r["predicted_accuracy"]) <= 1 for r in rows)


def test_the_ui_shows_the_five_dags_the_trigger_form_and_the_asset_chain(stack, tmp_path):
    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    url = f"http://127.0.0.1:{stack.port}"
    with Browser(str(tmp_path / "profile"), width=1400, height=640) as page:
        page.goto(f"{url}/dags")
        page.wait_for(f"document.body && {json.dumps(list(DAG_IDS))}.every(d => document.body.innerText.includes(d))",
                      "the five DAGs in the list")
        assert "5 Dags" in page.text()
        # The list as a table (the UI keeps that choice in localStorage, as a click on its toggle would)
        page.evaluate("localStorage.setItem('dags_list_display', JSON.stringify('table'))")
        page.goto(f"{url}/dags")
        page.wait_for(f"(() => {{ const t = document.querySelector('table tbody');"
                      f" return t && {json.dumps(list(DAG_IDS))}.every(d => t.innerText.includes(d)); }})()",
                      "the five DAGs in the table")
        page.screenshot(str(ARTIFACTS / "airflow_dags.png"))

        page.goto(f"{url}/dags/ednet_ingest")
        page.click_text("button", "Trigger")
        page.wait_for("document.body.innerText.includes('Consolidate KT1')", "ednet_ingest's trigger form")
        form = page.text().split("Trigger Dag - ednet_ingest", 1)[1]
        for title, description in [("Source", "local path, http(s):// URL or s3:// URI"),
                                   ("Format", "riiid: train.csv + questions.csv"),
                                   ("Consolidate KT1", "KT1 user files -> ~128 MB CSV shards")]:
            assert title in form and description in form, (title, form)
        assert "riiid\n" in form.split("Format", 1)[1]  # the default, selected
        page.screenshot(str(ARTIFACTS / "airflow_trigger_form.png"))

        # ednet_etl's graph with all DAG dependencies is the asset chain (graph view and "All Dag
        # Dependencies" are kept in localStorage, as the UI's own toggles keep them).
        page.evaluate("localStorage.setItem('default_dag_view', JSON.stringify('graph'));"
                      "localStorage.setItem('dependencies-ednet_etl', JSON.stringify('all'))")
        page.goto(f"{url}/dags/ednet_etl")
        assets = f"file://{stack.settings.lake}"
        chain = ["ednet_ingest", f"{assets}/raw/ednet", "ednet_etl", f"{assets}/processed/ednet", "dkt_train"]
        nodes = page.wait_for(
            f"(() => {{ const n = [...document.querySelectorAll('.react-flow__node')].map(e => e.innerText);"
            f" return {json.dumps(chain)}.every(c => n.some(t => t.startsWith(c))) && n; }})()",
            "the asset chain in ednet_etl's graph")
        assert any(n.startswith("kt_drift_check") for n in nodes)  # drift also triggers dkt_train
        page.click("button[aria-label='Collapse Details Panel']")
        page.click("button[aria-label='Fit View']")
        # the minimap is re-mounted after the panel collapses: wait for it rather than assume it is there
        page.wait_for("(() => { const m = document.querySelector('.react-flow__minimap');"
                      " if (m) m.style.display = 'none'; return !!m; })()", "the graph's minimap, hidden")
        page.wait_for("(() => { const r = [...document.querySelectorAll('.react-flow__node')]"
                      ".map(e => e.getBoundingClientRect());"
                      " return Math.max(...r.map(b => b.right)) - Math.min(...r.map(b => b.left)) > 1000; })()",
                      "the graph fitted to the whole width")
        page.screenshot(str(ARTIFACTS / "airflow_asset_chain.png"), ".react-flow__node")


def test_ctrl_c_leaves_no_process_and_the_next_start_keeps_the_state(stack):
    before = {d: len(stack.api.dag_runs(d)) for d in DAG_IDS}
    paused = {d["dag_id"]: d["is_paused"] for d in stack.api.get("/dags")["dags"]}
    assert len(stack.seen) >= 4  # the four components at least
    assert stack.interrupt() == 0, stack.output()[-3000:]
    assert "stopped" in stack.output()
    assert leftovers(stack) == []

    stack.start()  # same home: same metadata DB and lake
    assert {d: len(stack.api.dag_runs(d)) for d in DAG_IDS} == before
    assert {d["dag_id"]: d["is_paused"] for d in stack.api.get("/dags")["dags"]} == paused
    assert stack.interrupt() == 0
    assert leftovers(stack) == []


SUPERVISOR_STAND_IN = """
import os, subprocess, sys, time
from kt.airflow_stack import _PDEATHSIG_SHIM
component = [sys.executable, "-c", "import time; time.sleep(600)  # a component"]
p = subprocess.Popen([sys.executable, "-c", _PDEATHSIG_SHIM, str(os.getpid()), *component], start_new_session=True)
print(p.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_components_end_when_the_supervisor_is_killed_outright():
    """kill -9 of the supervisor runs no cleanup of its own: the kernel's parent-death signal ends each component."""
    import psutil

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISOR_STAND_IN], env=env, stdout=subprocess.PIPE,
                                  text=True)
    component = psutil.Process(int(supervisor.stdout.readline()))
    try:

        def running_component() -> bool:  # the shim has exec'd the component (its own command line, alone)
            return component.cmdline()[1:] == ["-c", "import time; time.sleep(600)  # a component"]

        deadline = time.monotonic() + 30
        while not running_component():
            assert time.monotonic() < deadline, "the shim never started the component"
            time.sleep(0.1)  # polling the process's command line
        supervisor.kill()
        supervisor.wait()

        def gone() -> bool:
            try:
                return component.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        deadline = time.monotonic() + 30
        while not gone():
            assert time.monotonic() < deadline, "the component outlived its supervisor"
            time.sleep(0.1)  # polling the process's state
    finally:
        supervisor.kill()
        supervisor.wait()
        with contextlib.suppress(psutil.Error):
            component.kill()  # only when the test failed
