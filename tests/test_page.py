"""The Knowledge State page, rendered by a real headless browser (Debian's chromium) from the running app.

The app runs under uvicorn on 127.0.0.1 against a moto DynamoDB; chromium
dumps the DOM (the chart's 8 axes must be there) and takes a screenshot,
saved as test-artifacts/knowledge_state.png. Every host but 127.0.0.1 is
unresolvable for the browser, so the page must render offline.

chromium comes from `scripts/ensure-chromium.sh`. Without /usr/bin/chromium
the browser tests fail when CI=true and are skipped otherwise.

    .venv/bin/python -m pytest -q tests/test_page.py
"""

from __future__ import annotations

import dataclasses
import html
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image
from starlette.testclient import TestClient

from kt import aws, dynamo
from kt.api import Catalog, create_app
from kt.config import Settings
from kt.topics import TOPICS
from cdp import CHROMIUM, require_chromium
from cdp import FLAGS as CHROMIUM_FLAGS
from kt_testing import moto_tables
from kt_testing import serve_asgi as serve

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CATALOG = Catalog(tuple(range(1, 17)), {s: TOPICS[(s - 1) // 2] for s in range(1, 17)}, "tests")
USER = "student-1"
# (skill, correct): algebra (1, 2) well known, geometry (5, 6) weak, arithmetic (3) in between
ANSWERS = [(1, 1), (1, 1), (2, 1), (5, 0), (5, 0), (6, 0), (3, 1), (3, 0), (1, 1)]
DKT_TOPICS = {t: 0.3 + 0.08 * i for i, t in enumerate(TOPICS)}
# The row's weakest skill (5, its next_skill_recommendation) is geometry's; algebra's weakest practiced one is 2.
DKT_SKILLS = {str(s): {2: 0.55, 5: 0.2}.get(s, 0.6) for s in CATALOG.skill_ids}


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    """A moto DynamoDB with one student's answers (through the API) and a DKT row; DKT enabled, no API key."""
    with moto_tables(str(tmp_path_factory.mktemp("lake")), sagemaker_enabled=True) as s:
        yield _with_student(s)


def _with_student(s: Settings) -> Settings:
    """One student's answers through the API, then a DKT row (replacing the Bayesian one)."""
    client = TestClient(create_app(s, catalog=CATALOG))
    for n, (skill, correct) in enumerate(ANSWERS):
        r = client.post("/api/kt/answers", json={"user_id": USER, "answer_id": f"a{n}", "skill_id": skill,
                                                 "correct": correct, "answered_at": f"2026-11-24T10:00:{n:02d}.000Z"})
        assert r.json() == {"status": "stored"}
    row = {"user_id": USER, "mastery": DKT_SKILLS, "topic_mastery": DKT_TOPICS,
           "next_skill_recommendation": 5, "predicted_accuracy": 0.6, "model_version": "pythagoras-dkt-test",
           "source": "dkt", "as_of": "2026-11-24T10:00:08.000Z", "updated_at": "2026-11-25T02:00:00+00:00",
           "n_interactions": len(ANSWERS)}
    assert dynamo.put_mastery_conditional(aws.client(s, "dynamodb"), s.mastery_table, row)  # as the refresh writes it
    return s


def chromium(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args, url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_page_in_headless_chromium_has_the_8_axes_and_the_recommendation(settings, tmp_path):
    require_chromium()
    with serve(create_app(settings, catalog=CATALOG)) as url:
        dom = chromium(f"{url}/knowledge-state/{USER}", tmp_path, "--dump-dom").stdout
    axes = re.findall(r'<line class="axis" data-topic="([a-z_]+)"', dom)
    labels = re.findall(r'<text class="axis-label" data-topic="([a-z_]+)"[^>]*>([^<]+)</text>', dom)
    assert axes == list(TOPICS)
    assert labels == [(t, t.replace("_", " ")) for t in TOPICS]
    assert 'data-series="DKT"' in dom and 'data-series="Bayesian"' in dom
    # DKT is enabled and served: its weakest practiced topic is algebra (0.30), and algebra's weakest practiced skill
    assert re.search(r'<dd id="next-topic">algebra \(mastery 30%\)</dd>', dom), dom
    assert re.search(r'<dd id="next-skill">skill 2 in algebra \(mastery 55%\)</dd>', dom)
    assert "<script" not in dom and not re.search(r'(src|href)="(https?:)?//', dom)  # nothing from elsewhere


def test_screenshot_shows_both_series_in_their_colours(settings, tmp_path):
    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "knowledge_state.png"
    shot.unlink(missing_ok=True)
    with serve(create_app(settings, catalog=CATALOG)) as url:
        chromium(f"{url}/knowledge-state/{USER}", tmp_path, f"--screenshot={shot}", "--window-size=900,1300")
    pixels = image.imread(str(shot))[..., :3]  # (H, W, 3) in [0, 1]
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 800

    def near(rgb: str) -> int:
        target = np.array([int(rgb[i : i + 2], 16) / 255 for i in (1, 3, 5)])
        return int((np.abs(pixels - target).max(axis=-1) < 0.05).sum())

    # the series colours come from /static/kt.css: the stylesheet loaded and both polygons were drawn
    assert near("#1f77b4") > 200, "no DKT blue in the screenshot"
    assert near("#ff7f0e") > 200, "no Bayesian orange in the screenshot"


def test_page_escapes_the_user_id_and_404s_unknown_users(settings):
    odd = "<b>o'brien & \"co\""  # no '/': a path segment
    s = dataclasses.replace(settings, api_key="k")
    client = TestClient(create_app(s, catalog=CATALOG), headers={"x-api-key": "k"})
    r = client.post("/api/kt/answers", json={"user_id": odd, "answer_id": "1", "skill_id": 2, "correct": 1,
                                             "answered_at": "2026-11-24T09:00:00.000Z"})
    assert r.json() == {"status": "stored"}
    page = client.get(f"/knowledge-state/{odd}")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert html.escape(odd) in page.text and odd not in page.text
    assert len(re.findall(r'<line class="axis"', page.text)) == len(TOPICS)
    assert 'data-series="Bayesian"' in page.text and 'data-series="DKT"' not in page.text  # no DKT row for them
    missing = client.get("/knowledge-state/nobody")
    assert missing.status_code == 404 and "Unknown user" in missing.text
    assert TestClient(create_app(s, catalog=CATALOG)).get(f"/knowledge-state/{USER}").status_code == 403


def _recommendation(page: str) -> tuple[str, str, int]:
    """(next topic, the next skill's topic, the next skill) as the page states them."""
    topic = re.search(r'<dd id="next-topic">([a-z ]+) \(mastery', page)
    skill = re.search(r'<dd id="next-skill">skill (\d+) in ([a-z ]+) \(mastery', page)
    assert topic and skill, page
    return topic.group(1), skill.group(2), int(skill.group(1))


@pytest.mark.parametrize("dkt_enabled", [True, False])
def test_the_recommended_skill_lies_in_the_recommended_topic(settings, dkt_enabled):
    """Topic and skill agree, whichever estimate is served (issue 19: "algebra" with "skill 5 (calculus)")."""
    s = dataclasses.replace(settings, sagemaker_enabled=dkt_enabled)
    page = TestClient(create_app(s, catalog=CATALOG)).get(f"/knowledge-state/{USER}").text
    topic, skill_topic, skill = _recommendation(page)
    assert skill_topic == topic == CATALOG.skill_topics[skill].replace("_", " ")
    assert skill in {s for s, _ in ANSWERS}  # a practiced skill
    if dkt_enabled:  # the DKT row: algebra is the weakest practiced topic, 2 its weakest practiced skill
        assert (topic, skill) == ("algebra", 2)
    else:  # Bayesian: geometry (skills 5 and 6: nothing right) is the weakest; 5 (two wrong) the weaker skill
        assert (topic, skill) == ("geometry", 5)
