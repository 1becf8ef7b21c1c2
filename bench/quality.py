"""Model quality on real data: our pipeline (ETL -> train -> evaluate) per dataset and model, beside pyKT's, same users.

    .venv/bin/python bench/quality.py                                   # every dataset, both models, contract split
    .venv/bin/python bench/quality.py --datasets statics2011_dkvmn --models dkt
    .venv/bin/python bench/quality.py --datasets assist2009_dkvmn --grid hidden=64,128 lr=1e-3,2e-3 --budget 600
    .venv/bin/python bench/quality.py --models dkt ensemble --jobs 2 \
        --grid dkt:batch_size=32,64 dkt:ema=0.99,0 ensemble:members=dkt+dkt_counts+attn+gru ensemble:ema=0.99
    .venv/bin/python bench/quality.py --split original                  # the 3-line datasets' own train/test split

Data: the Riiid-format conversions in ../shared/data/real/<dataset>/riiid/
(read in place, never copied; see its README). ``statics2011_dkvmn_qid`` is
STATICS with the question id as the skill (staged in a temp dir: questions.csv
rewritten, train.csv linked): the input the DKVMN paper's DKT figure used.

Protocol, per dataset:

1. ETL: ``kt.etl.run_etl`` (the reference engine), skill = first tag (docs/contracts.md §4.2).
2. Splits (``--split``): ``contract`` (default) is the ETL's own, CRC32(user_id)
   mod 10: 0-7 train, 8 valid, 9 test; pyKT's figures in PEER_PYKT
   (../shared/notes/peers.md) were measured on exactly these users.
   ``original``: the source's train/test split (``riiid/splits.csv``, the
   3-line datasets; others keep the contract's), validation = the train users
   with CRC32 mod 10 == 0. FILE: a CSV ``user_id,split`` (train/valid/test).
3. Training, per model (``--models``, default both): ``kt.train.train``;
   early stopping on valid AUC; with ``--grid``, candidates are trained in
   order until the CPU budget (``--budget`` seconds of training per model and
   dataset) is spent (the first always runs) and the best valid AUC is kept,
   never a test figure. The candidates, the budget and the choice go into the
   chosen model.json under "selection"; training fits the temperature on valid
   predictions made as served (model.json "temperature").
4. Evaluation, on test, once per chosen model: ``kt.evaluate.evaluate`` as
   served (warm context, with the temperature; ECE with a bootstrap interval
   under 100 test users), the per-skill base rate and the Phase-1 Bayesian
   estimate on the same targets; and pyKT's protocol (cold non-overlapping
   windows of 200, positions 1..L-1, windows under 3 dropped), the figure to
   set against pyKT's DKT on the same users, with a 95% bootstrap interval over
   test users (``kt.evaluate.bootstrap_interval``; pyKT's figure, on the same
   users, is one number). A reliability diagram per dataset and model in --out.

Prints one table (and --json writes every figure); wall = ETL + training +
evaluation, with the load average at the end of each dataset. ``--jobs N``
runs N datasets at once, each in its own process (one torch thread each by
default): one run, one commit, on every core. Grid keys a model does not read
(``members`` but for the ensemble, ``heads`` for DKT, ``count_features`` but
for DKT) or that name another model (``MODEL:key=...``, e.g.
``dkt:batch_size=32,64``) are dropped for it, so its repeats are trained once.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))

from kt import etl, evaluate, inference  # noqa: E402
from kt.config import TrainingPaths  # noqa: E402
from kt.data import SkillVocab, read_sequences  # noqa: E402
from kt.model import MODELS  # noqa: E402
from kt.schema import SPLITS  # noqa: E402
from kt.train import Hyperparameters, parse_hyperparameters, train  # noqa: E402

DEFAULT_DATA = os.path.join(REPO, "..", "shared", "data", "real")
VALID_BUCKETS = (0,)  # CRC32(user_id) mod 10 of the original train users carved out as validation: 10%
DATASETS = ("assist2009_dkt", "assist2009_dkvmn", "statics2011_dkvmn", "statics2011_dkvmn_qid", "ednet_kt1",
            "riiid_kaggle_users")
# pyKT 0.0.38 on these Riiid-format files, contract split (the same users), pyKT's protocol, this machine
# (../shared/notes/peers.md, 2026-12-02): DKT, and its attention models where measured.
PEER_PYKT = {"assist2009_dkt": {"DKT": 0.8604}, "assist2009_dkvmn": {"DKT": 0.8161, "SAKT": 0.7409},
             "statics2011_dkvmn": {"DKT": 0.7599, "SAKT": 0.7181, "simpleKT": 0.7413}, "ednet_kt1": {"DKT": 0.6093}}
TARGET_MARGIN = 0.01  # the target: our best >= pyKT DKT + 0.01 on the same users, pyKT's protocol
def raw_dir(data: str, name: str, work: str) -> str:
    """The Riiid-format folder of a dataset; the question-id variant of STATICS is staged in work."""
    if name != "statics2011_dkvmn_qid":
        return os.path.join(data, name, "riiid")
    source = os.path.join(data, "statics2011_dkvmn", "riiid")
    staged = os.path.join(work, "raw")
    os.makedirs(staged, exist_ok=True)
    with open(os.path.join(source, "questions.csv")) as f, open(os.path.join(staged, "questions.csv"), "w") as out:
        out.write(f.readline())
        for line in f:
            question_id, bundle_id, correct_answer, part, _tags = line.rstrip("\n").split(",")
            out.write(f"{question_id},{bundle_id},{correct_answer},{part},{question_id}\n")
    for name_ in ("train.csv", "splits.csv"):
        os.symlink(os.path.abspath(os.path.join(source, name_)), os.path.join(staged, name_))
    return staged


def split_of_users(raw: str, split: str) -> dict[int, str] | None:
    """user_id -> train/valid/test for ``--split``; None = the ETL's own (the contract's)."""
    if split == "contract":
        return None
    if split == "original":
        path = os.path.join(raw, "splits.csv")
        if not os.path.exists(path):
            return None
        table = pacsv.read_csv(path)
        return {int(u): "test" if s == "test" else
                "valid" if zlib.crc32(str(int(u)).encode()) % 10 in VALID_BUCKETS else "train"
                for u, s in zip(table["user_id"].to_pylist(), table["split"].to_pylist())}
    table = pacsv.read_csv(split)
    out = {int(u): str(s) for u, s in zip(table["user_id"].to_pylist(), table["split"].to_pylist())}
    bad = sorted(set(out.values()) - set(SPLITS))
    if bad:
        raise ValueError(f"{split}: unknown split names {bad}; expected {', '.join(SPLITS)}")
    return out


def resplit(processed: str, splits: dict[int, str], out: str) -> None:
    """A copy of a processed prefix whose split column follows ``splits`` (same layout, skills and manifest)."""
    sequences = read_sequences(processed)
    missing = sorted(set(sequences["user_id"].to_pylist()) - set(splits))
    if missing:
        raise ValueError(f"the split file names no split for {len(missing)} users, e.g. {missing[:5]}")
    split = pa.array([splits[u] for u in sequences["user_id"].to_pylist()], pa.string())
    sequences = sequences.set_column(sequences.schema.get_field_index("split"), "split", split)
    for name in SPLITS:
        part = sequences.filter(pc.equal(sequences["split"], name))
        os.makedirs(os.path.join(out, "sequences.parquet", f"split={name}"), exist_ok=True)
        pq.write_table(part, os.path.join(out, "sequences.parquet", f"split={name}", "part-00000.parquet"))
    shutil.copytree(os.path.join(processed, "skills.parquet"), os.path.join(out, "skills.parquet"))
    shutil.copyfile(os.path.join(processed, "_manifest.json"), os.path.join(out, "_manifest.json"))


def grid(pairs: list[str]) -> list[dict[str, str]]:
    """key=v1,v2 ... -> every combination, as hyperparameter overrides."""
    axes = [(key, values.split(",")) for key, values in (p.split("=", 1) for p in pairs)]
    return [dict(zip([k for k, _ in axes], combo)) for combo in itertools.product(*[v for _, v in axes])]


def reads(model: str, key: str) -> bool:
    """Whether ``model`` reads hyperparameter ``key``: a model's own keys are those of its
    ``Hyperparameters.model_config``; keys no model config has (lr, batch_size, ...) are training's, read by all."""
    configs = {name: set(Hyperparameters(model=name).model_config(1)) for name in MODELS}
    return key in configs[model] or key not in set().union(*configs.values())


