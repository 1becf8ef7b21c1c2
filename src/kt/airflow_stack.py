"""`make airflow`: the real Airflow 3 on this machine, no Docker: UI, scheduler, dag-processor, triggerer.

    python -m kt.airflow_stack [--home .kt/airflow-stack] [--port 8080]     # Ctrl-C stops it

One supervising process (this module) keeps the stack up until Ctrl-C:

- a moto server in this process (DynamoDB, CloudWatch, SNS for the local
  runtime's DAGs), unless AWS_ENDPOINT_URL names one already;
- `airflow db migrate` into a SQLite metadata DB under the home, then the
  four components as child processes: `api-server` (UI and REST API on
  127.0.0.1 only: the simple auth manager makes every visitor an admin),
  `scheduler` (LocalExecutor: Airflow 3 runs it on SQLite, as `airflow
  standalone` does), `dag-processor` and `triggerer`, with this repo's dags/
  and plugins/ and KT_RUNTIME=local;
- simulated students written once as the "download" to ingest (the path is
  printed), their tutor answers put in the lake as `make demo` does.

Each component runs in a process group of its own, so Ctrl-C reaches this
process only; it stops them in order: SIGTERM to every group, SIGKILL after
a grace period (a second Ctrl-C skips it) to whatever of the tree is left
(this process is a child subreaper on Linux, so even the task processes that
left their parent are found). The home keeps the metadata DB, the logs and
the lake for the next start; moto is in memory, and `kt_mastery_refresh`
reloads `kt-history` and `kt-mastery` from the lake, so nothing is lost.

Layout of the home: `airflow/` (AIRFLOW_HOME: airflow.cfg, airflow.db, task
logs), `lake/`, `source/` (the simulated download), `components/<name>.log`,
and `stack.json` (URLs and pids while it runs: tests and bench/ read it).
Airflow is imported only by the child processes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from kt import runtime
from kt.config import load_settings

log = logging.getLogger(__name__)

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
HEALTH_KEYS = ("metadatabase", "scheduler", "dag_processor", "triggerer")  # GET /api/v2/monitor/health
DAG_IDS = ("dkt_train", "ednet_etl", "ednet_ingest", "kt_drift_check", "kt_mastery_refresh")
# Unpaused on the first start: one trigger of ednet_ingest then runs the chain through the assets. The
# two nightly DAGs stay paused until the operator unpauses them: without a promoted model they would fail.
ASSET_CHAIN = ("ednet_ingest", "ednet_etl", "dkt_train")
REFRESH_DATE = "2026-11-25"  # the night after the simulated tutor answers (= kt.demo.RUN_DATE)
DEFAULT_HOME = ".kt/airflow-stack"
DEFAULT_PORT = 8080
STOP_GRACE_S = 20.0
READY_TIMEOUT_S = 300.0
# Started in every component's process before Airflow: SIGTERM when the supervisor dies, even by SIGKILL
# (Linux; PR_SET_PDEATHSIG survives the exec). A shim, not preexec_fn: the moto server's threads run already.
_PDEATHSIG_SHIM = (
    "import ctypes, os, signal, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "    os.getppid() == int(sys.argv[1]) or os._exit(1)  # the supervisor died before the prctl\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the stack keeps its state."""

    home: str
    lake: str

    @property
    def airflow_home(self) -> str:
        return os.path.join(self.home, "airflow")

    @property
    def source(self) -> str:
        return os.path.join(self.home, "source")

    @property
    def components(self) -> str:
        return os.path.join(self.home, "components")

    @property
    def state_file(self) -> str:
        return os.path.join(self.home, "stack.json")

    @property
    def chain_unpaused(self) -> str:
        return os.path.join(self.airflow_home, ".asset-chain-unpaused")


def layout(home: str = DEFAULT_HOME, lake: str | None = None) -> Layout:
    home = os.path.abspath(home)
    return Layout(home, os.path.abspath(lake or os.path.join(home, "lake")))


