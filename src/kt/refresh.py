"""The nightly mastery refresh (docs/contracts.md §7-8): active tutor users -> JSON Lines -> transform -> kt-mastery.

    kt refresh --lake .kt/lake [--run-date 2026-11-25]

Steps, each rerunnable on its own:
1. ``sync_history``: locally the lake's answer events are the source of
   truth; they are (re)loaded into kt-history (same key, same item).
2. ``build_inputs``: users with answers since the watermark (the ``by_day``
   index) to ``inference/batch/<run-date>/input/``, each with the model state
   stored on their kt-mastery row and only the answers since it (incremental),
   or, without a usable state, their whole history (full: no state yet, a state
   of another model version, or an answer that arrived late, before the state's
   last one). Both ask the transform for the state after the last answer.
3. the batch transform (SageMaker, or ``kt.local_sagemaker``) writes ``.out`` files.
4. ``load_outputs``: conditional writes into kt-mastery (row and state in one
   UpdateItem), then the watermark moves.
A crash anywhere leaves the watermark where it was, so the next run redoes the
work; the conditional writes make the redo change nothing that was already right.
Inputs and outputs are streamed, ``USERS_PER_FILE`` users at a time.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterator

from kt import bounds, dynamo, lake
from kt.api_validation import MAX_ID_CHARS, ApiError, check_answer
from kt.quarantine import BadLine, Quarantined, read_jsonl

log = logging.getLogger(__name__)

USERS_PER_FILE = 1000
FIRST_RUN_LOOKBACK_DAYS = 30


def watermark_uri(lake_root: str) -> str:
    return lake.join(lake_root, "inference", "batch", "_watermark.json")


def _watermark(lake_root: str) -> dict | None:
    uri = watermark_uri(lake_root)
    return json.loads(lake.read_text(uri)) if lake.exists(uri) else None


def read_watermark(lake_root: str, run_date: str | None = None) -> str | None:
    """The last day whose answers are in kt-mastery (ISO date), or None before the first run.

    Given the run date of a night that already ran, the day before that night's
    start: repeating a night redoes the same days (and changes nothing).
    """
    mark = _watermark(lake_root)
    if mark is None:
        return None
    if run_date is not None and mark["run_date"] == run_date:
        return mark.get("previous_last_day")
    return mark["last_day"]


def days_to_refresh(last_day: str | None, run_date: str) -> list[str]:
    """Days after the watermark up to and including the run date."""
    end = date.fromisoformat(run_date)
    start = date.fromisoformat(last_day) + timedelta(days=1) if last_day else end - timedelta(days=FIRST_RUN_LOOKBACK_DAYS)
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def check_answer_line(record: dict) -> dict:
    """An answer event as POST /api/kt/answers takes it (kt.api_validation.check_answer), else BadLine."""
    try:
        return check_answer(record)
    except ApiError as e:
        raise BadLine(e.error if e.error.startswith(str(e.field)) else f"{e.field}: {e.error}") from e


def read_answer_lines(lake_root: str) -> tuple[list[dict], list[Quarantined]]:
    """Every tutor answer in the lake (events/answers/day=*/ *.jsonl), and the lines quarantined."""
    answers, bad = [], []
    for uri in lake.list_files(lake.join(lake_root, "events", "answers")):
        if uri.endswith(".jsonl"):
            good, wrong = read_jsonl(uri, check_answer_line)
            answers.extend(good)
            bad.extend(wrong)
    return answers, bad


def read_answer_events(lake_root: str) -> list[dict]:
    """Every valid tutor answer in the lake, once per answer_id; bad lines are quarantined (kt.quarantine), never fatal.

    The lake can hold an answer twice (a retry re-stamped, or resent after a crash): the first line wins, as the
    markers make the first write win in kt-history, so drift and the refresh count each answer once.
    """
    return dynamo.first_answers(read_answer_lines(lake_root)[0])


def sync_history(client: Any, table: str, lake_root: str) -> int:
    """Load the lake's answer events into kt-history (idempotent)."""
    return dynamo.put_history(client, table, read_answer_events(lake_root))


def answered_at(item: dict) -> str:
    return item["ts"].split("#", 1)[0]


