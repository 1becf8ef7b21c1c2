"""Load test of GET /api/kt/mastery: concurrent clients on localhost against a moto-server DynamoDB.

    .venv/bin/python bench/api.py                      # 50 clients, 30 s on the API (+ 15 s baseline, 10 s Bayesian)
    .venv/bin/python bench/api.py --duration 5 --baseline-duration 3 --bayes-duration 3 --users 200   # quick look

Three processes: a moto server (DynamoDB), `kt.api` under uvicorn (one
worker, access log off) and this one, the load generator (asyncio + httpx,
one keep-alive connection per client). Phases, each bounded by its duration:

1. baseline: the same number of clients as threads doing bare boto3 GetItem
   on the moto server: what the API's one GetItem costs without the API;
2. api, DKT enabled: GET served from the user's DKT row (one GetItem, as on AWS);
3. api, DKT disabled: the Bayesian estimate computed from the same row's counters (one GetItem, as on AWS).

Prints p50/p99 latency, requests/s and errors per phase, and the API/baseline
ratios; exits non-zero when a phase had an error. Absolute numbers on a shared
2-core machine are noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import boto3
import httpx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))

from kt import dynamo  # noqa: E402
from kt.api import MAX_THREADS  # noqa: E402
from kt.aws import free_port  # noqa: E402
from kt.topics import TOPICS  # noqa: E402

KEY = "bench-key"
WARMUP_S = 2.0

log = logging.getLogger("bench.api")



def wait_until_up(check, what: str, timeout: float = 60.0) -> None:
    """Poll a start-up check (a bench may poll; tests do not)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except Exception as e:  # noqa: BLE001 - anything means not up yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up within {timeout:.0f} s: {e}") from e
            time.sleep(0.2)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds each process spends inside the measured window: robust where latencies are not."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.begin: dict[str, float] = {}
        self.spent: dict[str, float] = {}

    def start(self) -> None:
        self.begin = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> None:
        self.spent = {name: cpu_seconds(pid) - self.begin[name] for name, pid in self.pids.items()}


def summary(name: str, latencies: list[float], errors: Counter, seconds: float, cpu: CpuMeter) -> dict:
    values = sorted(latencies)
    n = max(1, len(values))
    return {"phase": name, "requests": len(values), "errors": sum(errors.values()), "error_kinds": dict(errors),
            "seconds": round(seconds, 1),
            "rps": round(len(values) / seconds, 1), "p50_ms": round(1000 * percentile(values, 0.50), 2),
            "p99_ms": round(1000 * percentile(values, 0.99), 2),
            "cpu_ms_per_request": {k: round(1000 * v / n, 2) for k, v in cpu.spent.items()}}


# fixtures in DynamoDB


def ddb(url: str):
    return boto3.client("dynamodb", region_name="us-east-1", endpoint_url=url, aws_access_key_id="local",
                        aws_secret_access_key="local")


def populate(url: str, history_table: str, mastery_table: str, users: int, skills: int, answers: int) -> list[str]:
    """DKT rows (40-skill mastery maps, like the nightly refresh) and answer histories for `users` users."""
    client = ddb(url)
    dynamo.ensure_tables(client, history_table, mastery_table)
    rng = random.Random(1)
    user_ids = [f"bench-{u:05d}" for u in range(users)]
    rows, history = [], []
    for user in user_ids:
        mastery = {str(s): round(rng.random(), 4) for s in range(1, skills + 1)}
        rows.append({"user_id": user, "mastery": mastery, "topic_mastery": {t: round(rng.random(), 4) for t in TOPICS},
                     "next_skill_recommendation": 1, "predicted_accuracy": 0.5, "model_version": "bench",
                     "source": "dkt", "as_of": "2026-11-24T10:00:00.000Z", "updated_at": "2026-11-25T02:00:00+00:00",
                     "n_interactions": answers})
        for n in range(answers):
            history.append({"user_id": user, "answer_id": f"{user}-{n}", "skill_id": rng.randint(1, skills),
                            "correct": rng.randint(0, 1),
                            "answered_at": f"2026-11-24T09:{n // 60:02d}:{n % 60:02d}.000Z"})
    dynamo.write_mastery(client, mastery_table, rows)
    dynamo.put_history(client, history_table, history)
    dynamo.set_bayes_counters(client, history_table, mastery_table)  # what the answers' transactions add up
    return user_ids


# phases


def baseline(url: str, table: str, users: list[str], clients: int, duration: float, cpu: CpuMeter) -> dict:
    """Bare boto3 GetItem from `clients` threads for `duration` seconds."""
    from botocore.config import Config

    client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=url, aws_access_key_id="local",
                          aws_secret_access_key="local", config=Config(max_pool_connections=clients + 4))
    latencies: list[float] = []
    errors: Counter = Counter()
    lock = threading.Lock()
    start = time.monotonic()
    measure_from, stop_at = start + WARMUP_S, start + WARMUP_S + duration

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        mine, failed = [], Counter()
        while (now := time.monotonic()) < stop_at:
            try:
                client.get_item(TableName=table, Key={"user_id": {"S": rng.choice(users)}}, ConsistentRead=True)
                if now >= measure_from:
                    mine.append(time.monotonic() - now)
            except Exception as e:  # noqa: BLE001 - counted, not raised
                failed[type(e).__name__] += 1
        with lock:
            latencies.extend(mine)
            errors.update(failed)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, measure_from - time.monotonic()))
    cpu.start()
    time.sleep(max(0.0, stop_at - time.monotonic()))
    cpu.stop()
    for t in threads:
        t.join()
    return summary("baseline: boto3 GetItem", latencies, errors, duration, cpu)


