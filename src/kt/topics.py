"""The seed's 8 topics and the skill -> topic mapping (pure Python: also used by the serving code)."""

from __future__ import annotations

# In the order the spider chart draws them.
TOPICS = (
    "algebra",
    "geometry",
    "calculus",
    "statistics",
    "probability",
    "number_theory",
    "trigonometry",
    "linear_algebra",
)
OTHER_TOPIC = "other"
# The seed's skill_mappings: skill id (as a string, JSON keys) -> topic.
DEFAULT_SKILL_TOPICS = {str(i + 1): topic for i, topic in enumerate(TOPICS)}


def topic_of(skill_id: int, skill_topics: dict[str, str]) -> str:
    """Topic of a skill from the skill_mappings JSON; unmapped skills are `other`."""
    return skill_topics.get(str(skill_id), OTHER_TOPIC)
