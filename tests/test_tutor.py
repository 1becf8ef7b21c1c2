"""kt.tutor: the weakest-topic policy and the generateMcq payload, on plain maps and on API bodies."""

from __future__ import annotations

import math
import random

import pytest

from kt.topics import TOPICS
from kt.tutor import mcq_request, practiced_topics, select_weakest_skill, select_weakest_topic, topic_mastery_of

ROW = {
    "user_id": "u1",
    "mastery": {"1": 0.2, "2": 0.9},
    "topic_mastery": {"algebra": 0.61, "geometry": 0.48, "calculus": 0.30, "statistics": 0.48, "other": 0.01},
    "next_skill_recommendation": 1,
    "predicted_accuracy": 0.55,
}


def test_lowest_mastery_among_practiced_topics():
    assert select_weakest_topic(ROW, practiced={"algebra", "geometry"}) == "geometry"
    assert select_weakest_topic(ROW, practiced=["algebra"]) == "algebra"


def test_without_practiced_topics_every_topic_with_a_value_is_a_candidate():
    assert select_weakest_topic(ROW) == "calculus"
    assert select_weakest_topic(ROW, practiced=set()) == "calculus"  # a new student: weakest overall
    assert select_weakest_topic(ROW, practiced={"trigonometry"}) == "calculus"  # practiced but no value


def test_other_is_never_selected_and_unknown_topics_are_ignored():
    assert select_weakest_topic({"other": 0.0, "algebra": 0.9, "astrology": 0.0}) == "algebra"
    assert select_weakest_topic({"other": 0.1}) is None
    assert select_weakest_topic({}) is None


def test_ties_go_to_the_chart_order_whatever_the_dict_order():
    values = {t: 0.5 for t in TOPICS}
    for seed in range(5):
        keys = list(values)
        random.Random(seed).shuffle(keys)
        assert select_weakest_topic({k: values[k] for k in keys}) == TOPICS[0]
    # geometry and statistics tie at 0.48: geometry comes first in TOPICS
    assert select_weakest_topic(ROW, practiced={"statistics", "geometry", "algebra"}) == "geometry"
    reverse = tuple(reversed(TOPICS))
    assert select_weakest_topic(ROW, practiced={"statistics", "geometry"}, topics=reverse) == "statistics"


def test_target_difficulty_mode_picks_the_closest_mastery_ties_to_the_weaker():
    values = {"algebra": 0.9, "geometry": 0.65, "calculus": 0.75, "statistics": 0.2}
    assert select_weakest_topic(values, target=0.7) == "geometry"  # 0.65 and 0.75 both 0.05 away
    assert select_weakest_topic(values, target=0.88) == "algebra"
    assert select_weakest_topic(values, practiced={"statistics", "algebra"}, target=0.5) == "statistics"


@pytest.mark.parametrize("target", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_target_must_be_a_probability(target):
    with pytest.raises(ValueError, match="target"):
        select_weakest_topic(ROW, target=target)


def test_non_finite_and_non_numeric_values_are_skipped():
    values = {"algebra": math.nan, "geometry": None, "calculus": True, "statistics": 0.9}
    assert topic_mastery_of(values) == {"statistics": 0.9}
    assert select_weakest_topic(values) == "statistics"


def test_a_row_without_topic_mastery_is_refused():
    with pytest.raises(TypeError, match="topic_mastery"):
        select_weakest_topic({"user_id": "u1", "mastery": {"1": 0.5}})
    with pytest.raises(TypeError):
        select_weakest_topic([0.5, 0.2])  # type: ignore[arg-type]


def test_mcq_request_is_the_generate_mcq_payload():
    assert mcq_request(ROW, practiced={"algebra", "geometry"}) == {"topic": "geometry", "mastery": 0.48}
    assert mcq_request(ROW, practiced=iter(["algebra", "geometry"])) == {"topic": "geometry", "mastery": 0.48}
    assert mcq_request({"algebra": 0.123456}) == {"topic": "algebra", "mastery": 0.1235}
    assert mcq_request({}) is None


def test_practiced_topics_come_from_the_rows_answer_counts():
    row = {**ROW, "answers_by_topic": {"algebra": 3, "geometry": 0, "statistics": 2, "other": 4}}
    assert practiced_topics(row) == {"algebra", "statistics", "other"}
    assert select_weakest_topic(row) == "statistics"  # not calculus (0.30): never practiced
    assert select_weakest_topic(row, practiced={"algebra"}) == "algebra"  # an explicit argument wins
    assert practiced_topics(ROW) is None and select_weakest_topic(ROW) == "calculus"  # the row does not say
    assert practiced_topics({"algebra": 0.5, "answers_by_topic": 1}) is None  # a {topic: mastery} map has no counts
    bad_counts = {**ROW, "answers_by_topic": {"algebra": True, "geometry": math.nan, "statistics": "2"}}
    assert practiced_topics(bad_counts) == set()


SKILL_TOPICS = {1: "algebra", 2: "algebra", 3: "geometry", 4: "algebra", 5: "calculus"}
SKILL_ROW = {"mastery": {"1": 0.7, "2": 0.4, "3": 0.1, "4": 0.4, "5": 0.2}, "topic_mastery": {"algebra": 0.5},
             "next_skill_recommendation": 3}


def test_the_skill_is_the_weakest_practiced_skill_of_the_topic():
    assert select_weakest_skill(SKILL_ROW, "algebra", SKILL_TOPICS, practiced={1, 3}) == 1  # 3 is geometry's
    assert select_weakest_skill(SKILL_ROW, "algebra", SKILL_TOPICS, practiced={1, 2, 4}) == 2  # tie 2/4: lowest id
    assert select_weakest_skill(SKILL_ROW, "algebra", SKILL_TOPICS, practiced={3}) == 2  # none in the topic: weakest
    assert select_weakest_skill(SKILL_ROW, "algebra", SKILL_TOPICS) == 2
    assert select_weakest_skill(SKILL_ROW, "trigonometry", SKILL_TOPICS) is None  # no skill of the topic
    assert select_weakest_skill(SKILL_ROW, None, SKILL_TOPICS) is None
    assert select_weakest_skill({"mastery": {"9": 0.1}}, "other", SKILL_TOPICS) == 9  # unmapped: other
    with pytest.raises(TypeError, match="mastery"):
        select_weakest_skill({"topic_mastery": {}}, "algebra", SKILL_TOPICS)


def test_topic_then_skill_never_disagree():
    """Whatever the values, the chosen skill belongs to the chosen topic (the page shows both)."""
    rng = random.Random(3)
    skill_topics = {s: TOPICS[s % len(TOPICS)] for s in range(1, 25)}
    for _ in range(200):
        mastery = {s: round(rng.random(), 2) for s in skill_topics}
        topics: dict[str, list[float]] = {}
        for s, p in mastery.items():
            topics.setdefault(skill_topics[s], []).append(p)
        practiced = set(rng.sample(sorted(skill_topics), rng.randint(0, 6)))
        row = {"mastery": {str(s): p for s, p in mastery.items()},
               "topic_mastery": {t: sum(v) / len(v) for t, v in topics.items()},
               "answers_by_topic": {skill_topics[s]: 1 for s in practiced}}
        topic = select_weakest_topic(row)
        skill = select_weakest_skill(row, topic, skill_topics, practiced)
        assert skill_topics[skill] == topic
        if practiced:
            assert topic in {skill_topics[s] for s in practiced} and skill in practiced