async def load(name: str, base_url: str, users: list[str], clients: int, duration: float, cpu: CpuMeter) -> dict:
    """`clients` concurrent keep-alive clients doing GET /api/kt/mastery for `duration` seconds."""
    latencies: list[float] = []
    errors: Counter = Counter()
    start = time.monotonic()
    measure_from, stop_at = start + WARMUP_S, start + WARMUP_S + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, headers={"x-api-key": KEY}, limits=limits, timeout=30) as http:

        async def client(seed: int) -> None:
            rng = random.Random(seed)
            while (now := time.monotonic()) < stop_at:
                user = rng.choice(users)
                try:
                    r = await http.get("/api/kt/mastery", params={"user_id": user})
                    error = None if r.status_code == 200 and r.json()["user_id"] == user else f"HTTP {r.status_code}"
                except httpx.HTTPError as e:
                    error = type(e).__name__
                if error:
                    errors[error] += 1
                elif now >= measure_from:
                    latencies.append(time.monotonic() - now)

        async def meter() -> None:
            await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
            cpu.start()
            await asyncio.sleep(max(0.0, stop_at - time.monotonic()))
            cpu.stop()

        await asyncio.gather(meter(), *(client(i) for i in range(clients)))
    return summary(name, latencies, errors, duration, cpu)


def start_api(moto_url: str, history_table: str, mastery_table: str, skills: int, enabled: bool, port: int,
              threads: int) -> subprocess.Popen:
    """`kt.api` under uvicorn in its own process, on the bench's tables."""
    code = (
        "import logging, uvicorn\n"
        "from kt.api import Catalog, create_app\n"
        "from kt.config import Settings\n"
        "from kt.topics import TOPICS\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        f"skills = range(1, {skills} + 1)\n"
        "catalog = Catalog(tuple(skills), {s: TOPICS[(s - 1) % len(TOPICS)] for s in skills}, 'bench')\n"
        f"settings = Settings(aws_endpoint_url={moto_url!r}, history_table={history_table!r}, "
        f"mastery_table={mastery_table!r}, sagemaker_enabled={enabled!r}, api_key={KEY!r})\n"
        f"uvicorn.run(create_app(settings, catalog=catalog, max_threads={threads}), host='127.0.0.1', port={port}, "
        "access_log=False, log_level='warning')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "src")}
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of the DKT-enabled API phase")
    parser.add_argument("--baseline-duration", type=float, default=15.0)
    parser.add_argument("--bayes-duration", type=float, default=10.0, help="0 skips the DKT-disabled phase")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--skills", type=int, default=40)
    parser.add_argument("--answers", type=int, default=20, help="answers per user in kt-history")
    parser.add_argument("--api-threads", type=int, default=None, help="create_app(max_threads=...); default kt.api's")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    moto_port = free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes = [moto]
    try:
        moto_url = f"http://127.0.0.1:{moto_port}"
        wait_until_up(lambda: ddb(moto_url).list_tables(), "moto server")
        suffix = uuid.uuid4().hex[:6]
        history_table, mastery_table = f"kt-history-{suffix}", f"kt-mastery-{suffix}"
        t = time.monotonic()
        users = populate(moto_url, history_table, mastery_table, args.users, args.skills, args.answers)
        log.info("%d users, %d answers each, in moto (%.0f s)", len(users), args.answers, time.monotonic() - t)

        cpu = CpuMeter({"moto": moto.pid, "clients": os.getpid()})
        results = [baseline(moto_url, mastery_table, users, args.clients, args.baseline_duration, cpu)]
        log.info("%s", results[-1])
        phases = [(True, args.duration, "api GET, DKT row (GetItem)")]
        if args.bayes_duration > 0:
            phases.append((False, args.bayes_duration, "api GET, Bayesian from the row's counters"))
        for enabled, duration, name in phases:
            port = free_port()
            api = start_api(moto_url, history_table, mastery_table, args.skills, enabled, port,
                            args.api_threads or MAX_THREADS)
            processes.append(api)
            wait_until_up(lambda: httpx.get(f"http://127.0.0.1:{port}/api/kt/mastery", params={"user_id": users[0]},
                                            headers={"x-api-key": KEY}).raise_for_status(), "kt api")
            cpu = CpuMeter({"moto": moto.pid, "api": api.pid, "clients": os.getpid()})
            results.append(asyncio.run(load(name, f"http://127.0.0.1:{port}", users, args.clients, duration, cpu)))
            log.info("%s", results[-1])
            api.terminate()
            api.wait(timeout=30)
    finally:
        for p in processes:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=30)

    base = results[0]
    print(f"\n{args.clients} concurrent clients, {args.users} users, {args.skills} skills, {args.answers} answers/user")
    print(f"{'phase':44} {'requests':>9} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'p50 x base':>10}")
    for r in results:
        ratio = r["p50_ms"] / base["p50_ms"] if base["p50_ms"] else float("nan")
        print(f"{r['phase']:44} {r['requests']:>9} {r['errors']:>6} {r['rps']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} "
              f"{ratio:>10.2f}")
    print("\nCPU ms per request (inside the measured window), by process:")
    for r in results:
        print(f"{r['phase']:44} " + ", ".join(f"{k} {v}" for k, v in r["cpu_ms_per_request"].items()))
    for r in results[1:]:
        api_cpu = r["cpu_ms_per_request"]["api"] / base["cpu_ms_per_request"]["moto"]
        print(f"{r['phase']}: {r['rps'] / base['rps']:.2f}x the baseline's requests/s; "
              f"the API spends {api_cpu:.2f}x the CPU moto spends on one GetItem")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
