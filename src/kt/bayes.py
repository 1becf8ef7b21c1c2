"""Phase 1: the tutor's simple Bayesian mastery, a Beta posterior per skill and per topic.

Mastery of a skill is the posterior mean of P(correct) under a Beta(a, b)
prior after the user's answers on that skill; a topic pools its skills'
answers. It is what the API serves when DKT is disabled or the user is new,
and one of the baselines DKT must beat.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from kt.topics import OTHER_TOPIC

PRIOR_A = 1.0
PRIOR_B = 1.0
SCALE = 10_000  # estimates from counts are rounded half up to 4 decimals, in integers (as the GET template does)


def skill_mastery(
    user_sequence: list[tuple[int, int]], skill_ids: list[int], a: float = PRIOR_A, b: float = PRIOR_B
) -> dict[int, float]:
    """Posterior mean per skill after a history of (skill_id, correct)."""
    right: dict[int, int] = defaultdict(int)
    seen: dict[int, int] = defaultdict(int)
    for skill, correct in user_sequence:
        seen[skill] += 1
        right[skill] += int(correct)
    return {s: (a + right[s]) / (a + b + seen[s]) for s in skill_ids}


def topic_mastery(
    user_sequence: list[tuple[int, int]], skill_topics: dict[int, str], a: float = PRIOR_A, b: float = PRIOR_B
) -> dict[str, float]:
    """Posterior mean per topic, pooling the answers on its skills."""
    right: dict[str, int] = defaultdict(int)
    seen: dict[str, int] = defaultdict(int)
    for skill, correct in user_sequence:
        topic = skill_topics.get(skill, OTHER_TOPIC)
        seen[topic] += 1
        right[topic] += int(correct)
    topics = sorted(set(skill_topics.values()))
    return {t: (a + right[t]) / (a + b + seen[t]) for t in topics}


def rounded_mean(right: int, answers: int, a: float = PRIOR_A, b: float = PRIOR_B) -> int:
    """SCALE x the posterior mean (right + a) / (answers + a + b), rounded half up, in integer arithmetic.

    API Gateway's template (get_mastery_response.vtl) has integer division and no rounding function; doing the
    same here gives the twin the same digits. Needs integer priors.
    """
    a_, b_ = int(a), int(b)
    assert (a_, b_) == (a, b), "rounded_mean needs integer priors"
    den = answers + a_ + b_
    return (2 * SCALE * (right + a_) + den) // (2 * den)


def answers_by_topic(counts: dict[int, tuple[int, int]], skill_topics: dict[int, str]) -> dict[str, int]:
    """Answers per practiced topic from per-skill (answers, right) counts; OTHER_TOPIC for unmapped skills."""
    out: dict[str, int] = {}
    for skill, (n, _) in counts.items():
        topic = skill_topics.get(skill, OTHER_TOPIC)
        out[topic] = out.get(topic, 0) + n
    return out


def estimate(counts: dict[int, tuple[int, int]], skill_ids: list[int], skill_topics: dict[int, str]) -> dict:
    """The Bayesian GET body's numbers from per-skill (answers, right) counts (get_mastery_response.vtl).

    mastery: the catalog's skills and the practiced ones; topic_mastery: the catalog's topics, pooling their
    skills' answers; next_skill_recommendation: the weakest practiced skill, ties to the lowest id;
    predicted_accuracy: the mean of the rounded skill values, rounded half up; answers_by_topic: answers per
    practiced topic (OTHER_TOPIC for unmapped skills).
    """
    skills = sorted(set(skill_ids) | set(counts))
    scaled = {s: rounded_mean(counts.get(s, (0, 0))[1], counts.get(s, (0, 0))[0]) for s in skills}
    pooled: dict[str, list[int]] = {t: [0, 0] for t in sorted(set(skill_topics.values()))}
    for skill, (n, right) in counts.items():
        topic = skill_topics.get(skill, OTHER_TOPIC)
        if topic in pooled:
            pooled[topic][0] += n
            pooled[topic][1] += right
    practiced = sorted(counts, key=lambda s: (scaled[s], s))
    return {
        "mastery": {str(s): q / SCALE for s, q in scaled.items()},
        "topic_mastery": {t: rounded_mean(right, n) / SCALE for t, (n, right) in pooled.items()},
        "answers_by_topic": answers_by_topic(counts, skill_topics),
        "next_skill_recommendation": practiced[0] if practiced else None,
        "predicted_accuracy": ((2 * sum(scaled.values()) + len(scaled)) // (2 * len(scaled))) / SCALE if scaled else None,
    }


def next_step_predictions(skills: np.ndarray, correct: np.ndarray, a: float = PRIOR_A, b: float = PRIOR_B) -> np.ndarray:
    """P(correct) at every position from the answers before it on the same skill (vectorized)."""
    skills = np.asarray(skills)
    correct = np.asarray(correct, dtype=np.float64)
    order = np.argsort(skills, kind="stable")
    sorted_skills = skills[order]
    group_start = np.r_[True, sorted_skills[1:] != sorted_skills[:-1]]
    group_id = np.cumsum(group_start) - 1
    first_of_group = np.flatnonzero(group_start)
    position = np.arange(len(skills))
    attempts_before = position - first_of_group[group_id]
    cumulative = np.cumsum(correct[order])
    right_before = cumulative - correct[order] - np.r_[0.0, cumulative][first_of_group[group_id]]
    out = np.empty(len(skills))
    out[order] = (a + right_before) / (a + b + attempts_before)
    return out