def read_by(model: str, candidates: list[dict]) -> list[dict]:
    """The candidates as ``model`` sees them: keys it does not read (``reads``) and keys meant for another
    model (``MODEL:key``) dropped, repeats trained once."""
    seen = []
    for overrides in candidates:
        mine = {k.split(":", 1)[-1]: v for k, v in overrides.items() if ":" not in k or k.startswith(model + ":")}
        kept = {k: v for k, v in mine.items() if reads(model, k)}
        if kept not in seen:
            seen.append(kept)
    return seen


def train_candidates(name: str, model: str, processed: str, work: str, base: Hyperparameters,
                     candidates: list[dict], budget: float, split_rule: str) -> str:
    """Train candidates until the budget is spent; write the selection into the best one's model.json; its dir."""
    candidates = read_by(model, candidates)
    tried, spent = [], 0.0
    for i, overrides in enumerate(candidates):
        if tried and spent >= budget:
            break
        hp = parse_hyperparameters({**overrides, "model": model}, base)
        paths = TrainingPaths(train_channel=processed, model_dir=os.path.join(work, f"{model}-{i}"),
                              checkpoint_dir=os.path.join(work, f"checkpoints-{model}-{i}"),
                              output_dir=os.path.join(work, f"output-{model}-{i}"),
                              job_name=f"quality-{name}-{model}-{i}")
        t0 = time.monotonic()
        info = train(hp, paths)
        spent += time.monotonic() - t0
        tried.append({"overrides": overrides, "valid_auc": info["metrics"]["valid"]["auc"],
                      "epochs": info["metrics"]["epochs"], "seconds": round(time.monotonic() - t0, 1),
                      "model_dir": paths.model_dir})
        print(f"  {name} {model} {overrides or 'defaults'}: valid AUC {tried[-1]['valid_auc']:.4f} "
              f"after {tried[-1]['epochs']} epochs, {tried[-1]['seconds']:.0f} s", flush=True)
    best = max(tried, key=lambda c: c["valid_auc"])
    model_json = os.path.join(best["model_dir"], "model.json")
    with open(model_json) as f:
        info = json.load(f)
    info["selection"] = {"selected_on": "valid AUC of the best epoch (what early stopping reads)",
                         "split_rule": split_rule,
                         "cpu_budget_s": budget, "spent_s": round(spent, 1),
                         "not_tried": [c for c in candidates[len(tried):]],
                         "candidates": [{k: c[k] for k in ("overrides", "valid_auc", "epochs", "seconds")}
                                        for c in tried]}
    with open(model_json, "w") as f:
        json.dump(info, f, indent=1)
    return best["model_dir"]


