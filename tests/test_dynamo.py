"""kt.dynamo's answers-once rule and Phase 1 counters, on moto (in process).

    .venv/bin/python -m pytest -q tests/test_dynamo.py
"""

from __future__ import annotations

from fractions import Fraction

from botocore.exceptions import ClientError

from kt import bayes, dynamo

HISTORY, MASTERY = "kt-history", "kt-mastery"


def answer(n: int, skill: int, correct: int, user: str = "u1", second: int | None = None, **extra) -> dict:
    second = n if second is None else second
    return {"user_id": user, "answer_id": f"a{n}", "skill_id": skill, "correct": correct,
            "answered_at": f"2026-11-24T10:{second // 60:02d}:{second % 60:02d}.000Z", **extra}


def transact(ddb, a: dict) -> str:
    try:
        ddb.transact_write_items(**dynamo.answer_transaction(a, HISTORY, MASTERY))
    except ClientError as e:
        return dynamo.answer_outcome(e.response["CancellationReasons"])
    return "stored"


def test_lake_lines_of_one_answer_id_are_loaded_once_first_line_wins(ddb):
    lines = [answer(1, 3, 1, content_id=7), answer(1, 3, 1, second=50, content_id=7),  # a re-stamped retry
             answer(1, 4, 0), answer(2, 5, 0), answer(1, 3, 1, user="u2")]  # other content; other answers
    assert dynamo.put_history(ddb, HISTORY, lines) == 3
    history = dynamo.user_history(ddb, HISTORY, "u1")
    assert [(h["answer_id"], h["skill_id"], h["ts"]) for h in history] == [
        ("a1", 3, "2026-11-24T10:00:01.000Z#a1"), ("a2", 5, "2026-11-24T10:00:02.000Z#a2")]
    assert dynamo.users_active_on(ddb, HISTORY, "2026-11-24") == {"u1", "u2"}  # markers have no day
    markers = [i["ts"] for i in dynamo.scan_all(ddb, HISTORY) if i["ts"] >= dynamo.MARKERS_FROM]
    assert sorted(markers) == sorted(["answer#a1", "content#3#1#7#a1", "answer#a2", "content#5#0#-#a2"] * 1
                                     + ["answer#a1", "content#3#1#-#a1"])
    # the markers loaded from the lake make the transaction refuse a retry, re-stamped or not
    assert transact(ddb, answer(1, 3, 1, second=59, content_id=7)) == "duplicate"
    assert transact(ddb, answer(1, 3, 0, content_id=7)) == "conflict"
    assert transact(ddb, answer(3, 3, 0)) == "stored"


def test_the_lakes_readers_count_a_restamped_answer_once(tmp_path):
    """Drift and the refresh read the lake through read_answer_events: a retry's second line is not a second answer."""
    import json

    from kt import refresh

    day = tmp_path / "events" / "answers" / "day=2026-11-24"
    day.mkdir(parents=True)
    lines = [answer(1, 3, 1), answer(1, 3, 1, second=50), answer(2, 4, 0), answer(1, 3, 1, user="u2")]
    (day / "part-0.jsonl").write_text("".join(json.dumps(a) + "\n" for a in lines))
    read = refresh.read_answer_events(str(tmp_path))
    assert [(a["user_id"], a["answer_id"], a["answered_at"]) for a in read] == [
        ("u1", "a1", "2026-11-24T10:00:01.000Z"), ("u1", "a2", "2026-11-24T10:00:02.000Z"),
        ("u2", "a1", "2026-11-24T10:00:01.000Z")]


def test_an_answer_stored_before_the_markers_is_a_duplicate_not_a_second_copy(ddb):
    old = answer(1, 3, 1)
    ddb.put_item(TableName=HISTORY, Item=dynamo.serialize(dynamo.history_item(old)))  # a pre-marker item
    assert transact(ddb, old) == "duplicate"
    assert len(dynamo.user_history(ddb, HISTORY, "u1")) == 1


def test_counters_added_by_transactions_equal_those_set_from_history(ddb):
    answers = [answer(n, [1, 2, 9][n % 3], n % 2, user=f"u{n % 2}") for n in range(12)]
    for a in answers:
        assert transact(ddb, a) == "stored"
    added = {u: dynamo.get_mastery(ddb, MASTERY, u) for u in ("u0", "u1")}
    ddb.delete_item(TableName=MASTERY, Key={"user_id": {"S": "u0"}})
    ddb.delete_item(TableName=MASTERY, Key={"user_id": {"S": "u1"}})
    assert dynamo.set_bayes_counters(ddb, HISTORY, MASTERY) == 2
    assert {u: dynamo.get_mastery(ddb, MASTERY, u) for u in ("u0", "u1")} == added
    assert added["u1"][dynamo.BAYES_N] == 6 and added["u1"][dynamo.BAYES_AS_OF] == answers[11]["answered_at"]
    assert dynamo.skill_counts(added["u0"]) == {1: (2, 0), 2: (2, 0), 9: (2, 0)}


def test_a_dkt_write_keeps_the_counters_and_never_goes_back_in_time(ddb):
    transact(ddb, answer(1, 3, 1))
    row = {"user_id": "u1", "mastery": {"3": 0.7}, "topic_mastery": {"geometry": 0.7},
           "next_skill_recommendation": None, "predicted_accuracy": 0.7, "model_version": "m1", "source": "dkt",
           "as_of": "2026-11-24T10:00:01.000Z", "updated_at": "2026-11-25T02:00:00+00:00", "n_interactions": 1}
    assert dynamo.put_mastery_conditional(ddb, MASTERY, row)  # a row of counters only has no as_of
    assert not dynamo.put_mastery_conditional(ddb, MASTERY, row)  # same evidence: no-op
    assert not dynamo.put_mastery_conditional(ddb, MASTERY, {**row, "as_of": "2026-11-23T00:00:00.000Z"})
    transact(ddb, answer(2, 3, 0))
    stored = dynamo.get_mastery(ddb, MASTERY, "u1")
    assert "next_skill_recommendation" not in stored and stored["mastery"] == {"3": 0.7}
    assert dynamo.skill_counts(stored) == {3: (2, 1)} and stored[dynamo.BAYES_N] == 2
    assert dynamo.put_mastery_conditional(ddb, MASTERY, {**row, "as_of": "2026-11-24T10:00:02.000Z",
                                                         "next_skill_recommendation": 3})
    assert dynamo.get_mastery(ddb, MASTERY, "u1")["next_skill_recommendation"] == 3


def test_rounded_mean_is_the_exact_posterior_mean_rounded_half_up():
    for answers in range(0, 300):
        for right in range(0, answers + 1, max(1, answers // 17)):
            exact = Fraction(right + 1, answers + 2) * bayes.SCALE
            expected = int(exact) + (1 if exact - int(exact) >= Fraction(1, 2) else 0)
            assert bayes.rounded_mean(right, answers) == expected, (right, answers)
    assert bayes.rounded_mean(0, 30) == 313  # 1/32 = 0.03125: half up, where round() gives 0.0312
