"""ETL throughput and memory: Spark (kt.spark_etl, local[*]) vs the Python reference (kt.etl), same data, same run.

    .venv/bin/python bench/etl.py                      # 1M and 5M interactions (Riiid format)
    .venv/bin/python bench/etl.py --sizes 200000       # a quick look
    .venv/bin/python bench/etl.py --sizes 5000000 --repeat 5  # medians of 5 alternating runs
    .venv/bin/python bench/etl.py --kt1 --sizes 1000000 # EdNet KT1: per-user files vs consolidated shards

Synthetic raw data, written fast with numpy/pyarrow (kt.sample simulates
students one answer at a time, far too slow at this size): ~170 answers per
user as in EdNet, 13,523 questions over 188 skills, 2% lectures, timestamp
ties inside bundles, a few malformed rows of several kinds.

Each engine runs in its own subprocess (``--engine python|spark``), so its
peak RSS is its own: the process tree (Python, and for Spark its JVM) is
sampled every 0.2 s with psutil and the largest sum is kept. Wall time is the
whole subprocess (interpreter, JVM and SparkSession start included); the
"etl s" column is the manifest's duration_s (the ETL call alone). After both
runs the outputs are compared (manifest counts and every sequence).
``--repeat N`` runs the two engines N times, alternating, and reports each
one's median wall time with its range: on a shared host identical runs move
by +-10 s, so one run is an anecdote (bench/README.md).
Targets (issue 3), on this 2-core box: Spark 5M rows end to end < 60 s;
peak RSS < 4 GiB for each engine.

``--kt1`` writes the same rows as EdNet KT1 per-user files (one ``u<id>.csv``
per ~170 answers) and as the shards ``kt ingest`` consolidates them into
(``kt.ingest.KT1Shards``, timed), then runs both engines on both layouts
(issue 4: "KT1's many small files consolidated"); the baseline of each row is
the per-user layout with the same engine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))

from kt.schema import KT1_QUESTION_COLUMNS, RIIID_COLUMNS, RIIID_QUESTION_COLUMNS  # noqa: E402

QUESTIONS = 13_523
SKILLS = 188
ANSWERS_PER_USER = 170
LECTURE_SHARE = 0.02
MALFORMED_SHARE = 0.0005
SAMPLE_S = 0.2
GIB = 1 << 30


def generate(raw: str, rows: int, seed: int = 0) -> None:
    """Riiid-format train.csv and questions.csv with `rows` interactions, vectorized."""
    rng = np.random.default_rng(seed)
    os.makedirs(raw, exist_ok=True)
    q = np.arange(QUESTIONS)
    tags = pc.binary_join_element_wise(
        pa.array((rng.integers(0, SKILLS, QUESTIONS) + 1).astype(str)),
        pa.array(np.where(rng.random(QUESTIONS) < 0.3, (rng.integers(0, SKILLS, QUESTIONS) + 1).astype(str), "")),
        " ")
    questions = pa.table({
        "question_id": q, "bundle_id": q, "correct_answer": rng.integers(0, 4, QUESTIONS),
        "part": rng.integers(1, 8, QUESTIONS), "tags": pc.utf8_trim_whitespace(tags)}).select(list(RIIID_QUESTION_COLUMNS))
    pacsv.write_csv(questions, os.path.join(raw, "questions.csv"))

    users = max(1, rows // ANSWERS_PER_USER)
    user_id = np.sort(rng.integers(0, users, rows)) * 37 + 115  # grouped by user, as Riiid's train.csv
    starts = np.flatnonzero(np.r_[True, np.diff(user_id) != 0])
    position = np.arange(rows) - np.repeat(starts, np.diff(np.r_[starts, rows]))
    bundle = position // 2  # pairs of answers share a container and a timestamp: ties
    timestamp = (user_id % 1000) * 10**8 + bundle * 40_000
    lecture = rng.random(rows) < LECTURE_SHARE
    content_id = np.where(lecture, rng.integers(0, 30_000, rows) + 100_000, rng.integers(0, QUESTIONS, rows))
    answered = rng.integers(0, 2, rows)
    explanation = pc.take(pa.array(["", "True", "False"]), pa.array(np.where(position == 0, 0, rng.integers(1, 3, rows))))
    elapsed = pc.take(pa.array(["", "38000.0", "21000.0", "7500.5"]),
                      pa.array(np.where(position == 0, 0, rng.integers(1, 4, rows))))
    table = pa.table({
        "row_id": np.arange(rows), "timestamp": timestamp, "user_id": user_id, "content_id": content_id,
        "content_type_id": lecture.astype(np.int8), "task_container_id": bundle,
        "user_answer": np.where(lecture, -1, rng.integers(0, 4, rows)), "answered_correctly": np.where(lecture, -1, answered),
        "prior_question_elapsed_time": elapsed, "prior_question_had_explanation": explanation,
    }).select(list(RIIID_COLUMNS))
    strings = table.cast(pa.schema([(c, pa.string()) for c in RIIID_COLUMNS]))
    bad = np.flatnonzero(rng.random(rows) < MALFORMED_SHARE)  # a few bad values of several kinds
    columns = {c: strings[c].to_numpy(zero_copy_only=False).astype(object) for c in ("user_id", "timestamp", "answered_correctly")}
    columns["user_id"][bad[0::3]] = "not-a-user"
    columns["timestamp"][bad[1::3]] = "yesterday"
    columns["answered_correctly"][bad[2::3]] = "2"
    for name, values in columns.items():
        strings = strings.set_column(strings.schema.get_field_index(name), name, pa.array(values, pa.string()))
    options = pacsv.WriteOptions(quoting_style="none")
    pacsv.write_csv(strings, os.path.join(raw, "train.csv"), write_options=options)
    with open(os.path.join(raw, "train.csv"), "ab") as f:  # a duplicate row_id and a short row
        f.write(b"0,1,115,1,0,0,0,1,,\n1,2,115\n")


def generate_kt1(riiid_raw: str, per_user: str, shards: str) -> float:
    """The Riiid rows as KT1 per-user files (lectures dropped, answers as letters) and as ingest's shards.

    Returns the seconds the consolidation took (kt.ingest.KT1Shards over every user file's bytes).
    """
    from kt.ingest import KT1Shards

    rows = pacsv.read_csv(os.path.join(riiid_raw, "train.csv"),
                          parse_options=pacsv.ParseOptions(invalid_row_handler=lambda row: "skip"),
                          convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in RIIID_COLUMNS}))
    rows = rows.filter(pc.not_equal(rows["content_type_id"], "1"))
    answer = pc.take(pa.array(["a", "b", "c", "d", "x"]),
                     pc.fill_null(pc.cast(pc.if_else(pc.match_substring_regex(rows["user_answer"], "^[0-3]$"),
                                                     rows["user_answer"], "4"), pa.int64()), 4))
    kt1 = pa.table({"timestamp": rows["timestamp"], "solving_id": rows["task_container_id"],
                    "question_id": pc.binary_join_element_wise("q", rows["content_id"], ""),
                    "user_answer": answer, "elapsed_time": pc.fill_null(rows["prior_question_elapsed_time"], "")})
    questions = pacsv.read_csv(os.path.join(riiid_raw, "questions.csv"),
                               convert_options=pacsv.ConvertOptions(column_types={"tags": pa.string()}))
    n = questions.num_rows
    contents = pa.table({
        "question_id": pc.binary_join_element_wise("q", pc.cast(questions["question_id"], pa.string()), ""),
        "bundle_id": pc.cast(questions["bundle_id"], pa.string()), "explanation_id": pa.array([""] * n),
        "correct_answer": pc.take(pa.array(["a", "b", "c", "d"]), questions["correct_answer"]),
        "part": questions["part"], "tags": pc.replace_substring(questions["tags"], " ", ";"),
        "deployed_at": pa.array([0] * n)}).select(list(KT1_QUESTION_COLUMNS))
    for root in (per_user, shards):
        os.makedirs(os.path.join(root, "contents"), exist_ok=True)
        pacsv.write_csv(contents, os.path.join(root, "contents", "questions.csv"))
    os.makedirs(os.path.join(per_user, "KT1"))
    user = rows["user_id"].to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    for start, end in zip(starts, np.r_[starts[1:], len(user)]):  # a malformed user id splits a user's rows in two
        path = os.path.join(per_user, "KT1", f"u{user[start]}.csv" if str(user[start]).isdigit() else "ubad.csv")
        options = pacsv.WriteOptions(quoting_style="none", include_header=not os.path.exists(path))
        with open(path, "ab") as f:
            pacsv.write_csv(kt1.slice(start, end - start), f, write_options=options)
    started = time.monotonic()
    consolidated = KT1Shards(shards)
    for name in sorted(os.listdir(os.path.join(per_user, "KT1"))):
        with open(os.path.join(per_user, "KT1", name), "rb") as f:
            consolidated.add(name, f.read())
    consolidated.close()
    return time.monotonic() - started


def child(engine: str, raw: str, processed: str) -> None:
    """Run one engine (in this subprocess) and print its manifest as JSON."""
    if engine == "python":
        from kt import etl

        manifest = etl.run_etl(raw, processed, progress=False)
    else:
        from kt import spark_etl

        manifest = spark_etl.run(raw, processed)
    print(json.dumps({k: v for k, v in manifest.items() if k != "inputs"}))


def measure(engine: str, raw: str, processed: str) -> dict:
    """Wall time and peak RSS (sum over the process tree, sampled) of one engine's subprocess."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, __file__, "--child", engine, raw, processed],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.NoSuchProcess:
            pass
        time.sleep(SAMPLE_S)
    wall = time.monotonic() - started
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} failed ({proc.returncode})")
    manifest = json.loads(out.strip().splitlines()[-1])
    return {"engine": engine, "wall_s": wall, "etl_s": manifest["duration_s"], "rows_in": manifest["rows_in"],
            "peak_rss_gib": peak / GIB, "manifest": manifest}


