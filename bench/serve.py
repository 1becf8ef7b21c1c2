"""Endpoint latency, batch-transform throughput against its bound, and endpoint memory over 10,000 requests.

    .venv/bin/python bench/serve.py                   # the seed's model size: 200 skills, hidden 128, 2 layers
    .venv/bin/python bench/serve.py --requests 200 --leak-requests 2000   # a quick look

The endpoint is ``kt.serve`` (uvicorn, one worker) serving a model.tar.gz
exactly as ``kt endpoint serve`` does; requests go over HTTP on 127.0.0.1 with
a keep-alive client, one at a time.

1. Latency of ``POST /invocations`` (application/json) for histories of 10,
   100 and 500 answers: p50 and p99 (and of ``GET /ping``, the HTTP round trip
   alone). Target: p99 < 50 ms at 500 answers. Then the same requests through
   the AWS PyTorch inference image's serving stack (``kt.toolkit_serve``:
   sagemaker-pytorch-inference starting TorchServe, one worker, from
   ``.venv-toolkit``), right after, on the same tarball (--no-toolkit skips it).
2. Batch throughput: one MultiRecord JSON Lines payload of users with
   100-answer histories (what the transform agent sends), in users/s, against
   the bound measured in this process: a bare ``nn.LSTM`` forward (same sizes,
   same thread count) over the same padded (N, 100, hidden) tensor, no I/O, no
   JSON. Target: at least half the bound.
3. Memory: the endpoint process's RSS and peak RSS (VmHWM) after warm-up and
   every quarter of 10,000 mixed requests (valid ones of 10-500 answers and 4xx
   ones). Flat = no leak.

Weights are random (latency and memory do not depend on them). Torch threads
are the same in the endpoint and the bound (--threads, default 1: steady on a
shared 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time

import httpx
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))

from kt import artifact, serve, toolkit_serve  # noqa: E402
from kt.model import DKT, DKTConfig  # noqa: E402
from kt.topics import TOPICS  # noqa: E402

SKILLS = 200  # the seed's model
LENGTHS = (10, 100, 500)
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def build_model(path: str, skills: int, hidden: int, layers: int) -> str:
    """A random-weight DKT of the seed's size as model.tar.gz."""
    torch.manual_seed(0)
    config = DKTConfig(num_skills=skills, hidden=hidden, layers=layers)
    skill_ids = list(range(1, skills + 1))
    info = {"model_version": "bench", "config": config.to_dict(), "skill_ids": skill_ids,
            "skill_topics": {str(s): TOPICS[s % len(TOPICS)] for s in skill_ids}, "base_rates": [0.6] * skills}
    model_dir = os.path.join(os.path.dirname(path), "model")
    artifact.write_model_dir(model_dir, DKT(config).state_dict(), info)
    artifact.pack(model_dir, path)
    return path