def score(name: str, model: str, model_dir: str, processed: str, out_dir: str) -> dict:
    """The chosen model on test, as served and under pyKT's protocol."""
    shutil.copyfile(os.path.join(model_dir, "model.json"), os.path.join(out_dir, f"{name}.{model}.model.json"))
    loaded = inference.model_fn(model_dir)
    vocab = SkillVocab(loaded.skill_ids)
    report = evaluate.evaluate(loaded.model, vocab, processed, temperature=loaded.temperature,
                               reliability_png=os.path.join(out_dir, f"{name}.{model}.reliability.png"))
    pykt = evaluate.evaluate(loaded.model, vocab, processed, protocol="pykt", intervals=True)["dkt"]
    uncalibrated_ece = evaluate.metrics(*_served_predictions(loaded, vocab, processed))["ece"]
    with open(os.path.join(model_dir, "model.json")) as f:
        info = json.load(f)
    return {"model": model, "served": report.pop("dkt"), "baselines": report, "pykt_protocol": pykt,
            "ece_uncalibrated": uncalibrated_ece, "temperature": loaded.temperature, "skills": len(loaded.skill_ids),
            "hyperparameters": info["hyperparameters"], "selection": info["selection"],
            "calibration": info["calibration"], "valid": info["metrics"]["valid"]}


def _served_predictions(loaded, vocab: SkillVocab, processed: str):
    test = read_sequences(processed, "test")
    return evaluate.predict_windows(loaded.model, evaluate.served_windows(test, vocab, loaded.model.config.max_seq_len))


def run_dataset(name: str, args: argparse.Namespace, work: str, base: Hyperparameters, candidates: list[dict]) -> dict:
    started = time.monotonic()
    os.makedirs(work, exist_ok=True)
    raw = raw_dir(args.data, name, work)
    manifest = etl.run_etl(raw, os.path.join(work, "etl"), fmt="riiid",
                           skill_mappings=os.path.join(work, "no-skill-mappings.json"), progress=False)
    splits = split_of_users(raw, args.split)
    processed = os.path.join(work, "processed")
    if splits is None:
        processed = os.path.join(work, "etl")
        split_rule = "contract: CRC32(user_id) mod 10, 0-7 train, 8 valid, 9 test"
    else:
        resplit(os.path.join(work, "etl"), splits, processed)
        split_rule = (f"file {args.split}" if args.split != "original" else
                      "original train/test (splits.csv); valid = train users with CRC32(user_id) mod 10 == 0")
    models = []
    for model in args.models:
        model_dir = train_candidates(name, model, processed, work, base, candidates, args.budget, split_rule)
        models.append(score(name, model, model_dir, processed, args.out))
    same_users = split_rule.startswith("contract")
    return {
        "dataset": name, "users": manifest["users"], "answers": manifest["rows_out"],
        "test_users": read_sequences(processed, "test").num_rows, "split_rule": split_rule,
        "models": models, "peer_pykt": PEER_PYKT.get(name, {}) if same_users else {},
        "seconds": round(time.monotonic() - started, 1), "load_average": os.getloadavg(),
    }