def active_users(client: Any, history_table: str, days: list[str]) -> list[str]:
    """Users with an answer on one of the days (by_day, paginated), sorted: a rerun makes the same files."""
    users: set[str] = set()
    for day in days:
        users |= dynamo.users_active_on(client, history_table, day)
    return sorted(users)


def _sequence(history: list[dict], known_skills: set[int] | None) -> tuple[list[dict], int]:
    """The transform's user_sequence of kt-history answers, and how many were dropped (skills the model lacks)."""
    sequence = [{"skill_id": int(h["skill_id"]), "correct": int(h["correct"])} for h in history]
    if known_skills is None:
        return sequence, 0
    kept = [a for a in sequence if a["skill_id"] in known_skills]
    return kept, len(sequence) - len(kept)


def input_line(client: Any, history_table: str, user_id: str, model_version: str | None,
               mastery_table: str | None, known_skills: set[int] | None) -> tuple[dict, str, int]:
    """One user's transform input line, how it was made ("incremental", "full", "late") and the answers dropped.

    Incremental when the user's kt-mastery row holds a state of this model version and kt-history holds exactly
    the answers that state covers up to its last one (more there: an answer arrived late, before it; full).
    Both kinds ask for the state back (return_state) and carry history_ts/history_items, what the row will cover.
    """
    kind = "full"
    stored = dynamo.get_state(client, mastery_table, user_id) if mastery_table and model_version else None
    state = (stored or {}).get(dynamo.DKT_STATE)
    if state is not None and model_version is not None and state.get("model_version") == model_version:
        covered = dynamo.count_answers_until(client, history_table, user_id, stored[dynamo.HISTORY_TS])
        kind = "incremental" if covered == stored[dynamo.HISTORY_ITEMS] else "late"
    if kind == "incremental":
        new = dynamo.user_history(client, history_table, user_id, after_ts=stored[dynamo.HISTORY_TS])
        last_ts = new[-1]["ts"] if new else stored[dynamo.HISTORY_TS]
        items = stored[dynamo.HISTORY_ITEMS] + len(new)
    else:
        new = dynamo.user_history(client, history_table, user_id)
        last_ts, items, state = new[-1]["ts"], len(new), None
    sequence, dropped = _sequence(new, known_skills)
    line = {"user_id": user_id, "as_of": dynamo.answered_at({"ts": last_ts}), "user_sequence": sequence,
            "return_state": True,
            dynamo.HISTORY_TS: last_ts, dynamo.HISTORY_ITEMS: items}
    if state is not None:
        line["state"] = state
    return line, kind, dropped


def _dumped(line: dict, kind: str, dropped: int) -> tuple[str, int, str, int]:
    """An input line as its JSON text (a tenth of the memory of the dicts, for a long history) and its counts."""
    return json.dumps(line) + "\n", len(line["user_sequence"]), kind, dropped


def build_inputs(client: Any, history_table: str, lake_root: str, run_date: str, days: list[str],
                 known_skills: set[int] | None = None, model_version: str | None = None,
                 mastery_table: str | None = None, workers: int = 8) -> dict:
    """Write one JSON line per active user (incremental from the stored state where it can be); return counts.

    Streams: USERS_PER_FILE users at a time are read (stored state and answers, by ``workers`` threads) and
    written as one part file, so memory does not grow with the users.
    Without ``mastery_table`` and ``model_version`` every user gets a full recompute.
    """
    users = active_users(client, history_table, days)
    input_prefix = lake.join(lake_root, "inference", "batch", run_date, "input")
    lake.delete(input_prefix)
    counts = {"users": len(users), "days": days, "full": 0, "incremental": 0, "late": 0, "answers_fed": 0,
              "dropped_unknown_skill_answers": 0}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for part, start in enumerate(range(0, len(users), USERS_PER_FILE)):
            chunk = users[start : start + USERS_PER_FILE]
            made = pool.map(lambda u: _dumped(*input_line(client, history_table, u, model_version, mastery_table,
                                                          known_skills)), chunk)
            body = []
            for text, fed, kind, dropped in made:
                counts[kind] += 1
                counts["answers_fed"] += fed
                counts["dropped_unknown_skill_answers"] += dropped
                body.append(text)
            lake.write_text(lake.join(input_prefix, f"part-{part:05d}.jsonl"), "".join(body))
    if counts["dropped_unknown_skill_answers"]:
        log.warning("dropped %d answers on skills the model does not know", counts["dropped_unknown_skill_answers"])
    log.info("refresh inputs: %d users (%d incremental, %d full, %d full after late answers), %d answers fed",
             counts["users"], counts["incremental"], counts["full"], counts["late"], counts["answers_fed"])
    return counts


