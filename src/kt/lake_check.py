"""`kt lake check`: what the readers of the lake serve and what they quarantine, per prefix, with reasons.

    kt lake check [--lake .kt/lake]      # JSON report; exit 1 when a line is quarantined

The same reader and checks as `kt api` at start, `kt refresh` and `kt chart`
(``kt.quarantine.read_jsonl`` with ``kt.refresh``'s checks): ``events/answers/``,
then each night's ``inference/batch/<run-date>/input/`` and ``output/``.
Quarantined lines stay where they are; the report names file, line and reason.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

from kt import lake, refresh
from kt.quarantine import read_jsonl, reason_kind


def _prefix_report(lake_root: str, prefix: str, check: Callable[[dict], dict], suffix: str = "") -> tuple[dict, list]:
    served = transform_errors = 0
    bad = []
    for uri in lake.list_files(lake.join(lake_root, prefix)):
        if uri.endswith(suffix):
            records, wrong = read_jsonl(uri, check)
            transform_errors += sum(1 for r in records if "error" in r)
            served += sum(1 for r in records if "error" not in r)
            bad.extend(wrong)
    report = {"served": served, "quarantined": len(bad),
              "reasons": dict(Counter(reason_kind(q.reason) for q in bad).most_common())}
    if transform_errors:
        report["transform_errors"] = transform_errors
    return report, bad


def check(lake_root: str) -> dict:
    """Per prefix: lines served, lines quarantined and their reasons; then every quarantined line."""
    prefixes = {"events/answers/": (refresh.check_answer_line, ".jsonl")}
    for night in refresh.batch_nights(lake_root):
        prefixes[f"inference/batch/{night}/input/"] = (refresh.check_input_line, "")
        prefixes[f"inference/batch/{night}/output/"] = (refresh.check_output_line, "")
    report: dict = {"lake": lake_root, "prefixes": {}, "quarantined": []}
    for prefix, (line_check, suffix) in prefixes.items():
        report["prefixes"][prefix], bad = _prefix_report(lake_root, prefix, line_check, suffix)
        report["quarantined"].extend({"uri": q.uri, "line": q.line, "reason": q.reason} for q in bad)
    return report
