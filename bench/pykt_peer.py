"""pyKT 0.0.38's DKT trained by pyKT's own code on our split: its training throughput, for bench/train.py --peer.

    make .venv-pykt/.installed
    .venv-pykt/bin/python bench/pykt_peer.py DIR --epochs 3 --threads 2 --json out.json

Runs in .venv-pykt (requirements-pykt.in), never in the app's venv. DIR holds
what bench/train.py writes from our processed lake: ``data.txt`` (pyKT's
6-line input format: uid,length / questions / concepts / responses /
timestamps / usetimes, skill indices as concepts, so questions = skills as in
../shared/notes/peers.md) and ``folds.json`` (uid -> 1 for our train split,
0 for valid). From there everything is pyKT's: ``read_data`` and
``generate_sequences`` (non-overlapping windows of 200, padded, windows under
3 answers dropped), ``KTDataset`` in a DataLoader as ``init_dataset4train``
makes them,
``init_model("dkt", ...)`` and ``train_model`` (its loop, with validation
after every epoch). Throughput counts the positions pyKT's loss is taken on
(the select masks: every answer but a window's first, as ours counts) per
second of ``train_model`` outside its ``evaluate`` calls, which are timed and
subtracted, as ours leaves out validation. One shim: pyKT's dataset builds
its tensors with torch.cuda's tensor types, which CPU torch refuses; they are
replaced by the CPU ones.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", help="data.txt and folds.json from bench/train.py; pyKT's files are written here")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--emb-size", type=int, default=128, help="pyKT DKT's LSTM width (peers.md: 1 x 128)")
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--lr", type=float, default=1e-3, help="pyKT's example DKT script's learning rate")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)

    import torch
    from pykt.datasets import data_loader
    from pykt.models import init_model
    from pykt.preprocess.split_datasets import generate_sequences, read_data
    from pykt.utils import set_seed

    pykt_train = importlib.import_module("pykt.models.train_model")  # the module: the package exports the function
    # pyKT 0.0.38's KTDataset builds its tensors with torch.cuda's LongTensor/FloatTensor, which a CPU build of
    # torch refuses; the CPU types are the same tensors on the CPU (the one change made to pyKT's code path).
    data_loader.LongTensor, data_loader.FloatTensor = torch.LongTensor, torch.FloatTensor
    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    df, effective_keys = read_data(os.path.join(args.dir, "data.txt"))
    with open(os.path.join(args.dir, "folds.json")) as f:
        folds = json.load(f)
    df["fold"] = df["uid"].map(folds)
    effective_keys.add("fold")
    path = os.path.join(args.dir, "train_valid_sequences.csv")
    generate_sequences(df, effective_keys, min_seq_len=3, maxlen=200).to_csv(path, index=False)
    num_c = 1 + max(int(c) for row in df["concepts"] for c in row.split(","))
    # as pyKT's init_dataset4train builds them (it also wants test files, which a throughput run has no use for)
    train_loader, valid_loader = (
        torch.utils.data.DataLoader(data_loader.KTDataset(path, ["concepts"], {fold}), batch_size=args.batch_size)
        for fold in (1, 0))  # our train users are fold 1, valid fold 0
    answers = int(train_loader.dataset.dori["smasks"].sum())  # the positions cal_loss is taken on, per epoch
    model = init_model("dkt", {"emb_size": args.emb_size, "dropout": args.dropout},
                       {"num_c": num_c, "emb_path": ""}, "qid")
    optimizer = torch.optim.Adam(model.parameters(), args.lr)

    evaluating = {"seconds": 0.0, "aucs": []}
    evaluate = pykt_train.evaluate

    def timed_evaluate(*a, **kw):
        started = time.monotonic()
        auc, acc = evaluate(*a, **kw)
        evaluating["seconds"] += time.monotonic() - started
        evaluating["aucs"].append(auc)
        return auc, acc

    pykt_train.evaluate = timed_evaluate  # train_model calls the module's name after every epoch
    started = time.monotonic()
    pykt_train.train_model(model, train_loader, valid_loader, args.epochs, optimizer, args.dir)
    seconds = time.monotonic() - started - evaluating["seconds"]
    result = {"answers_per_s": answers * args.epochs / seconds, "answers_per_epoch": answers,
              "train_windows": len(train_loader.dataset), "epochs": args.epochs, "train_seconds": seconds,
              "valid_auc": evaluating["aucs"], "threads": torch.get_num_threads(), "torch": torch.__version__,
              "model": {"name": "pyKT DKT", "emb_size": args.emb_size, "layers": 1, "dropout": args.dropout,
                        "lr": args.lr, "batch_size": args.batch_size}}
    print(json.dumps(result), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