@dataclass
class LoadResult:
    users: int
    written: int
    skipped_stale: int
    errors: int


def mastery_item(line: dict, updated_at: str, n_interactions: int, covers: dict | None = None) -> dict:
    """A transform output line as a kt-mastery item (docs/contracts.md §7.2).

    ``covers``: the input line's history_ts and history_items (what the row covers); the output's state is
    stored with them, in the same conditional write. A line with no state (a model without recurrent state,
    or an older night's outputs) removes any stored one: that user gets a full recompute next night.
    """
    covers = covers or {}
    state = line.get("state")
    return {
        "user_id": line["user_id"],
        "mastery": line["mastery"],
        "topic_mastery": line["topic_mastery"],
        "next_skill_recommendation": line["next_skill_recommendation"],
        "predicted_accuracy": line["predicted_accuracy"],
        "model_version": line["model_version"],
        "source": "dkt",
        "as_of": line["as_of"],
        "updated_at": updated_at,
        "n_interactions": state["answers"] if state else n_interactions,
        dynamo.HISTORY_TS: covers.get(dynamo.HISTORY_TS),
        dynamo.HISTORY_ITEMS: covers.get(dynamo.HISTORY_ITEMS),
        dynamo.DKT_STATE: state if state and covers.get(dynamo.HISTORY_TS) else None,
    }


def check_input_line(record: dict) -> dict:
    """A transform input line (build_inputs): what the load needs of it, the user and the answer count."""
    if not isinstance(record.get("user_id"), str) or not record["user_id"]:
        raise BadLine("user_id: must be a non-empty string")
    if not isinstance(record.get("user_sequence"), list):
        raise BadLine("user_sequence: must be a list")
    if dynamo.HISTORY_TS in record and not isinstance(record[dynamo.HISTORY_TS], str):
        raise BadLine(f"{dynamo.HISTORY_TS}: must be a kt-history ts")
    if dynamo.HISTORY_ITEMS in record and not bounds.is_id(record[dynamo.HISTORY_ITEMS]):
        raise BadLine(f"{dynamo.HISTORY_ITEMS}: must be a count")
    return record


def _probability(value: object) -> bool:
    return type(value) in (int, float) and 0.0 <= value <= 1.0