def stack_env(where: Layout, moto_url: str, port: int, log_ports: tuple[int, int]) -> dict[str, str]:
    """The environment of every component: `make demo`'s Airflow environment plus the long-running parts."""
    from kt import airflow_demo

    settings = dataclasses.replace(load_settings(), runtime="local", lake=where.lake, aws_endpoint_url=moto_url)
    env = dict(os.environ)
    env.update(airflow_demo.airflow_env(settings, where.airflow_home))
    src = os.path.join(runtime.REPO, "src")  # this checkout's kt first, whatever the venv's editable install says
    env.update({
        "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",  # local only: no login (bound to 127.0.0.1)
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_ports[0]),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(log_ports[1]),
    })
    return env


def prepare_source(where: Layout, users: int, skills: int, seed: int = 7) -> str:
    """Simulated students written once as the download to ingest; their tutor answers into the lake. Its path."""
    from kt import sample

    if not os.path.isdir(where.source):
        partial = where.source + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        counts = sample.generate(partial, users=users, skills=skills, seed=seed)
        os.replace(partial, where.source)
        print(f"simulated {users} students on {skills} skills: {counts['answers']:,} answers -> {where.source}")
    for part in ("events", "sample"):  # the tutor's answers and the simulator's truth are not in the download
        if not os.path.exists(os.path.join(where.lake, part)):
            shutil.copytree(os.path.join(where.source, part), os.path.join(where.lake, part))
    return os.path.join(where.source, "raw", "ednet")


class Api:
    """Airflow's REST API (v2) as the UI calls it; the simple auth manager's all-admins mode needs no token."""

    def __init__(self, url: str) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url + "/api/v2", timeout=30)

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def health(self) -> dict[str, str]:
        """Component -> status ("healthy" or not), empty while the api-server does not answer."""
        import httpx

        try:
            body = self.get("/monitor/health")
        except (httpx.HTTPError, ValueError):
            return {}
        return {k: (body.get(k) or {}).get("status", "unknown") for k in HEALTH_KEYS}

    def dag_ids(self) -> list[str]:
        return sorted(d["dag_id"] for d in self.get("/dags", limit=100)["dags"])

    def import_errors(self) -> list[dict]:
        return self.get("/importErrors")["import_errors"]

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.http.patch(f"/dags/{dag_id}", json={"is_paused": paused}).raise_for_status()

    def trigger(self, dag_id: str, conf: dict | None = None, logical_date: str | None = None,
                run_after: str | None = None) -> dict:
        """POST dagRuns, as the trigger form does; a scheduled night has run_after = logical_date."""
        body: dict[str, Any] = {"logical_date": logical_date, "conf": conf or {}}
        if run_after:
            body["run_after"] = run_after
        response = self.http.post(f"/dags/{dag_id}/dagRuns", json=body)
        response.raise_for_status()
        return response.json()

    def dag_runs(self, dag_id: str) -> list[dict]:
        return self.get(f"/dags/{dag_id}/dagRuns", limit=100, order_by="run_after")["dag_runs"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        body = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)
        return {ti["task_id"]: ti["state"] for ti in body["task_instances"]}


@dataclasses.dataclass
class Component:
    name: str
    process: subprocess.Popen
    log_path: str


