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