def check_output_line(record: dict) -> dict:
    """A transform output line: an error line (the transform refused the input) or a row kt-mastery can store."""
    if "error" in record:
        if not isinstance(record["error"], str):
            raise BadLine("error: must be a string")
        return record
    for key in ("user_id", "model_version", "as_of"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise BadLine(f"{key}: must be a non-empty string")
    if len(record["user_id"]) > MAX_ID_CHARS:
        raise BadLine(f"user_id: longer than {MAX_ID_CHARS} characters")
    for key in ("mastery", "topic_mastery"):
        value = record.get(key)
        if not isinstance(value, dict) or not all(isinstance(k, str) and _probability(p) for k, p in value.items()):
            raise BadLine(f"{key}: must map names to probabilities in [0, 1]")
    if not all(k.isdigit() and int(k) <= bounds.INT32_MAX for k in record["mastery"]):
        raise BadLine("mastery: keys must be skill ids")
    nxt = record.get("next_skill_recommendation")
    if nxt is not None and not bounds.is_id(nxt):
        raise BadLine(f"next_skill_recommendation: must be a skill id (0 to {bounds.INT32_MAX}) or null")
    if not _probability(record.get("predicted_accuracy")):
        raise BadLine("predicted_accuracy: must be a probability in [0, 1]")
    state = record.get("state")
    if state is not None and not (isinstance(state, dict) and state.get("model_version") == record["model_version"]
                                  and bounds.is_id(state.get("answers"))):
        raise BadLine("state: must be null or the state of the line's model_version (docs/contracts.md §6.4)")
    return record


@dataclass
class NightOutputs:
    items: list[dict]  # kt-mastery rows
    errors: int  # lines the transform refused (error lines)
    quarantined: list[Quarantined]


def night_parts(lake_root: str, run_date: str, updated_at: str) -> Iterator[NightOutputs]:
    """One night's transform outputs as kt-mastery items, one output file at a time (bounded memory).

    An output file is joined with its input file (``part-N.jsonl.out`` with ``part-N.jsonl``) by user_id,
    for the answer count and what the row covers; bad lines of both are quarantined.
    """
    night = lake.join(lake_root, "inference", "batch", run_date)
    input_prefix, output_prefix = lake.join(night, "input"), lake.join(night, "output")
    for uri in lake.list_files(output_prefix):
        input_uri = lake.join(input_prefix, uri[len(output_prefix):].lstrip("/").removesuffix(".out"))
        inputs, bad = read_jsonl(input_uri, check_input_line) if lake.exists(input_uri) else ([], [])
        by_user = {r["user_id"]: r for r in inputs}
        records, wrong = read_jsonl(uri, check_output_line)
        bad.extend(wrong)
        items, errors = [], 0
        for record in records:
            if "error" in record:
                errors += 1
                log.error("transform rejected a line: %s (%s)", record["error"], record.get("field"))
                continue
            given = by_user.get(record["user_id"], {})
            items.append(mastery_item(record, updated_at, len(given.get("user_sequence", [])), given))
        yield NightOutputs(items, errors, bad)


def read_outputs(lake_root: str, run_date: str, updated_at: str) -> NightOutputs:
    """kt-mastery items from one night's transform outputs, all files at once (lake checks, rebuilds)."""
    night = NightOutputs([], 0, [])
    for part in night_parts(lake_root, run_date, updated_at):
        night.items.extend(part.items)
        night.errors += part.errors
        night.quarantined.extend(part.quarantined)
    return night


def _output_items(lake_root: str, run_date: str, updated_at: str) -> tuple[list[dict], int]:
    """kt-mastery items from one night's transform outputs, and the count of error lines."""
    night = read_outputs(lake_root, run_date, updated_at)
    return night.items, night.errors


def load_outputs(client: Any, mastery_table: str, lake_root: str, run_date: str, last_day: str) -> LoadResult:
    """Conditional writes of the transform outputs, file by file; the watermark moves only after all of them."""
    updated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result = LoadResult(0, 0, 0, 0)
    for part in night_parts(lake_root, run_date, updated_at):
        written = dynamo.write_mastery(client, mastery_table, part.items)
        result.users += len(part.items)
        result.written += written.written
        result.skipped_stale += written.skipped_stale
        result.errors += part.errors
    lake.write_text(watermark_uri(lake_root), json.dumps(
        {"last_day": last_day, "run_date": run_date, "previous_last_day": read_watermark(lake_root, run_date)}))
    return result


def batch_nights(lake_root: str) -> list[str]:
    """The run dates with a folder under inference/batch/, in order."""
    batch = lake.join(lake_root, "inference", "batch")
    return sorted({uri[len(batch):].lstrip("/").split("/", 1)[0] for uri in lake.list_files(batch)}
                  - {"_watermark.json"})


def dkt_rows_from_lake(lake_root: str) -> list[dict]:
    """Every night's transform outputs as kt-mastery DKT rows, nights in order (kt-mastery is a projection).

    updated_at becomes the night's run date, the original write time being gone with the table.
    """
    rows = []
    for night in batch_nights(lake_root):
        rows.extend(_output_items(lake_root, night, f"{night}T00:00:00+00:00")[0])
    return rows


def rebuild_mastery(client: Any, mastery_table: str, lake_root: str) -> int:
    """Replay every night's outputs from the lake into kt-mastery; return the rows written.

    The conditional writes keep the newest evidence whatever the order; a user's
    rows are written in turn (``dynamo.write_mastery``), nights in order.
    """
    return dynamo.write_mastery(client, mastery_table, dkt_rows_from_lake(lake_root)).written