def history(rng: random.Random, n: int, skills: int) -> list[dict]:
    return [{"skill_id": rng.randint(1, skills), "correct": rng.randint(0, 1)} for _ in range(n)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def memory(pid: int) -> dict[str, float]:
    """RSS and peak RSS of a process, in MiB, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}


def latency(client: httpx.Client, bodies: list[bytes], warmup: int) -> list[float]:
    for body in bodies[:warmup]:
        client.post("/invocations", content=body, headers=HEADERS).raise_for_status()
    times = []
    for body in bodies[warmup:]:
        started = time.perf_counter()
        reply = client.post("/invocations", content=body, headers=HEADERS)
        times.append(time.perf_counter() - started)
        reply.raise_for_status()
    return times


def measure_latency(client: httpx.Client, bodies: dict[int, list[bytes]], requests: int) -> dict:
    """p50 and p99 of GET /ping (the HTTP round trip alone) and of POST /invocations per history length, in ms."""
    figures = {}
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        client.get("/ping").raise_for_status()
        times.append(time.perf_counter() - started)
    figures["ping"] = {"p50": percentile(times, 0.5) * 1000, "p99": percentile(times, 0.99) * 1000}
    print(f"   GET /ping:    p50 {figures['ping']['p50']:6.1f} ms   p99 {figures['ping']['p99']:6.1f} ms", flush=True)
    for n, length_bodies in bodies.items():
        times = latency(client, length_bodies, warmup=20)
        figures[n] = {"p50": percentile(times, 0.50) * 1000, "p99": percentile(times, 0.99) * 1000}
        print(f"   {n:>4} answers: p50 {figures[n]['p50']:6.1f} ms   p99 {figures[n]['p99']:6.1f} ms", flush=True)
    return figures


@torch.no_grad()
def lstm_bound(users: int, length: int, hidden: int, layers: int, repeats: int) -> float:
    """Users/s of a bare nn.LSTM forward over one padded (users, length, hidden) tensor."""
    lstm = torch.nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True).eval()
    x = torch.randn(users, length, hidden)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        lstm(x)
        best = min(best, time.perf_counter() - started)
    return users / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500, help="timed requests per history length")
    parser.add_argument("--batch-users", type=int, default=1000)
    parser.add_argument("--leak-requests", type=int, default=10_000)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the endpoint and the bound")
    parser.add_argument("--no-toolkit", dest="toolkit", action="store_false",
                        help="skip the latency through the real toolkit (TorchServe)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = random.Random(0)
    figures: dict = {"args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="kt-bench-serve-") as tmp:
        tar = build_model(os.path.join(tmp, "model.tar.gz"), SKILLS, args.hidden, args.layers)
        env = {"OMP_NUM_THREADS": str(args.threads), "SAGEMAKER_MAX_PAYLOAD_IN_MB": "100"}
        with serve.running(tar, environment_vars=env) as endpoint, \
                httpx.Client(base_url=endpoint.url, timeout=600) as client:
            pid = endpoint.process.pid
            print(f"endpoint pid {pid} at {endpoint.url}: {SKILLS} skills, hidden {args.hidden}, "
                  f"{args.layers} layers, {args.threads} torch thread(s)", flush=True)
            figures["memory_start"] = memory(pid)

            print(f"\n1. latency of POST /invocations, kt endpoint serve ({args.requests} sequential requests each)")
            bodies = {n: [json.dumps({"user_sequence": history(rng, n, SKILLS)}).encode()
                          for _ in range(args.requests + 20)] for n in LENGTHS}
            figures["latency_ms"] = measure_latency(client, bodies, args.requests)
            if args.toolkit:
                print("\n1b. the same requests through the real toolkit (sagemaker-pytorch-inference and TorchServe, "
                      "requirements-toolkit.txt)")
                with toolkit_serve.running(tar, environment_vars=env) as real, \
                        httpx.Client(base_url=real.url, timeout=600) as toolkit_client:
                    figures["toolkit_latency_ms"] = measure_latency(toolkit_client, bodies, args.requests)
                print(f"   p99 at 500 answers: kt endpoint serve {figures['latency_ms'][500]['p99']:.1f} ms, "
                      f"real toolkit {figures['toolkit_latency_ms'][500]['p99']:.1f} ms", flush=True)

            print(f"\n2. batch: {args.batch_users} users x 100 answers in one JSON Lines payload")
            payload = "".join(json.dumps({"user_id": f"u{i}", "as_of": "2026-11-24T10:00:00.000Z",
                                          "user_sequence": history(rng, 100, SKILLS)}) + "\n"
                              for i in range(args.batch_users)).encode()
            runs = []
            for _ in range(3):
                started = time.perf_counter()
                reply = client.post("/invocations", content=payload, headers={
                    "Content-Type": "application/jsonlines", "Accept": "application/jsonlines"})
                runs.append(time.perf_counter() - started)
                reply.raise_for_status()
                assert reply.text.count("\n") == args.batch_users
            ours = args.batch_users / statistics.median(runs)
            bound = lstm_bound(args.batch_users, 100, args.hidden, args.layers, repeats=3)
            figures["batch"] = {"users_per_s": ours, "bound_users_per_s": bound, "ratio": ours / bound}
            print(f"   endpoint {ours:8,.0f} users/s (median of 3, {len(payload) / 1e6:.1f} MB in)")
            print(f"   bound    {bound:8,.0f} users/s (bare nn.LSTM forward, best of 3)")
            print(f"   ratio {ours / bound:.2f} of the bound (target >= 0.5)", flush=True)

            print(f"\n3. memory over {args.leak_requests:,} mixed requests (MiB)")
            bad = [b'{"user_sequence": [{"skill_id": 1, "correct": 5}]}', b"{oops",
                   json.dumps({"user_sequence": [{"skill_id": 10**6, "correct": 1}]}).encode()]
            marks = {args.leak_requests * q // 4 for q in (1, 2, 3, 4)}
            figures["memory"] = [{"requests": 0, **memory(pid)}]
            print(f"   {0:>6} requests: RSS {figures['memory'][0]['VmRSS']:7.1f}  peak {figures['memory'][0]['VmHWM']:7.1f}")
            for i in range(1, args.leak_requests + 1):
                if i % 10 == 0:
                    client.post("/invocations", content=bad[i % 3], headers=HEADERS)
                else:
                    body = json.dumps({"user_sequence": history(rng, rng.choice((10, 100, 500)), SKILLS)}).encode()
                    client.post("/invocations", content=body, headers=HEADERS).raise_for_status()
                if i in marks:
                    figures["memory"].append({"requests": i, **memory(pid)})
                    m = figures["memory"][-1]
                    print(f"   {i:>6} requests: RSS {m['VmRSS']:7.1f}  peak {m['VmHWM']:7.1f}", flush=True)
            first, last = figures["memory"][1], figures["memory"][-1]
            print(f"   RSS change from {first['requests']:,} to {last['requests']:,} requests: "
                  f"{last['VmRSS'] - first['VmRSS']:+.1f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