def same_output(python_out: str, spark_out: str, a: dict, b: dict) -> bool:
    from kt.data import read_sequences

    drop = {"engine", "duration_s", "created_at", "buckets"}
    counts_equal = {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    return counts_equal and read_sequences(python_out).equals(read_sequences(spark_out))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each engine per size, alternating; the table shows medians (default 1; not with --kt1)")
    parser.add_argument("--keep", help="directory for the data (default: a temporary one)")
    parser.add_argument("--kt1", action="store_true", help="EdNet KT1 per-user files vs consolidated shards")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat: at least 1 run")
    if args.kt1:
        return main_kt1(args)
    print(f"{'rows':>10} {'engine':>7} {'wall s':>7} {'etl s':>7} {'rows/s':>9} {'peak RSS GiB':>12} {'wall vs python':>14}"
          f"{'  wall range (runs)' if args.repeat > 1 else ''}")
    with tempfile.TemporaryDirectory(prefix="kt-bench-etl-", dir=args.keep) as tmp:
        for size in args.sizes:
            raw = os.path.join(tmp, f"raw-{size}")
            started = time.monotonic()
            generate(raw, size)
            mb = os.path.getsize(os.path.join(raw, "train.csv")) / 1e6
            print(f"# {size:,} rows: {mb:.0f} MB of CSV generated in {time.monotonic() - started:.1f} s", flush=True)
            runs = {"python": [], "spark": []}
            for attempt in range(args.repeat):
                for engine in runs:
                    runs[engine].append(measure(engine, raw, os.path.join(tmp, f"{engine}-{size}")))
                    if args.repeat > 1:
                        print(f"#   run {attempt + 1}/{args.repeat} {engine}: {runs[engine][-1]['wall_s']:.1f} s", flush=True)
            results = {engine: typical(r) for engine, r in runs.items()}
            for engine, r in results.items():
                ratio = r["wall_s"] / results["python"]["wall_s"]
                spread = f"  {r['wall_min_s']:.1f}-{r['wall_max_s']:.1f} s ({r['runs']})" if args.repeat > 1 else ""
                print(f"{size:>10,} {engine:>7} {r['wall_s']:>7.1f} {r['etl_s']:>7.1f} {r['rows_in'] / r['wall_s']:>9,.0f} "
                      f"{r['peak_rss_gib']:>12.2f} {ratio:>14.2f}{spread}", flush=True)
            equal = same_output(os.path.join(tmp, f"python-{size}"), os.path.join(tmp, f"spark-{size}"),
                                results["python"]["manifest"], results["spark"]["manifest"])
            print(f"# identical output: {equal}", flush=True)


def typical(runs: list[dict]) -> dict:
    """One engine's runs as one row: median wall and etl time, their range, the largest peak RSS."""
    walls = [r["wall_s"] for r in runs]
    return {**runs[-1], "wall_s": float(np.median(walls)), "etl_s": float(np.median([r["etl_s"] for r in runs])),
            "peak_rss_gib": max(r["peak_rss_gib"] for r in runs), "wall_min_s": min(walls), "wall_max_s": max(walls),
            "runs": len(runs)}


def main_kt1(args: argparse.Namespace) -> None:
    print(f"{'rows':>10} {'engine':>7} {'layout':>9} {'files':>7} {'wall s':>7} {'etl s':>7} {'rows/s':>9} "
          f"{'peak RSS GiB':>12} {'wall vs files':>13}")
    with tempfile.TemporaryDirectory(prefix="kt-bench-etl-kt1-", dir=args.keep) as tmp:
        for size in args.sizes:
            riiid, per_user, shards = (os.path.join(tmp, f"{kind}-{size}") for kind in ("riiid", "files", "shards"))
            generate(riiid, size)
            consolidation_s = generate_kt1(riiid, per_user, shards)
            layouts = {"files": per_user, "shards": shards}
            files = {k: len(os.listdir(os.path.join(root, "KT1"))) for k, root in layouts.items()}
            print(f"# {size:,} rows: {files['files']:,} user files; consolidated into {files['shards']} shard(s) "
                  f"in {consolidation_s:.1f} s", flush=True)
            results = {}
            for engine in ("python", "spark"):
                for layout, root in layouts.items():
                    r = results[engine, layout] = measure(engine, root, os.path.join(tmp, f"{engine}-{layout}-{size}"))
                    ratio = r["wall_s"] / results[engine, "files"]["wall_s"]
                    print(f"{size:>10,} {engine:>7} {layout:>9} {files[layout]:>7,} {r['wall_s']:>7.1f} "
                          f"{r['etl_s']:>7.1f} {r['rows_in'] / r['wall_s']:>9,.0f} {r['peak_rss_gib']:>12.2f} "
                          f"{ratio:>13.2f}", flush=True)
            equal = all(same_output(os.path.join(tmp, f"python-files-{size}"), os.path.join(tmp, f"{e}-{l}-{size}"),
                                    results["python", "files"]["manifest"], results[e, l]["manifest"])
                        for e, l in results)
            print(f"# identical output (all four): {equal}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(*sys.argv[2:])
    else:
        main()
