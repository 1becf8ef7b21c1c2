"""Benchmark: the nightly refresh at scale, a full night against an incremental one, in one run (issue 21).

    .venv/bin/python bench/refresh.py                                  # 100K users, 5% active, 30-300 days
    .venv/bin/python bench/refresh.py --users 20000 --users 100000     # the same at two user counts: peak RSS
    .venv/bin/python bench/refresh.py --window-check                   # stateful whole history vs last window

A night is the DAG's steps on this machine: ``kt.refresh.build_inputs`` (kt-history and kt-mastery in a moto
server, a child process: the bench process's memory is the refresh's), the batch transform
(``kt.local_sagemaker.run_transform_job``: the model server in a child
process, MultiRecord payloads over HTTP) and ``kt.refresh.load_outputs``. The full night scores every active
user from the whole history (no stored state: the first night, or after a promotion); the incremental night,
the next day, from the states the full night stored plus that day's answers. Both feed every answer to the
model (stateful), as the refresh does.

What is simulated: ``--users`` tutor users, ``--active`` of them answering on the benchmark night; each active
user has answered ``--per-day`` answers a day for 30-300 days before it. Only active users' histories are put
in kt-history: the night never reads another user's (the by_day index names the active ones), so the others
would cost loading time and nothing else. The histories go straight into moto's backend (setup, not
measured; moto's query lists the whole table for every query, so ``partition_queries`` hands it the key's
partition: same results). sync_history (the local runtime's reload of kt-history from the lake) is not
measured: on AWS the tutor writes kt-history and that step does nothing.

DynamoDB units are estimated from item sizes (DynamoDB's rule: names + values, 1 WRU per KB written, 1 RRU
per 4 KB read consistently): moto does not report consumed capacity.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, timedelta

import psutil

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from kt import artifact, dynamo, lake, local_sagemaker, refresh  # noqa: E402

HISTORY, MASTERY = "kt-history", "kt-mastery"
NIGHT = date(2026, 11, 25)
ANSWER_ITEM_BYTES = 110  # a kt-history answer item (user_id, ts, day, answer_id, skill_id, correct, content_id)


def train_model(work: str, skills: int) -> str:
    """A DKT of the production shape (2 x 128 LSTM, windows of 200) trained one epoch on sample data."""
    from kt import etl, sample
    from kt.config import TrainingPaths
    from kt.train import Hyperparameters, train

    root = os.path.join(work, "sample")
    sample.generate(root, users=300, skills=skills, seed=5, tutor_users=0)
    etl.run_etl(f"{root}/raw/ednet", f"{root}/processed/ednet", progress=False)
    paths = TrainingPaths(train_channel=f"{root}/processed/ednet", model_dir=f"{work}/model",
                          checkpoint_dir=f"{work}/checkpoints", output_dir=f"{work}/output", job_name="bench-refresh")
    train(Hyperparameters(hidden=128, layers=2, epochs=1, batch_size=32, max_seq_len=200), paths)
    tarball = os.path.join(work, "model.tar.gz")
    artifact.pack(paths.model_dir, tarball)
    return tarball


_QUERY = threading.local()


@contextlib.contextmanager
def partition_queries():
    """moto's Table.query lists and sorts the whole table on every query (``all_items``), then keeps the key's
    items and sorts those again: O(table) per query, hours for a 100K-user night. Within a query this hands it
    only the key's partition (a key query) or the unsorted items (an index query, sorted by query itself): the
    same results, at the cost of the partition. A benchmark shortcut for moto, not DynamoDB's behaviour."""
    from moto.dynamodb.models.table import Table

    all_items, query = Table.all_items, Table.query

    def scoped_all_items(self):
        if not getattr(_QUERY, "active", False):
            return all_items(self)
        if _QUERY.index_name is None and _QUERY.hash_key is not None:
            return list(self.items.get(_QUERY.hash_key, {}).values())
        return [item for partition in self.items.values() for item in partition.values()]

    def scoped_query(self, hash_key, *args, **kwargs):
        _QUERY.active, _QUERY.hash_key = True, hash_key
        _QUERY.index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        try:
            return query(self, hash_key, *args, **kwargs)
        finally:
            _QUERY.active = False

    Table.all_items, Table.query = scoped_all_items, scoped_query
    try:
        yield
    finally:
        Table.all_items, Table.query = all_items, query