def _with_interval(m: dict, key: str) -> str:
    interval = m.get(f"{key}_interval")
    return f"{m[key]:.4f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def format_table(results: list[dict]) -> str:
    head = ("| dataset | test users | model | AUC, pyKT protocol (95% interval) | pyKT DKT, same users | ≥ +0.01? "
            "| AUC, served | ECE served (95% interval) | ECE before T | T | base rate / Bayesian AUC | wall, load |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        peer = r["peer_pykt"].get("DKT")
        for m in r["models"]:
            auc = m["pykt_protocol"]["auc"]
            target = "—" if peer is None else f"{'yes' if auc >= peer + TARGET_MARGIN else 'no'} ({auc - peer:+.4f})"
            base, bayes = m["baselines"]["base_rate"], m["baselines"]["bayes"]
            lines.append(
                f"| {r['dataset']} | {r['test_users']:,} | {m['model']} | "
                f"{_with_interval(m['pykt_protocol'], 'auc')} | "
                f"{'—' if peer is None else f'{peer:.4f}'} | {target} | {m['served']['auc']:.4f} | "
                f"{_with_interval(m['served'], 'ece')} | "
                f"{m['ece_uncalibrated']:.4f} | {m['temperature']:.3f} | {base['auc']:.4f} / {bayes['auc']:.4f} | "
                f"{r['seconds']:.0f} s, {r['load_average'][0]:.1f} |")
    return "\n".join(lines)


def _worker_init(threads: int) -> None:
    """A dataset's process: torch threads as asked, OpenMP threads that sleep while waiting (bench/train.md)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS), metavar="NAME",
                        help=f"which datasets (default all: {', '.join(DATASETS)})")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                        help="which models to train and score (default all)")
    parser.add_argument("--split", default="contract",
                        help="contract (default: the ETL's CRC32 mod 10, pyKT's figures' users), original, or a "
                             "CSV file user_id,split")
    parser.add_argument("--data", default=DEFAULT_DATA, help="the real data folder (default ../shared/data/real)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="datasets trained at once, each in its own process with --threads (default 1)")
    parser.add_argument("--grid", nargs="*", default=[], metavar="KEY=V1,V2",
                        help="hyperparameter candidates, chosen on valid AUC (e.g. hidden=64,128 lr=1e-3,2e-3; "
                             "dkt:batch_size=32,64 for one model only)")
    parser.add_argument("--budget", type=float, default=float("inf"),
                        help="seconds of training per model and dataset for the grid (the first candidate always runs)")
    parser.add_argument("--hp", nargs="*", default=[], metavar="KEY=VALUE",
                        help="fixed hyperparameters for every candidate (kt.train.Hyperparameters fields)")
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "kt-quality"),
                        help="reliability diagrams, chosen model.json files and results.json (default /tmp/kt-quality)")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args(argv)
    if args.split not in ("contract", "original") and not os.path.isfile(args.split):
        parser.error(f"--split: not contract, original or a file: {args.split}")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(args.threads)
    base = parse_hyperparameters(dict(p.split("=", 1) for p in args.hp), Hyperparameters(threads=args.threads))
    candidates = grid(args.grid) if args.grid else [{}]
    os.makedirs(args.out, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="kt-quality-") as tmp, \
            ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                                initializer=_worker_init, initargs=(args.threads,)) as pool:
        running = {}
        for name in args.datasets:
            print(f"{name}: ETL, {len(candidates)} grid point(s) x {len(args.models)} model(s), evaluation", flush=True)
            running[pool.submit(run_dataset, name, args, os.path.join(tmp, name), base, candidates)] = name
        for done in as_completed(running):
            results.append(done.result())
            print(format_table(results[-1:]), flush=True)
            for path in filter(None, [args.json, os.path.join(args.out, "results.json")]):
                with open(path, "w") as f:
                    json.dump(results, f, indent=1)
    results.sort(key=lambda r: args.datasets.index(r["dataset"]))
    print()
    print(format_table(results))
    print(f"\nreliability diagrams and model.json files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
