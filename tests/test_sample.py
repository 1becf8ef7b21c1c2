"""The simulator: deterministic per seed, realistic features, an oracle for every answer."""

from __future__ import annotations

import csv

import numpy as np
import pyarrow.parquet as pq

from kt import lake, sample
from kt.topics import DEFAULT_SKILL_TOPICS, TOPICS


def _files(root: str) -> dict[str, str]:
    return {f[len(root):]: lake.sha256(f) for f in lake.list_files(root)}


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    sample.generate(a, users=30, skills=8, seed=1, tutor_users=3)
    sample.generate(b, users=30, skills=8, seed=1, tutor_users=3)
    sample.generate(c, users=30, skills=8, seed=2, tutor_users=3)
    assert _files(a) == _files(b)
    assert _files(a)["/raw/ednet/train.csv"] != _files(c)["/raw/ednet/train.csv"]


def test_riiid_sample_has_what_real_data_has(tmp_path):
    root = str(tmp_path)
    counts = sample.generate(root, users=60, skills=16, seed=4, tutor_users=5)
    rows = list(csv.DictReader(open(f"{root}/raw/ednet/train.csv")))
    questions = list(csv.DictReader(open(f"{root}/raw/ednet/questions.csv")))
    assert counts["lectures"] == sum(r["content_type_id"] == "1" for r in rows) > 0
    assert any(len(q["tags"].split()) > 1 for q in questions)  # multi-tag questions
    keys = [(r["user_id"], r["timestamp"]) for r in rows if r["content_type_id"] == "0"]
    assert len(keys) > len(set(keys))  # bundles share a timestamp: ties
    oracle = pq.read_table(f"{root}/sample/oracle.parquet")
    assert oracle.num_rows == counts["answers"]
    p = oracle["p_correct"].to_numpy()
    assert ((p > 0) & (p < 1)).all()
    assert counts["malformed"] == 16
    assert counts["tutor_answers"] == len(
        [line for f in lake.list_files(f"{root}/events/answers") for line in lake.read_text(f).splitlines()]
    )


def test_students_learn_with_practice():
    import numpy as np

    rng = np.random.default_rng(0)
    world = sample.make_world(8, rng)
    early, late = [], []
    for _ in range(300):
        answers = sample.simulate_student(world, rng, 200)
        early += [p for _, p, _ in answers[:20]]
        late += [p for _, p, _ in answers[-20:]]
    assert np.mean(late) > np.mean(early) + 0.05


def test_kt1_format_files(tmp_path):
    root = str(tmp_path)
    sample.generate(root, users=10, skills=8, fmt="kt1", seed=4, tutor_users=0)
    files = lake.list_files(f"{root}/raw/ednet/KT1")
    assert len(files) == 10 and all(f.rsplit("/", 1)[1].startswith("u") for f in files)
    header = open(files[0]).readline().strip()
    assert header == "timestamp,solving_id,question_id,user_answer,elapsed_time"
    assert open(f"{root}/raw/ednet/contents/questions.csv").readline().startswith("question_id,bundle_id,explanation_id")


def test_the_simulated_skill_mappings_extend_the_seeds():
    """Skills 1-8 carry the seed's topics; further skills go round the 8 topics in the chart's order."""
    world = sample.make_world(20, np.random.default_rng(0), questions_per_skill=2)
    mappings = world.skill_mappings()
    assert {k: mappings[k] for k in DEFAULT_SKILL_TOPICS} == DEFAULT_SKILL_TOPICS
    assert [mappings[str(s)] for s in range(9, 21)] == [TOPICS[(s - 1) % 8] for s in range(9, 21)]
