"""DKT quality on real data: our pipeline (ETL -> train -> evaluate) on each real dataset, next to published DKT figures.

    .venv/bin/python bench/quality.py                                   # every dataset, 1 torch thread
    .venv/bin/python bench/quality.py --datasets statics2011_dkvmn ednet_kt1
    .venv/bin/python bench/quality.py --datasets assist2009_dkvmn --grid hidden=64,128 lr=1e-3,2e-3

Data: the Riiid-format conversions in ../shared/data/real/<dataset>/riiid/
(read in place, never copied; see its README). ``statics2011_dkvmn_qid`` is
STATICS with the question id as the skill (staged in a temp dir: questions.csv
rewritten, train.csv linked): the input the DKVMN paper's DKT figure used.

Protocol, per dataset:

1. ETL: ``kt.etl.run_etl`` (the reference engine), skill = first tag (docs/contracts.md §4.2).
2. Splits: where the source has a train/test split (``riiid/splits.csv``: the
   3-line datasets), its test users are the test split and 10% of its train
   users (CRC32 of the user id mod 10 == 0) are carved out as validation.
   Otherwise (EdNet KT1, Kaggle Riiid users) the contract's split: CRC32 mod
   10, 0-7 train, 8 valid, 9 test.
3. Training: ``kt.train.train`` with ``threads`` torch threads; early stopping
   on valid AUC; with ``--grid``, every combination is trained and the one with
   the best valid AUC kept (never the test split). The candidates and the choice
   are written into the chosen model.json under "selection"; temperature
   scaling is fitted on valid by training itself (model.json "temperature").
4. Evaluation: ``kt.evaluate.evaluate`` on test with the model's temperature:
   DKT, the per-skill base rate (train split) and the Phase-1 Bayesian estimate,
   all on the same targets (every answer of a window but its first), and a
   reliability diagram per dataset in --out.

Prints one table (and --json writes every figure); wall time is ETL + training
+ evaluation of that dataset.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
import zlib

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
from kt.schema import SPLITS  # noqa: E402
from kt.train import Hyperparameters, parse_hyperparameters, train  # noqa: E402

DEFAULT_DATA = os.path.join(REPO, "..", "shared", "data", "real")
VALID_BUCKETS = (0,)  # CRC32(user_id) mod 10 of the original train users carved out as validation: 10%
# Published DKT test AUCs (../shared/data/real/README.md "Published anchors"; status there: C/S/U).
PUBLISHED = {
    "assist2009_dkt": [("Piech et al. 2015, these files", 0.86, "S"), ("Xiong et al. 2016, de-duplicated", 0.75, "S"),
                       ("pyKT, question-level 5-fold", 0.7541, "S")],
    "assist2009_dkvmn": [("DKVMN paper's DKT, these files", 0.8053, "U")],
    "statics2011_dkvmn": [("DKVMN paper's DKT, these files (question ids)", 0.8020, "U"),
                          ("pyKT, Statics2011", 0.8222, "S")],
    "statics2011_dkvmn_qid": [("DKVMN paper's DKT, these files (question ids)", 0.8020, "U"),
                              ("pyKT, Statics2011", 0.8222, "S")],
    "ednet_kt1": [("pyKT family, ednet_small (other users)", 0.6133, "S")],
    "riiid_kaggle_users": [],
}
# pyKT 0.0.38's DKT on these same Riiid-format files, contract split, this machine (../shared/notes/peers.md).
PEER_PYKT = {"assist2009_dkt": 0.8677, "assist2009_dkvmn": 0.8183, "statics2011_dkvmn": 0.7545, "ednet_kt1": 0.6112}
DATASETS = tuple(PUBLISHED)


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


def original_splits(raw: str) -> dict[int, str] | None:
    """user_id -> train/valid/test from the source's splits.csv (valid carved from train), or None."""
    path = os.path.join(raw, "splits.csv")
    if not os.path.exists(path):
        return None
    table = pacsv.read_csv(path)
    out = {}
    for user, split in zip(table["user_id"].to_pylist(), table["split"].to_pylist()):
        if split == "test":
            out[int(user)] = "test"
        else:
            out[int(user)] = "valid" if zlib.crc32(str(int(user)).encode()) % 10 in VALID_BUCKETS else "train"
    return out


def resplit(processed: str, splits: dict[int, str], out: str) -> None:
    """A copy of a processed prefix whose split column follows ``splits`` (same layout, skills and manifest)."""
    sequences = read_sequences(processed)
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


