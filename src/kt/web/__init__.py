"""The Knowledge State page: an inline-SVG spider chart (DKT vs Bayesian), the next topic and skill.

Server-side HTML and SVG only: no JavaScript and no CDN; the one other request
is this package's ``static/kt.css``. So the page renders offline, and the same
markup is what a headless browser sees. ``kt.api`` serves it at
``GET /knowledge-state/{user_id}``; ``kt.chart`` draws the same chart as a PNG.
"""

from __future__ import annotations

import html
import math
import os
from string import Template

from kt.topics import TOPICS

WEB_DIR = os.path.dirname(os.path.abspath(__file__))
STATIC_DIR = os.path.join(WEB_DIR, "static")
TEMPLATES_DIR = os.path.join(WEB_DIR, "templates")
SERIES_CLASS = {"DKT": "dkt", "Bayesian": "bayes"}  # legend name -> CSS class (colours of kt.chart)
WIDTH, HEIGHT = 680, 560  # SVG viewBox: room for the side labels
CX, CY = WIDTH / 2, HEIGHT / 2
RADIUS = 190  # mastery 1.0
RINGS = (0.25, 0.5, 0.75, 1.0)


def _template(name: str) -> Template:
    with open(os.path.join(TEMPLATES_DIR, name), encoding="utf-8") as f:
        return Template(f.read())


def _point(i: int, n: int, value: float) -> tuple[float, float]:
    """Axis i of n (clockwise from the top) at a mastery value, in SVG coordinates."""
    angle = -math.pi / 2 + 2 * math.pi * i / n
    return CX + RADIUS * value * math.cos(angle), CY + RADIUS * value * math.sin(angle)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _label(topic: str) -> str:
    return topic.replace("_", " ")


def spider_svg(series: dict[str, dict[str, float]], topics: tuple[str, ...] = TOPICS) -> str:
    """One axis per topic, one polygon per series; a topic without a value is drawn at 0 and titled n/a."""
    n = len(topics)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
           'role="img" aria-labelledby="chart-title" class="spider">',
           '<title id="chart-title">Mastery per topic: ' + html.escape(" vs ".join(series) or "no data") + "</title>"]
    for ring in RINGS:
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (_point(i, n, ring) for i in range(n)))
        out.append(f'<polygon class="ring" points="{points}"/>')
        x, y = _point(0, n, ring)
        out.append(f'<text class="ring-label" x="{x + 4:.1f}" y="{y - 3:.1f}">{_percent(ring)}</text>')
    for i, topic in enumerate(topics):
        x, y = _point(i, n, 1.0)
        lx, ly = _point(i, n, 1.13)
        anchor = "middle" if abs(lx - CX) < 1 else ("start" if lx > CX else "end")
        t = html.escape(topic)
        out.append(f'<line class="axis" data-topic="{t}" x1="{CX:.1f}" y1="{CY:.1f}" '
                   f'x2="{x:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="axis-label" data-topic="{t}" x="{lx:.1f}" y="{ly + 4:.1f}" '
                   f'text-anchor="{anchor}">{html.escape(_label(topic))}</text>')
    for k, (name, values) in enumerate(series.items()):
        css = SERIES_CLASS.get(name, "other")
        clamped = [values.get(t) for t in topics]
        points = [_point(i, n, min(1.0, max(0.0, v or 0.0))) for i, v in enumerate(clamped)]
        out.append(f'<g class="series {css}" data-series="{html.escape(name)}">')
        out.append('<polygon points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y in points) + '"/>')
        for topic, value, (x, y) in zip(topics, clamped, points):
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4"><title>{html.escape(name)}, '
                       f"{html.escape(_label(topic))}: {_percent(value)}</title></circle>")
        out.append("</g>")
        out.append(f'<g class="legend {css}"><rect x="12" y="{14 + 22 * k}" width="14" height="14"/>'
                   f'<text x="32" y="{26 + 22 * k}">{html.escape(name)}</text></g>')
    out.append("</svg>")
    return "\n".join(out)


def knowledge_state_page(state: dict) -> str:
    """The page for one user from ``kt.api.MasteryService.knowledge_state``."""
    served, dkt, bayes = state["served"], state["dkt"], state["bayes"]
    series = {}
    if dkt is not None:
        series["DKT"] = dkt["topic_mastery"]
    if bayes is not None:
        series["Bayesian"] = bayes["topic_mastery"]
    topic = state["next_topic"]
    skill = state["next_skill"]
    if topic is None:
        next_topic = "none yet"
    else:
        next_topic = f"{_label(topic)} (mastery {_percent(served['topic_mastery'].get(topic))})"
    if skill is None:
        next_skill = "none yet"
    else:
        skill_topic = state["skill_topics"].get(int(skill), "other")
        next_skill = (f"skill {skill} in {_label(skill_topic)} "
                      f"(mastery {_percent(served['mastery'].get(str(skill)))})")
    rows = []
    for t in TOPICS:
        cells = [_percent(s["topic_mastery"].get(t)) if s else "n/a" for s in (dkt, bayes)]
        rows.append(f'<tr data-topic="{html.escape(t)}"><th scope="row">{html.escape(_label(t))}</th>'
                    f"<td>{cells[0]}</td><td>{cells[1]}</td><td>{state['answers_by_topic'].get(t, 0)}</td></tr>")
    source = "DKT" if served["source"] == "dkt" else "Bayesian"
    meta = (f"Served estimate: {source} ({served['model_version']}), last answer {served['as_of']}, "
            f"{served['n_interactions']} answers.")
    return _template("knowledge_state.html").substitute(
        user_id=html.escape(state["user_id"]),
        meta=html.escape(meta),
        next_topic=html.escape(next_topic),
        next_skill=html.escape(next_skill),
        source=html.escape(source),
        svg=spider_svg(series),
        rows="\n".join(rows),
    )


def not_found_page(user_id: str) -> str:
    """404 page: the user has no answers and no mastery row."""
    return _template("not_found.html").substitute(user_id=html.escape(user_id))