class Stack:
    """The supervisor: moto, the metadata DB, the four components; `stop` leaves no process behind."""

    def __init__(self, where: Layout, port: int = DEFAULT_PORT) -> None:
        self.where = where
        self.port = port
        self.url = f"http://localhost:{port}"  # what the user opens; the supervisor's own calls go to 127.0.0.1
        self.api = Api(f"http://127.0.0.1:{port}")
        self.components: list[Component] = []
        self.moto_url = ""
        self._moto: Any = None
        self._skip_grace = threading.Event()

    def start(self, ready_timeout: float = READY_TIMEOUT_S) -> None:
        from kt.aws import free_port

        _check_free(self.port)
        _become_subreaper()
        for path in (self.where.airflow_home, self.where.components, self.where.lake):
            os.makedirs(path, exist_ok=True)
        self.moto_url = os.environ.get("AWS_ENDPOINT_URL") or self._start_moto(free_port())
        self.env = stack_env(self.where, self.moto_url, self.port, (free_port(), free_port()))
        migrate = self._run_once(["db", "migrate"], "db-migrate")
        if migrate.returncode != 0:
            log_path = os.path.join(self.where.components, "db-migrate.log")
            raise SystemExit(f"`airflow db migrate` failed: see {log_path}")
        for name in COMPONENTS:
            self.components.append(self._spawn(name))
        self._write_state()
        self.wait_ready(ready_timeout)
        if not os.path.exists(self.where.chain_unpaused):
            for dag_id in ASSET_CHAIN:
                self.api.set_paused(dag_id, False)
            open(self.where.chain_unpaused, "w").close()

    def _start_moto(self, port: int) -> str:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._moto.start()
        return f"http://127.0.0.1:{port}"

    def _airflow(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "airflow", *args]

    def _run_once(self, args: list[str], name: str) -> subprocess.CompletedProcess:
        with open(os.path.join(self.where.components, f"{name}.log"), "w") as out:
            return subprocess.run(self._airflow(*args), env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def _spawn(self, name: str) -> Component:
        path = os.path.join(self.where.components, f"{name}.log")
        with open(path, "a") as out:
            process = subprocess.Popen(
                [sys.executable, "-c", _PDEATHSIG_SHIM, str(os.getpid()), *self._airflow(name)],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: Ctrl-C reaches the supervisor only
            )
        return Component(name, process, path)

    def _write_state(self) -> None:
        state = {"ui": self.url, "api": f"{self.url}/api/v2", "moto": self.moto_url, "lake": self.where.lake,
                 "airflow_home": self.where.airflow_home, "supervisor": os.getpid(),
                 "components": {c.name: c.process.pid for c in self.components}}
        with open(self.where.state_file + ".tmp", "w") as f:
            json.dump(state, f, indent=2)
        os.replace(self.where.state_file + ".tmp", self.where.state_file)

    def wait_ready(self, timeout: float) -> None:
        """Until every component is healthy and the five DAGs are parsed; a component that exits fails it."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            health = self.api.health()
            if health and all(s == "healthy" for s in health.values()) and set(DAG_IDS) <= set(self.api.dag_ids()):
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"Airflow not ready after {timeout:.0f}s (health {health}); logs in "
                                 f"{self.where.components}")
            time.sleep(1)  # polling the health endpoint

    def check_alive(self) -> None:
        for c in self.components:
            code = c.process.poll()
            if code is not None:
                with open(c.log_path, errors="replace") as f:
                    tail = "".join(f.readlines()[-30:])
                raise SystemExit(f"airflow {c.name} exited with code {code}; last lines of {c.log_path}:\n{tail}")

    def reap(self) -> None:
        """Collect the ended orphans this subreaper inherits (a task's JVM, say); components are Popen's."""
        import psutil

        components = {c.process.pid for c in self.components}
        for p in psutil.Process().children():
            with contextlib.suppress(ChildProcessError, psutil.Error):
                if p.pid not in components and p.status() == psutil.STATUS_ZOMBIE:
                    os.waitpid(p.pid, os.WNOHANG)

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM to every component's group, SIGKILL to whatever of the tree is left after the grace period."""
        import psutil

        me = psutil.Process()
        tree = set(me.children(recursive=True))
        for c in self.components:
            _signal_group(c.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for c in self.components:
            while c.process.poll() is None and time.monotonic() < deadline and not self._skip_grace.is_set():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.process.wait(timeout=0.2)
        # Whatever is left of the tree, orphans included (reparented to this subreaper): killed and reaped.
        left = [p for p in tree | set(me.children(recursive=True)) if _alive(p)]
        for c in self.components:
            if c.process.poll() is None:
                print(f"airflow {c.name} still running after SIGTERM: killed", flush=True)
        for c in self.components:
            _signal_group(c.process.pid, signal.SIGKILL)
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(left, timeout=10)
        for c in self.components:
            c.process.wait()
        _reap_orphans()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.where.state_file)

    def skip_grace(self) -> None:
        self._skip_grace.set()


def _alive(p: Any) -> bool:
    import psutil

    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _become_subreaper() -> None:
    """Linux: orphaned descendants are reparented to this process (not init), so `stop` still finds them."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER


def _reap_orphans() -> None:
    """Collect exited orphans this subreaper inherited (they are no child Popen knows about)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _check_free(port: int) -> None:
    import socket

    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise SystemExit(f"port {port} is in use (another `make airflow`?): stop it, or pass --port")


def banner(stack: Stack, source: str) -> str:
    """Where to click."""
    w = stack.where
    return "\n".join([
        "",
        "Airflow is up: api-server, scheduler (LocalExecutor), dag-processor, triggerer; KT_RUNTIME=local",
        f"  UI        {stack.url}   (no login: everyone is admin, so it listens on 127.0.0.1 only)",
        "  1. Dags > ednet_ingest > Trigger, with",
        f"       source  {source}",
        "       format  riiid",
        "     The raw asset then runs ednet_etl, the processed asset dkt_train (those three are unpaused).",
        f"  2. Dags > kt_mastery_refresh > Trigger, logical date {REFRESH_DATE} 02:00 UTC, 'Unpause on trigger':",
        "     the simulated tutor answers into kt-mastery. It and kt_drift_check stay paused until then:",
        "     their nightly runs need the model dkt_train promotes.",
        f"  lake      {w.lake}",
        f"  moto      {stack.moto_url}   (DynamoDB kt-mastery/kt-history, CloudWatch, SNS; in memory)",
        f"  metadata  {os.path.join(w.airflow_home, 'airflow.db')} (SQLite)",
        f"  logs      tasks {os.path.join(w.airflow_home, 'logs')}, components {w.components}/<name>.log",
        "Ctrl-C stops everything; the metadata DB, logs and lake stay for the next start.",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kt.airflow_stack",
        description="The real Airflow 3 on this machine (no Docker): UI on http://localhost:PORT, scheduler, "
                    "dag-processor, triggerer, local runtime, embedded moto, SQLite. Ctrl-C stops it.")
    parser.add_argument("--home", default=DEFAULT_HOME, help="state kept between starts (default: %(default)s)")
    parser.add_argument("--lake", help="the lake directory (default: HOME/lake)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="UI and API port (default: %(default)s)")
    parser.add_argument("--users", type=int, default=2000, help="simulated students of the source (default: 2000)")
    parser.add_argument("--skills", type=int, default=16, help="their skills (default: %(default)s)")
    parser.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    where = layout(args.home, args.lake)
    if not os.path.isdir(os.path.join(runtime.REPO, "dags")):
        raise SystemExit(f"no dags/ next to {runtime.REPO}/src: run it from the repository's editable install")
    source = prepare_source(where, args.users, args.skills)
    stack = Stack(where, args.port)
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        if stopping:
            stack.skip_grace()  # a second Ctrl-C: no waiting for the components to finish
            return
        raise _Interrupted(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        print(f"starting Airflow in {where.airflow_home} (components' output: {where.components}) ...", flush=True)
        started = time.monotonic()
        stack.start(args.ready_timeout)
        print(banner(stack, source), flush=True)
        print(f"(ready in {time.monotonic() - started:.0f}s)", flush=True)
        while True:
            stack.check_alive()
            stack.reap()
            time.sleep(2)  # the supervisor's watch over its components; signals interrupt it
    except _Interrupted:
        pass
    except SystemExit as e:
        print(e, file=sys.stderr, flush=True)
        code = 1
    finally:
        stopping = True
        print("stopping Airflow ...", flush=True)
        stack.stop()
        print(f"stopped; the state stays in {where.home}", flush=True)
    return code


class _Interrupted(Exception):
    """Ctrl-C or SIGTERM: stop the stack."""


if __name__ == "__main__":
    sys.exit(main())
