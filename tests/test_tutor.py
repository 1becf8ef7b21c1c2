"""kt.tutor: the weakest-topic policy and the generateMcq payload, on plain maps and on API bodies."""

from __future__ import annotations

import math
import random

import pytest

from kt.topics import TOPICS
from kt.tutor import mcq_request, select_weakest_topic, topic_mastery_of

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
