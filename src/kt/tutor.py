"""The tutor's side of mastery: which topic and skill the next MCQ is about, and what `generateMcq` receives.

    from kt.tutor import mcq_request, select_weakest_skill, select_weakest_topic
    row = httpx.get(f"{api}/api/kt/mastery", params={"user_id": u}, headers={"x-api-key": key}).json()
    topic = select_weakest_topic(row, practiced={"algebra", "geometry"})
    skill = select_weakest_skill(row, topic, skill_topics, practiced={1, 3})
    payload = mcq_request(row, practiced={"algebra", "geometry"})   # {"topic": ..., "mastery": ...}

Policy of ``select_weakest_topic`` (the seed's selector, made explicit):

1. Candidates are the practiced topics (topics with at least one answer) that
   have a finite mastery value and are among ``topics`` (the 8 chart axes by
   default; ``other``, the bucket of unmapped skills, is never a candidate).
   ``practiced=None`` reads them from the row's ``answers_by_topic`` (topic ->
   answers) when it has one. With no practiced candidate (a new student),
   every topic with a value is a candidate: the weakest topic overall, as
   ``next_skill_recommendation`` falls back to the weakest skill overall.
2. Default mode: the lowest mastery wins.
   Target-difficulty mode (``target=0.7``): the topic whose mastery, read as
   the expected P(correct) on its next question, is closest to the target
   wins; ties go to the lower mastery (more to learn).
3. Remaining ties go to the topic that comes first in ``topics`` (the chart
   order), so the choice never depends on dict order.

``select_weakest_skill`` then picks the skill inside that topic by the rule
of ``next_skill_recommendation`` (``kt.mastery.weakest_skill``), so topic and
skill never disagree: the row's own ``next_skill_recommendation`` is the
weakest skill of any topic, and can lie outside the chosen topic.

The MCQ generator itself stays the tutor's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from kt.mastery import weakest_skill
from kt.topics import OTHER_TOPIC, TOPICS


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def topic_mastery_of(mastery: Mapping) -> dict[str, float]:
    """The topic -> mastery map of a mastery row/response, or the map itself."""
    values = None
    if isinstance(mastery, Mapping):
        values = mastery["topic_mastery"] if "topic_mastery" in mastery else mastery
    if not isinstance(values, Mapping) or ("mastery" in values and "topic_mastery" not in mastery):
        raise TypeError("expected a mastery row (with topic_mastery) or a {topic: mastery} mapping")
    out = {}
    for topic, value in values.items():
        if _is_number(value):
            out[str(topic)] = float(value)
    return out


def practiced_topics(mastery: Mapping) -> set[str] | None:
    """Topics with at least one answer, from a row's ``answers_by_topic``; None when the row does not say."""
    if not isinstance(mastery, Mapping) or "topic_mastery" not in mastery:
        return None
    counts = mastery.get("answers_by_topic")
    if not isinstance(counts, Mapping):
        return None
    return {str(t) for t, n in counts.items() if _is_number(n) and n > 0}


def select_weakest_topic(
    mastery: Mapping,
    practiced: Iterable[str] | None = None,
    *,
    target: float | None = None,
    topics: tuple[str, ...] = TOPICS,
) -> str | None:
    """The topic of the next MCQ under the module's policy; None when no topic has a value.

    ``practiced=None``: the row's ``answers_by_topic`` when it has one, else every topic with a value.
    """
    if target is not None and not 0.0 < target < 1.0:
        raise ValueError(f"target must be a probability strictly between 0 and 1, got {target!r}")
    values = {t: p for t, p in topic_mastery_of(mastery).items() if t in topics}
    chosen = practiced_topics(mastery) if practiced is None else set(practiced)
    pool = list(values) if chosen is None else [t for t in values if t in chosen]
    if not pool:
        pool = list(values)
    if not pool:
        return None
    order = {t: i for i, t in enumerate(topics)}
    if target is None:
        return min(pool, key=lambda t: (values[t], order[t]))
    return min(pool, key=lambda t: (abs(values[t] - target), values[t], order[t]))


def select_weakest_skill(
    mastery: Mapping,
    topic: str | None,
    skill_topics: Mapping[int, str],
    practiced: Iterable[int] | None = None,
) -> int | None:
    """The skill of the next MCQ inside ``topic``: its weakest practiced skill, ties to the lowest id.

    With no practiced skill in the topic, its weakest skill; None when the row has no skill of the topic.
    """
    if topic is None:
        return None
    values = mastery.get("mastery") if isinstance(mastery, Mapping) else None
    if not isinstance(values, Mapping):
        raise TypeError("expected a mastery row (with mastery: skill id -> mastery)")
    in_topic = {int(s): float(p) for s, p in values.items()
                if _is_number(p) and skill_topics.get(int(s), OTHER_TOPIC) == topic}
    return weakest_skill(in_topic, {int(s) for s in practiced or ()})


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