def run_dataset(name: str, data: str, work: str, out_dir: str, base: Hyperparameters, candidates: list[dict]) -> dict:
    started = time.monotonic()
    os.makedirs(work, exist_ok=True)
    raw = raw_dir(data, name, work)
    manifest = etl.run_etl(raw, os.path.join(work, "etl"), fmt="riiid",
                           skill_mappings=os.path.join(work, "no-skill-mappings.json"), progress=False)
    splits = original_splits(raw)
    processed = os.path.join(work, "processed")
    if splits is None:
        processed = os.path.join(work, "etl")
        split_rule = "contract: CRC32(user_id) mod 10, 0-7 train, 8 valid, 9 test"
    else:
        resplit(os.path.join(work, "etl"), splits, processed)
        split_rule = "original train/test (splits.csv); valid = train users with CRC32(user_id) mod 10 == 0"

    tried = []
    for i, overrides in enumerate(candidates):
        hp = parse_hyperparameters(overrides, base)
        paths = TrainingPaths(train_channel=processed, model_dir=os.path.join(work, f"model-{i}"),
                              checkpoint_dir=os.path.join(work, f"checkpoints-{i}"),
                              output_dir=os.path.join(work, f"output-{i}"), job_name=f"quality-{name}-{i}")
        t0 = time.monotonic()
        info = train(hp, paths)
        tried.append({"overrides": overrides, "valid_auc": info["metrics"]["valid"]["auc"],
                      "epochs": info["metrics"]["epochs"], "seconds": round(time.monotonic() - t0, 1),
                      "model_dir": paths.model_dir})
        print(f"  {name} candidate {overrides or 'defaults'}: valid AUC {tried[-1]['valid_auc']:.4f} "
              f"after {tried[-1]['epochs']} epochs, {tried[-1]['seconds']:.0f} s", flush=True)
    best = max(tried, key=lambda c: c["valid_auc"])

    model_json = os.path.join(best["model_dir"], "model.json")
    with open(model_json) as f:
        info = json.load(f)
    info["selection"] = {"selected_on": "valid AUC", "split_rule": split_rule,
                         "candidates": [{k: c[k] for k in ("overrides", "valid_auc", "epochs")} for c in tried]}
    with open(model_json, "w") as f:
        json.dump(info, f, indent=1)
    shutil.copyfile(model_json, os.path.join(out_dir, f"{name}.model.json"))

    loaded = inference.model_fn(best["model_dir"])
    vocab = SkillVocab(loaded.skill_ids)
    report = evaluate.evaluate(loaded.model, vocab, processed, temperature=loaded.temperature,
                               reliability_png=os.path.join(out_dir, f"{name}.reliability.png"))
    uncalibrated = evaluate.evaluate(loaded.model, vocab, processed)["dkt"]
    test = read_sequences(processed, "test")
    return {
        "dataset": name, "users": manifest["users"], "answers": manifest["rows_out"],
        "skills": len(loaded.skill_ids), "test_users": test.num_rows, "split_rule": split_rule,
        "hyperparameters": info["hyperparameters"], "selection": info["selection"],
        "temperature": loaded.temperature, "calibration": info["calibration"],
        "report": report, "dkt_uncalibrated": uncalibrated,
        "published": PUBLISHED[name], "peer_pykt": PEER_PYKT.get(name),
        "seconds": round(time.monotonic() - started, 1),
    }


def format_table(results: list[dict]) -> str:
    head = ("| dataset | users | answers | skills | DKT AUC | acc | log loss | ECE (before T) | T | base rate AUC / ECE "
            "| Bayesian AUC / ECE | published DKT AUC | pyKT DKT, these files | wall |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        dkt, base, bayes = r["report"]["dkt"], r["report"]["base_rate"], r["report"]["bayes"]
        published = "; ".join(f"{v:.3f} {who} ({status})" for who, v, status in r["published"]) or "none"
        peer = f"{r['peer_pykt']:.3f}" if r["peer_pykt"] else "—"
        lines.append(
            f"| {r['dataset']} | {r['users']:,} | {r['answers']:,} | {r['skills']} | {dkt['auc']:.4f} | "
            f"{dkt['accuracy']:.4f} | {dkt['log_loss']:.4f} | {dkt['ece']:.4f} ({r['dkt_uncalibrated']['ece']:.4f}) | "
            f"{r['temperature']:.3f} | {base['auc']:.4f} / {base['ece']:.4f} | {bayes['auc']:.4f} / {bayes['ece']:.4f} | "
            f"{published} | {peer} | {r['seconds']:.0f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS), metavar="NAME",
                        help=f"which datasets (default all: {', '.join(DATASETS)})")
    parser.add_argument("--data", default=DEFAULT_DATA, help="the real data folder (default ../shared/data/real)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    parser.add_argument("--grid", nargs="*", default=[], metavar="KEY=V1,V2",
                        help="hyperparameter candidates, chosen on valid AUC (e.g. hidden=64,128 lr=1e-3,2e-3)")
    parser.add_argument("--hp", nargs="*", default=[], metavar="KEY=VALUE",
                        help="fixed hyperparameters for every candidate (kt.train.Hyperparameters fields)")
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "kt-quality"),
                        help="reliability diagrams, chosen model.json files and results.json (default /tmp/kt-quality)")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(args.threads)
    base = parse_hyperparameters(dict(p.split("=", 1) for p in args.hp), Hyperparameters(threads=args.threads))
    candidates = grid(args.grid) if args.grid else [{}]
    os.makedirs(args.out, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="kt-quality-") as tmp:
        for name in args.datasets:
            print(f"{name}: ETL, {len(candidates)} training(s), evaluation", flush=True)
            results.append(run_dataset(name, args.data, os.path.join(tmp, name), args.out, base, candidates))
            print(format_table(results[-1:]), flush=True)
    print()
    print(format_table(results))
    print(f"\nreliability diagrams and model.json files in {args.out}")
    for path in filter(None, [args.json, os.path.join(args.out, "results.json")]):
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