def put_histories(users: list[str], per_day: int, skills: list[int], rng: random.Random) -> int:
    """Each user's answers before the night, straight into moto's table (setup); returns how many."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    table = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_table(HISTORY)
    n = 0
    for user in users:
        days = rng.randint(30, 300)
        for d in range(days, 0, -1):
            for answer in day_answers(user, NIGHT - timedelta(days=d), per_day, skills, rng):
                table.put_item(dynamo.serialize(dynamo.history_item(answer)))
                n += 1
    return n


def day_answers(user: str, day: date, per_day: int, skills: list[int], rng: random.Random) -> list[dict]:
    return [{"user_id": user, "answer_id": f"{day.isoformat()}-{i}", "skill_id": rng.choice(skills),
             "correct": int(rng.random() < 0.6),
             "answered_at": f"{day.isoformat()}T{10 + i // 60:02d}:{i % 60:02d}:00.000Z"}
            for i in range(per_day)]


class PeakRss:
    """The largest RSS of this process (``own``, above its RSS on entry) and of its children but moto's
    (``children``: the model server), sampled every 50 ms while the block runs."""

    def __init__(self, exclude: int):
        self.exclude = exclude  # the moto server's pid

    def __enter__(self) -> "PeakRss":
        self.start = psutil.Process().memory_info().rss
        self.own, self.children, self._stop = 0, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.05):
            rss = 0
            for child in me.children(recursive=True):
                if child.pid == self.exclude:
                    continue
                try:
                    rss += child.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.children = max(self.children, rss)
            self.own = max(self.own, me.memory_info().rss - self.start)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def item_bytes(value: object, name: str = "") -> int:
    """DynamoDB's size of an attribute: its name plus its value (numbers ~1 byte per 2 digits + 1)."""
    size = len(name.encode())
    if isinstance(value, dict):
        return size + 3 + sum(item_bytes(v, k) + 1 for k, v in value.items())
    if isinstance(value, list):
        return size + 3 + sum(item_bytes(v) + 1 for v in value)
    if isinstance(value, bool) or value is None:
        return size + 1
    if isinstance(value, (int, float)):
        return size + len(repr(value).lstrip("-").replace(".", "")) // 2 + 1
    return size + len(str(value).encode())


def read_units(root: str, run_date: str) -> int:
    """Consistent reads of build_inputs, estimated from its input lines (history_items: the answers covered).

    Full: the user's whole history. Incremental: the state (GetItem of the row), the COUNT query over the
    answers the state covered (read units count what is scanned, not what comes back) and the new answers.
    """
    rru = 0
    for uri in lake.list_files(lake.join(root, "inference", "batch", run_date, "input")):
        for line in lake.read_text(uri).splitlines():
            record = json.loads(line)
            covered, new = record["history_items"], len(record["user_sequence"])
            rru += 1  # the GetItem of the row, whether it holds a state or not
            if "state" in record:
                rru += math.ceil((covered - new) * ANSWER_ITEM_BYTES / 4096) + math.ceil(new * ANSWER_ITEM_BYTES / 4096)
            else:
                rru += math.ceil(covered * ANSWER_ITEM_BYTES / 4096)
    return rru


def run_night(client, root: str, tarball: str, run_date: str, skills: set[int], version: str, work: str,
              moto_pid: int) -> dict:
    """build_inputs, the transform, load_outputs of one night; timings, volumes and estimated units."""
    with PeakRss(exclude=moto_pid) as rss:
        figures = night_steps(client, root, tarball, run_date, skills, version, work)
    figures.update(transform_peak_rss_mib=rss.children / 2**20, night_rss_growth_mib=rss.own / 2**20)
    return figures


