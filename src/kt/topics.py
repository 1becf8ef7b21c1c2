"""The seed's 8 topics and the skill -> topic mapping (pure Python: also used by the serving code)."""

from __future__ import annotations

# The seed's skill_mappings, exactly: skill id (as a string, JSON keys) -> topic.
DEFAULT_SKILL_TOPICS = {
    "1": "algebra",
    "2": "arithmetic",
    "3": "geometry",
    "4": "probability",
    "5": "calculus",
    "6": "statistics",
    "7": "trigonometry",
    "8": "linear_algebra",
}
# The spider chart's axes, in the seed's order.
TOPICS = tuple(DEFAULT_SKILL_TOPICS.values())
OTHER_TOPIC = "other"


def topic_of(skill_id: int, skill_topics: dict[str, str]) -> str:
    """Topic of a skill from the skill_mappings JSON; unmapped skills are `other`."""
    return skill_topics.get(str(skill_id), OTHER_TOPIC)
