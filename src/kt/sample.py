"""Sample EdNet data from simulated students who learn with practice.

    kt sample --users 2000 --skills 40 --lake .kt/lake [--format riiid|kt1] [--seed 7]

The simulator is an IRT model with learning: P(correct) = sigmoid(ability +
knowledge[skill] - difficulty[question]), where knowledge starts from a
topic-correlated prior and grows with each attempt (more after a mistake with
an explanation). It writes the raw files in Riiid or EdNet KT1 format, a
skill->topic mapping, a few malformed rows of every kind the ETL quarantines,
the simulator's true P(correct) per answer (``sample/oracle.parquet``, so a
model can be compared with the best possible AUC) and a few days of tutor
answers under ``events/answers/`` for the nightly refresh.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kt import lake
from kt.schema import KT1_COLUMNS, KT1_QUESTION_COLUMNS, RIIID_COLUMNS, RIIID_QUESTION_COLUMNS
from kt.topics import TOPICS

log = logging.getLogger(__name__)

FIRST_TIMESTAMP_MS = 1_483_228_800_000  # 2017-01-01, when EdNet starts
LECTURE_ID_BASE = 90_000
TUTOR_FIRST_DAY = date(2026, 11, 22)
ABILITY_SD = 1.5
TOPIC_SD = 0.3
DIFFICULTY_SD = 0.2
LEARNING_RATE = (0.05, 0.15)  # logit gain per answer, per student: uniform range
TRANSFER = 0.3


@dataclass(frozen=True)
class World:
    """The questions, skills and topics every simulated student shares."""

    num_skills: int
    skill_ids: np.ndarray  # (S,) skill ids as the data speaks them (first tag)
    skill_topic: np.ndarray  # (S,) index into TOPICS
    question_skills: list[list[int]]  # per question: skill indices, first = primary
    questions_of_skill: list[list[int]]  # per skill: questions whose primary tag it is
    topic_skills: list[list[int]]  # per topic: its skills
    question_difficulty: np.ndarray  # (Q,)
    question_part: np.ndarray  # (Q,)
    correct_answer: np.ndarray  # (Q,) 0..3
    first_question_id: int = 1

    @property
    def num_questions(self) -> int:
        return len(self.question_skills)

    def skill_mappings(self) -> dict[str, str]:
        return {str(int(s)): TOPICS[t] for s, t in zip(self.skill_ids, self.skill_topic)}


def make_world(num_skills: int, rng: np.random.Generator, questions_per_skill: int = 12) -> World:
    """Skills spread over the 8 topics; each question tags its skill and sometimes a second one."""
    skill_ids = np.arange(1, num_skills + 1, dtype=np.int64)
    skill_topic = np.arange(num_skills) % len(TOPICS)  # skills 1-8 get the seed's topics, then round again
    question_skills: list[list[int]] = []
    for s in range(num_skills):
        for _ in range(questions_per_skill):
            tags = [s]
            if rng.random() < 0.3:  # multi-tag question: a second skill of the same topic
                same_topic = np.flatnonzero(skill_topic == skill_topic[s])
                other = int(rng.choice(same_topic))
                if other != s:
                    tags.append(other)
            question_skills.append(tags)
    n_q = len(question_skills)
    questions_of_skill: list[list[int]] = [[] for _ in range(num_skills)]
    for q, tags in enumerate(question_skills):
        questions_of_skill[tags[0]].append(q)
    return World(
        num_skills=num_skills,
        skill_ids=skill_ids,
        skill_topic=skill_topic,
        question_skills=question_skills,
        questions_of_skill=questions_of_skill,
        topic_skills=[np.flatnonzero(skill_topic == t).tolist() for t in range(len(TOPICS))],
        question_difficulty=rng.normal(0.0, DIFFICULTY_SD, n_q),
        question_part=rng.integers(1, 8, n_q),
        correct_answer=rng.integers(0, 4, n_q),
    )


def simulate_student(world: World, rng: np.random.Generator, length: int) -> list[tuple[int, float, int]]:
    """One student's answers: (question index, true P(correct), correct) in order.

    Latent state = ability (shared by all skills) + per-topic prior + practice
    gains that shrink as a skill is mastered, so what a student knows can be
    read from what they answered: a good model gets close to the oracle.
    """
    ability = rng.normal(0.0, ABILITY_SD)
    topic_prior = rng.normal(0.0, TOPIC_SD, len(TOPICS))
    knowledge = (topic_prior[world.skill_topic] - 0.5).tolist()
    learning_rate = rng.uniform(*LEARNING_RATE)
    focus = rng.permutation(world.num_skills)  # a curriculum: a few new skills at a time
    window_pick = rng.random(length)
    question_pick = rng.random(length)
    draws = rng.random(length)
    out = []
    for i in range(length):
        unlocked = min(world.num_skills, 3 + i // 15)
        active = focus[max(0, unlocked - 6) : unlocked]
        skill = int(active[int(window_pick[i] * len(active))])
        candidates = world.questions_of_skill[skill]
        q = candidates[int(question_pick[i] * len(candidates))]
        logit = ability + knowledge[skill] - world.question_difficulty[q]
        p = 1.0 / (1.0 + math.exp(-logit))
        correct = int(draws[i] < p)
        gain = learning_rate * (1.0 - p) * (1.5 if correct == 0 else 1.0)  # less to learn once mastered
        for s in world.topic_skills[world.skill_topic[skill]]:
            knowledge[s] += gain * TRANSFER  # practice on a skill also helps its topic
        for s in world.question_skills[q]:
            knowledge[s] += gain if s == skill else gain / 2
        out.append((q, p, correct))
    return out


def generate(
    lake_root: str,
    users: int = 2000,
    skills: int = 40,
    fmt: str = "riiid",
    seed: int = 7,
    tutor_users: int = 50,
    tutor_days: int = 3,
    malformed: bool = True,
) -> dict:
    """Write sample raw data, the oracle and tutor answers into the lake; return counts."""
    rng = np.random.default_rng(seed)
    world = make_world(skills, rng)
    rows: list[list] = []  # Riiid rows
    oracle_user, oracle_ts, oracle_content, oracle_p = [], [], [], []
    row_id = 0
    from tqdm import tqdm

    for user_index in tqdm(range(users), desc="simulate students", unit="user", disable=None):
        user_id = 10_000 + user_index * 7 + int(rng.integers(0, 7))
        length = int(np.clip(rng.lognormal(np.log(120), 0.8), 5, 1500))
        answers = simulate_student(world, rng, length)
        ts = FIRST_TIMESTAMP_MS + int(rng.integers(0, 2 * 365 * 86_400_000))
        n = len(answers)
        # Everything random about the timeline, drawn at once (per-answer generator calls are slow).
        lecture_before = rng.random(n) < 0.03
        lecture_ids = LECTURE_ID_BASE + rng.integers(0, 300, n)
        lecture_gap = rng.integers(10_000, 300_000, n)
        bundle_size = rng.choice([1, 1, 1, 2, 3], n)
        elapsed_ms = rng.integers(5, 60, n) * 1000.0
        explained = rng.random(n) < 0.2
        wrong_offset = rng.integers(1, 4, n)
        long_break = rng.random(n) < 0.05
        gaps = np.where(long_break, rng.uniform(3, 48, n) * 3_600_000, rng.lognormal(np.log(40_000), 1.0, n)).astype(np.int64)
        container = 0
        i = 0
        prior_elapsed: float | None = None
        prior_expl: bool | None = None
        while i < n:
            if lecture_before[i]:  # a lecture between questions: skipped and counted by the ETL
                rows.append([row_id, ts, user_id, int(lecture_ids[i]), 1, container, -1, -1, None, None])
                row_id += 1
                ts += int(lecture_gap[i])
            bundle = min(int(bundle_size[i]), n - i)
            for k in range(i, i + bundle):  # a bundle shares one timestamp: ties
                q, p, correct = answers[k]
                right = int(world.correct_answer[q])
                choice = right if correct else (right + int(wrong_offset[k])) % 4
                rows.append([row_id, ts, user_id, world.first_question_id + q, 0, container, choice, correct,
                             prior_elapsed, prior_expl])
                oracle_user.append(user_id)
                oracle_ts.append(ts)
                oracle_content.append(world.first_question_id + q)
                oracle_p.append(p)
                row_id += 1
            prior_elapsed, prior_expl = float(elapsed_ms[i]), bool(explained[i])
            container += 1
            ts += int(gaps[i])
            i += bundle

    malformed_rows = _malformed_rows(rows, row_id, rng) if malformed else []
    counts = {
        "users": users,
        "skills": skills,
        "questions": world.num_questions,
        "answers": len(oracle_p),
        "lectures": sum(1 for r in rows if r[4] == 1),
        "malformed": len(malformed_rows),
        "format": fmt,
        "seed": seed,
    }
    raw = lake.join(lake_root, "raw", "ednet")
    lake.write_text(lake.join(raw, "skill_mappings.json"), json.dumps(world.skill_mappings(), indent=1))
    if fmt == "riiid":
        _write_riiid(raw, world, rows + malformed_rows)
    elif fmt == "kt1":
        _write_kt1(raw, world, rows, malformed_rows)
    else:
        raise ValueError(f"--format must be riiid or kt1, got {fmt!r}")

    oracle = pa.table(
        {
            "user_id": pa.array(oracle_user, pa.int64()),
            "timestamp": pa.array(oracle_ts, pa.int64()),
            "content_id": pa.array(oracle_content, pa.int32()),
            "p_correct": pa.array(oracle_p, pa.float64()),
        }
    )
    with lake.open_write(lake.join(lake_root, "sample", "oracle.parquet")) as f:
        pq.write_table(oracle, f)
    counts["tutor_answers"] = write_tutor_answers(lake_root, world, rng, tutor_users, tutor_days)
    lake.write_text(lake.join(lake_root, "sample", "counts.json"), json.dumps(counts, indent=1))
    log.info("sample written", extra={"counts": counts})
    return counts


def _malformed_rows(rows: list[list], next_row_id: int, rng: np.random.Generator) -> list[list]:
    """A few rows of every kind the ETL must quarantine (a duplicate of an existing row_id too)."""
    template = next(r for r in rows if r[4] == 0)
    bad = []
    for field, value in [
        (2, "not-a-user"),  # bad_user_id
        (1, "yesterday"),  # bad_timestamp
        (3, "q?"),  # bad_content_id
        (7, 2),  # bad_answered_correctly
        (3, 987_654),  # unknown_content_id
    ]:
        for _ in range(3):
            row = list(template)
            row[0] = next_row_id
            next_row_id += 1
            row[field] = value
            bad.append(row)
    duplicate = list(rows[int(rng.integers(0, len(rows)))])
    bad.append(duplicate)  # duplicate_row_id: same row_id as an earlier row
    return bad


def _csv_text(header: tuple[str, ...], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


def _write_riiid(raw: str, world: World, rows: list[list]) -> None:
    questions = [
        [world.first_question_id + q, world.first_question_id + q, int(world.correct_answer[q]),
         int(world.question_part[q]), " ".join(str(int(world.skill_ids[s])) for s in tags)]
        for q, tags in enumerate(world.question_skills)
    ]
    lake.write_text(lake.join(raw, "questions.csv"), _csv_text(RIIID_QUESTION_COLUMNS, questions))
    formatted = [r[:9] + [("" if r[9] is None else str(bool(r[9])))] for r in rows]
    lake.write_text(lake.join(raw, "train.csv"), _csv_text(RIIID_COLUMNS, formatted))


def _write_kt1(raw: str, world: World, rows: list[list], malformed_rows: list[list]) -> None:
    letters = "abcd"
    questions = [
        [f"q{world.first_question_id + q}", f"b{world.first_question_id + q}", f"e{q}",
         letters[int(world.correct_answer[q])], int(world.question_part[q]),
         ";".join(str(int(world.skill_ids[s])) for s in tags), 1_560_000_000_000]
        for q, tags in enumerate(world.question_skills)
    ]
    lake.write_text(lake.join(raw, "contents", "questions.csv"), _csv_text(KT1_QUESTION_COLUMNS, questions))
    by_user: dict[int, list[list]] = {}
    for r in rows:
        if r[4] == 0:  # KT1 has no lectures
            by_user.setdefault(r[2], []).append(
                [r[1], r[5], f"q{r[3]}", letters[r[6]], int(r[8] or 0)]
            )
    bad_user = next(iter(by_user))
    for r in malformed_rows[:6]:  # unparsable timestamp and question ids, inside a real user's file
        by_user[bad_user].append([r[1], r[5], f"q{r[3]}", "e", 0])
    for user_id, user_rows in by_user.items():
        lake.write_text(lake.join(raw, "KT1", f"u{user_id}.csv"), _csv_text(KT1_COLUMNS, user_rows))


def write_tutor_answers(lake_root: str, world: World, rng: np.random.Generator, users: int, days: int) -> int:
    """Simulated tutor activity (separate users, same skills) as the lake's answer events."""
    total = 0
    per_day: dict[str, list[dict]] = {}
    for u in range(users):
        user_id = f"tutor-{u + 1:04d}"
        answers = simulate_student(world, rng, int(rng.integers(10, 80)))
        active_days = sorted(rng.choice(days, size=int(rng.integers(1, days + 1)), replace=False))
        chunks = np.array_split(np.arange(len(answers)), len(active_days))
        for day_offset, chunk in zip(active_days, chunks):
            day = TUTOR_FIRST_DAY + timedelta(days=int(day_offset))
            start = datetime(day.year, day.month, day.day, 15, tzinfo=timezone.utc)
            for k, index in enumerate(chunk):
                q, _, correct = answers[index]
                at = start + timedelta(seconds=40 * k + int(rng.integers(0, 30)), milliseconds=int(rng.integers(0, 1000)))
                per_day.setdefault(day.isoformat(), []).append(
                    {
                        "user_id": user_id,
                        "answer_id": f"{user_id}-{index:05d}",
                        "skill_id": int(world.skill_ids[world.question_skills[q][0]]),
                        "content_id": world.first_question_id + q,
                        "correct": int(correct),
                        "answered_at": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
                    }
                )
                total += 1
    for day, answers in per_day.items():
        body = "".join(json.dumps(a) + "\n" for a in answers)
        lake.write_text(lake.join(lake_root, "events", "answers", f"day={day}", "sample.jsonl"), body)
    return total
