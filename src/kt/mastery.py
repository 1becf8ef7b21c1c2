"""The mastery response (docs/contracts.md §6.2), the same for DKT and the Bayesian estimate.

    {"mastery": {"42": 0.78, ...}, "next_skill_recommendation": 15,
     "predicted_accuracy": 0.45, "topic_mastery": {"algebra": 0.61, ...},
     "model_version": "..."}
"""

from __future__ import annotations

from collections import defaultdict

from kt.topics import OTHER_TOPIC

DECIMALS = 4


def mean_by_topic(mastery: dict[int, float], skill_topics: dict[int, str]) -> dict[str, float]:
    """Topic mastery as the mean of its skills' mastery (DKT)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for skill, p in mastery.items():
        groups[skill_topics.get(skill, OTHER_TOPIC)].append(p)
    return {t: sum(v) / len(v) for t, v in sorted(groups.items())}


def weakest_skill(mastery: dict[int, float], practiced: set[int]) -> int | None:
    """Lowest mastery among practiced skills (all skills when none), ties to the lowest id."""
    pool = [s for s in mastery if s in practiced] or list(mastery)
    if not pool:
        return None
    return min(pool, key=lambda s: (mastery[s], s))


def response(
    mastery: dict[int, float],
    practiced: set[int],
    topic_mastery: dict[str, float],
    model_version: str,
) -> dict:
    """The response body, with JSON-friendly keys and rounded probabilities."""
    return {
        "mastery": {str(s): round(float(p), DECIMALS) for s, p in sorted(mastery.items())},
        "next_skill_recommendation": weakest_skill(mastery, practiced),
        "predicted_accuracy": round(float(sum(mastery.values()) / max(1, len(mastery))), DECIMALS),
        "topic_mastery": {t: round(float(p), DECIMALS) for t, p in topic_mastery.items()},
        "model_version": model_version,
    }
