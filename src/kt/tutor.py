"""The tutor's side of mastery: which topic the next MCQ is about, and what `generateMcq` receives.

    from kt.tutor import mcq_request, select_weakest_topic
    row = httpx.get(f"{api}/api/kt/mastery", params={"user_id": u}, headers={"x-api-key": key}).json()
    topic = select_weakest_topic(row, practiced={"algebra", "geometry"})
    payload = mcq_request(row, practiced={"algebra", "geometry"})   # {"topic": ..., "mastery": ...}

Policy of ``select_weakest_topic`` (the seed's selector, made explicit):

1. Candidates are the practiced topics (topics with at least one answer) that
   have a finite mastery value and are among ``topics`` (the 8 chart axes by
   default; ``other``, the bucket of unmapped skills, is never a candidate).
   With no practiced candidate (a new student), every topic with a value is
   a candidate: the weakest topic overall, as ``next_skill_recommendation``
   falls back to the weakest skill overall.
2. Default mode: the lowest mastery wins.
   Target-difficulty mode (``target=0.7``): the topic whose mastery, read as
   the expected P(correct) on its next question, is closest to the target
   wins; ties go to the lower mastery (more to learn).
3. Remaining ties go to the topic that comes first in ``topics`` (the chart
   order), so the choice never depends on dict order.

The MCQ generator itself stays the tutor's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from kt.topics import TOPICS


def topic_mastery_of(mastery: Mapping) -> dict[str, float]:
    """The topic -> mastery map of a mastery row/response, or the map itself."""
    values = None
    if isinstance(mastery, Mapping):
        values = mastery["topic_mastery"] if "topic_mastery" in mastery else mastery
    if not isinstance(values, Mapping) or ("mastery" in values and "topic_mastery" not in mastery):
        raise TypeError("expected a mastery row (with topic_mastery) or a {topic: mastery} mapping")
    out = {}
    for topic, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[str(topic)] = float(value)
    return out


def select_weakest_topic(
    mastery: Mapping,
    practiced: Iterable[str] | None = None,
    *,
    target: float | None = None,
    topics: tuple[str, ...] = TOPICS,
) -> str | None:
    """The topic of the next MCQ under the module's policy; None when no topic has a value.

    ``practiced=None`` treats every topic with a value as practiced.
    """
    if target is not None and not 0.0 < target < 1.0:
        raise ValueError(f"target must be a probability strictly between 0 and 1, got {target!r}")
    values = {t: p for t, p in topic_mastery_of(mastery).items() if t in topics}
    chosen = None if practiced is None else set(practiced)
    pool = list(values) if chosen is None else [t for t in values if t in chosen]
    if not pool:
        pool = list(values)
    if not pool:
        return None
    order = {t: i for i, t in enumerate(topics)}
    if target is None:
        return min(pool, key=lambda t: (values[t], order[t]))
    return min(pool, key=lambda t: (abs(values[t] - target), values[t], order[t]))


def mcq_request(
    mastery: Mapping,
    practiced: Iterable[str] | None = None,
    *,
    target: float | None = None,
    topics: tuple[str, ...] = TOPICS,
) -> dict | None:
    """The payload of the tutor's generateMcq: the selected topic and its mastery (None: nothing to select)."""
    topic = select_weakest_topic(mastery, practiced, target=target, topics=topics)
    if topic is None:
        return None
    return {"topic": topic, "mastery": round(topic_mastery_of(mastery)[topic], 4)}