def night_steps(client, root: str, tarball: str, run_date: str, skills: set[int], version: str, work: str) -> dict:
    figures: dict = {}
    t = time.perf_counter()
    built = refresh.build_inputs(client, HISTORY, root, run_date, [run_date], known_skills=skills,
                                 model_version=version, mastery_table=MASTERY)
    figures["build_s"] = time.perf_counter() - t
    night = lake.join(root, "inference", "batch", run_date)
    model = {"ModelName": f"m-{run_date}", "PrimaryContainer": {"Image": "local", "ModelDataUrl": tarball}}
    transform = {
        "TransformJobName": f"t-{run_date}", "ModelName": f"m-{run_date}", "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": 6,
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"{night}/input"}},
                           "ContentType": "application/jsonlines", "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": f"{night}/output", "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
    }
    t = time.perf_counter()
    describe = local_sagemaker.run_transform_job({"Model": model, "Transform": transform}, work)
    figures["transform_s"] = time.perf_counter() - t
    if describe["TransformJobStatus"] != "Completed":
        raise RuntimeError(describe.get("FailureReason"))
    t = time.perf_counter()
    loaded = refresh.load_outputs(client, MASTERY, root, run_date, last_day=run_date)
    figures["load_s"] = time.perf_counter() - t
    wru = sum(math.ceil(item_bytes(i) / 1024) for part in refresh.night_parts(root, run_date, "x") for i in part.items)
    figures.update(rru=read_units(root, run_date), users=built["users"], full=built["full"] + built["late"],
                   incremental=built["incremental"],
                   answers_fed=built["answers_fed"], written=loaded.written, errors=loaded.errors,
                   lake_bytes=sum(lake.size(uri) for uri in lake.list_files(night)), wru=wru)
    figures["end_to_end_s"] = figures["build_s"] + figures["transform_s"] + figures["load_s"]
    return figures


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def active_users_of(users: int, active_share: float, seed: int) -> list[str]:
    return sorted(f"tutor-{u:06d}" for u in random.Random(seed).sample(range(users), int(users * active_share)))


def model_skills(tarball: str, work: str) -> tuple[list[int], str]:
    info = artifact.read_info(artifact.unpack(tarball, os.path.join(work, "model")))
    return [int(s) for s in info["skill_ids"]], info["model_version"]


def serve_moto(users: int, active_share: float, per_day: int, tarball: str, seed: int) -> None:
    """The moto server of a run, in its own process (so the bench process's RSS is the refresh's, not moto's
    tables'), with the active users' histories loaded; prints its URL, serves until stdin closes."""
    import boto3
    from moto.server import ThreadedMotoServer

    from kt import aws

    port = aws.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="kt-bench-moto-") as work, partition_queries():
        skills, _ = model_skills(tarball, work)
        client = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1", **aws.LOCAL_CREDENTIALS)
        dynamo.ensure_tables(client, HISTORY, MASTERY)
        t = time.perf_counter()
        answers = put_histories(active_users_of(users, active_share, seed), per_day, skills, random.Random(seed + 1))
        print(json.dumps({"url": url, "history_answers": answers, "setup_s": time.perf_counter() - t}), flush=True)
        sys.stdin.read()
    server.stop()


