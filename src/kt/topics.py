"""The seed's 8 topics and the skill -> topic mapping (pure Python: also used by the serving code)."""

from __future__ import annotations

import re

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
INT32_MAX = 2**31 - 1  # skill ids are int32 in skills.parquet and sequences.parquet
SKILL_KEY = re.compile(r"0|[1-9][0-9]{0,9}")  # a skill id as str(int) writes it: topic_of looks keys up that way


def topic_of(skill_id: int, skill_topics: dict[str, str]) -> str:
    """Topic of a skill from the skill_mappings JSON; unmapped skills are `other`."""
    return skill_topics.get(str(skill_id), OTHER_TOPIC)


def check_skill_mappings(mapping: object, source: str) -> dict[str, str]:
    """A skill_mappings object checked before anything trusts it; a bad one is an error naming the source and key."""
    if not isinstance(mapping, dict):
        raise ValueError(f"{source}: skill_mappings must be a JSON object of skill id -> topic, "
                         f"got {type(mapping).__name__}")
    for key, topic in mapping.items():
        if not SKILL_KEY.fullmatch(key) or int(key) > INT32_MAX:
            raise ValueError(f"{source}: key {key!r}: a skill id must be a non-negative int32 in decimal, "
                             "without sign, spaces or leading zeros")
        if not isinstance(topic, str) or not topic.strip():
            raise ValueError(f"{source}: key {key!r}: the topic must be a non-empty string, got {topic!r}")
    return dict(mapping)