def bench(users: int, active_share: float, per_day: int, tarball: str, seed: int) -> dict:
    """Both nights for one user count, against a moto server in a child process."""
    import boto3

    from kt import aws

    moto = subprocess.Popen([sys.executable, __file__, "--moto-server", "--users", str(users), "--active",
                             str(active_share), "--per-day", str(per_day), "--model", tarball, "--seed", str(seed)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(moto.stdout.readline())  # the server answers once the histories are in
        with tempfile.TemporaryDirectory(prefix="kt-bench-refresh-") as work:
            skills, version = model_skills(tarball, work)
            client = boto3.client("dynamodb", endpoint_url=ready["url"], region_name="us-east-1",
                                  config=aws.RETRIES, **aws.LOCAL_CREDENTIALS)
            active = active_users_of(users, active_share, seed)
            root = os.path.join(work, "lake")
            before = (NIGHT - timedelta(days=1)).isoformat()
            full = run_night(client, root, tarball, before, set(skills), version, work, moto.pid)
            rng = random.Random(seed + 2)
            tonight = [a for user in active for a in day_answers(user, NIGHT, per_day, skills, rng)]
            dynamo.put_history(client, HISTORY, tonight)
            lake.write_text(lake.join(root, "events", "answers", f"day={NIGHT.isoformat()}", "bench.jsonl"),
                            "".join(json.dumps(a) + "\n" for a in tonight))
            incremental = run_night(client, root, tarball, NIGHT.isoformat(), set(skills), version, work, moto.pid)
    finally:
        moto.kill()  # nothing in it to keep; a clean stop of a server holding ~1M items takes minutes
        moto.wait()
    return {"users": users, "active": len(active), "per_day": per_day, "history_answers": ready["history_answers"],
            "setup_s": ready["setup_s"], "full": full, "incremental": incremental, "peak_rss_mib": peak_rss_mib()}


ROWS = [("users refreshed", "users", "{:,}"), ("answers fed to the model", "answers_fed", "{:,}"),
        ("build_inputs s", "build_s", "{:.1f}"), ("transform s", "transform_s", "{:.1f}"),
        ("load_outputs s", "load_s", "{:.1f}"), ("end to end s", "end_to_end_s", "{:.1f}"),
        ("model server peak RSS MiB", "transform_peak_rss_mib", "{:.0f}"),
        ("bench process RSS growth in the night MiB", "night_rss_growth_mib", "{:.0f}"),
        ("lake bytes written (input + output)", "lake_bytes", "{:,}"), ("kt-mastery WRU (estimated)", "wru", "{:,}"),
        ("kt-history + kt-mastery RRU (estimated)", "rru", "{:,}")]


def report(result: dict) -> None:
    print(f"\n{result['users']:,} users, {result['active']:,} active, {result['per_day']} answers a day, "
          f"{result['history_answers']:,} answers in kt-history before the night (setup {result['setup_s']:.0f} s); "
          f"bench process peak RSS {result['peak_rss_mib']:.0f} MiB (moto's server not included)")
    print(f"| {'':42} | {'full':>12} | {'incremental':>12} | {'full / incr.':>12} |")
    print(f"|{'-' * 44}|{'-' * 14}|{'-' * 14}|{'-' * 14}|")
    for label, key, fmt in ROWS:
        full, incr = result["full"][key], result["incremental"][key]
        ratio = f"{full / incr:.1f}x" if incr else "-"
        print(f"| {label:42} | {fmt.format(full):>12} | {fmt.format(incr):>12} | {ratio:>12} |")


# --- stateful whole history vs the last window, on the demo data ---------------------------------------------


def window_check(work: str, epochs: int, step: int) -> dict:
    """Next-answer prediction and final mastery of long test histories: every answer fed vs the last window.

    The demo's data (`kt sample` defaults) and hyperparameters (kt.pipeline.DEMO_HYPERPARAMETERS, fewer epochs);
    for each test user longer than max_seq_len, the answer at every ``step``-th position past max_seq_len is
    predicted from what came before, both ways.
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from kt import etl, inference, sample
    from kt.config import TrainingPaths
    from kt.data import read_sequences
    from kt.pipeline import DEMO_HYPERPARAMETERS
    from kt.train import Hyperparameters, train

    root = os.path.join(work, "demo")
    sample.generate(root, tutor_users=0)
    etl.run_etl(f"{root}/raw/ednet", f"{root}/processed/ednet", progress=False)
    paths = TrainingPaths(train_channel=f"{root}/processed/ednet", model_dir=f"{work}/demo-model",
                          checkpoint_dir=f"{work}/ck", output_dir=f"{work}/out", job_name="window-check")
    train(Hyperparameters(**{**DEMO_HYPERPARAMETERS, "epochs": epochs}), paths)
    model = inference.model_fn(paths.model_dir)
    window = model.model.config.max_seq_len
    prefixes, truth, finals = [], [], []
    lengths = []
    for seq in read_sequences(f"{root}/processed/ednet", "test").to_pylist():
        answers = [(int(s), int(c)) for s, c in zip(seq["skill_id"], seq["correct"]) if int(s) in model.index]
        lengths.append(len(answers))
        if len(answers) <= window:
            continue
        finals.append(answers)
        for t in range(window, len(answers), step):
            prefixes.append(answers[:t])
            truth.append((model.index[answers[t][0]], answers[t][1]))
    picks = np.array([i for i, _ in truth])
    y = np.array([c for _, c in truth])
    rows = np.arange(len(truth))
    stateless = inference.run_model(model, prefixes)[0][rows, picks]
    stateful = inference.run_model(model, prefixes, window=False)[0][rows, picks]
    end_stateless = inference.run_model(model, finals)[0]
    end_stateful = inference.run_model(model, finals, window=False)[0]
    gap = np.abs(end_stateful - end_stateless)
    return {"test_users": len(lengths), "longer_than_window": len(finals), "max_seq_len": window,
            "longest": max(lengths), "predictions": len(y), "auc_last_window": float(roc_auc_score(y, stateless)),
            "auc_whole_history": float(roc_auc_score(y, stateful)),
            "next_answer_mean_abs_diff": float(np.abs(stateful - stateless).mean()),
            "final_mastery_mean_abs_diff": float(gap.mean()), "final_mastery_max_abs_diff": float(gap.max())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, action="append", help="tutor users (repeat for several counts)")
    parser.add_argument("--active", type=float, default=0.05, help="share of users active on the night")
    parser.add_argument("--per-day", type=int, default=1, help="answers an active user gives a day")
    parser.add_argument("--skills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model", help="a model.tar.gz (default: train one, 2 x 128, one epoch on sample data)")
    parser.add_argument("--json", action="store_true", help="print one run's figures as JSON (child runs)")
    parser.add_argument("--window-check", action="store_true")
    parser.add_argument("--moto-server", action="store_true", help=argparse.SUPPRESS)  # bench's own child
    parser.add_argument("--epochs", type=int, default=3, help="--window-check: training epochs")
    parser.add_argument("--step", type=int, default=10, help="--window-check: every step-th position scored")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kt-bench-") as work:
        if args.window_check:
            print(json.dumps(window_check(work, args.epochs, args.step), indent=1))
            return 0
        tarball = args.model or train_model(work, args.skills)
        counts = args.users or [100_000]
        if args.moto_server:
            serve_moto(counts[0], args.active, args.per_day, tarball, args.seed)
            return 0
        if len(counts) == 1:
            result = bench(counts[0], args.active, args.per_day, tarball, args.seed)
            print(json.dumps(result)) if args.json else report(result)
            return 0
        results = []
        for users in counts:  # one process each: its peak RSS is that run's alone
            out = subprocess.run([sys.executable, __file__, "--users", str(users), "--active", str(args.active),
                                  "--per-day", str(args.per_day), "--seed", str(args.seed), "--model", tarball,
                                  "--json"], stdout=subprocess.PIPE, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            report(results[-1])
        print("\nmemory by user count (full night / incremental night):")
        for r in results:
            print(f"  {r['users']:>9,} users ({r['active']:,} active): bench process RSS growth in the night "
                  f"{r['full']['night_rss_growth_mib']:.0f} / {r['incremental']['night_rss_growth_mib']:.0f} MiB, "
                  f"model server peak {r['full']['transform_peak_rss_mib']:.0f} / "
                  f"{r['incremental']['transform_peak_rss_mib']:.0f} MiB; "
                  f"bench process peak {r['peak_rss_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
