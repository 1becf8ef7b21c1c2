"""docs/contracts.md against the code: every table marked *(checked)*, every quoted constant, every reference.

The tables are read from the Markdown and compared with what the code defines
or writes (kt.config, kt.schema, the sample lake's manifest, a trained model's
directory, the DynamoDB items, the DAG files parsed with ``ast``, never run).
References to the document elsewhere in the repository must name a section it
has, and nothing may point to a design file outside the repository.

    .venv/bin/python -m pytest -q tests/test_contracts.py
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "contracts.md"
DAGS = ROOT / "dags"
HEADING = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", re.MULTILINE)
CONSTANT = re.compile(r"`(kt\.[\w.]+) = ([^`\n]+)`")
REFERENCE = re.compile(r"contracts\.md`?\s+((?:§|section\s+)\d+(?:\.\d+)?(?:(?:-|,\s*§|,\s+section\s+)\d+(?:\.\d+)?)*)")
# Where references to the document live (docs/contracts.md itself included).
SCANNED = ("src", "dags", "plugins", "glue", "tests", "bench", "docs", "terraform", "scripts", ".ci")
SCANNED_FILES = ("README.md", "Makefile")
OLD_DESIGN = ("DESIGN" + " §", "DESIGN" + " section", "DESIGN" + ".md", "shared/" + "DESIGN")


# Reading the document


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def sections() -> dict[str, str]:
    """Section number ("4", "4.1") -> its text up to the next heading."""
    text = doc_text()
    found = list(HEADING.finditer(text))
    return {m.group(1): text[m.end() : (found[i + 1].start() if i + 1 < len(found) else len(text))]
            for i, m in enumerate(found)}


def tables(number: str) -> list[list[dict[str, str]]]:
    """The Markdown tables of one section, each a list of {header: cell}."""
    out, block = [], []
    for line in sections()[number].splitlines() + [""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif block:
            header, rows = block[0], block[2:]  # block[1] is the |---| line
            out.append([dict(zip(header, row)) for row in rows])
            block = []
    return out


def table(number: str, index: int = 0) -> list[dict[str, str]]:
    return tables(number)[index]


def code(cell: str) -> str:
    """A cell that is one code span, without its backticks."""
    return cell.strip().strip("`")


def codes(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def paragraph(number: str, starts_with: str) -> str:
    """The paragraph of a section that starts with the given words."""
    for block in sections()[number].split("\n\n"):
        if block.strip().startswith(starts_with):
            return block
    raise AssertionError(f"no paragraph starting with {starts_with!r} in §{number}")


# The document's shape and the references to it


def test_sections_are_numbered_1_to_10():
    top = [n for n in sections() if "." not in n]
    assert top == [str(n) for n in range(1, 11)]
    for n in sections():
        assert "." not in n or n.split(".")[0] in top


def _scanned_files() -> list[Path]:
    files = [ROOT / name for name in SCANNED_FILES]
    for folder in SCANNED:
        for dirpath, dirnames, filenames in os.walk(ROOT / folder):
            dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.endswith(".egg-info")]  # built, not ours
            files.extend(Path(dirpath) / f for f in filenames if not f.endswith((".pyc", ".png", ".zip", ".gz")))
    return [f for f in files if f.is_file()]


def test_every_reference_names_a_section_of_the_document():
    known = set(sections())
    seen = 0
    for path in _scanned_files():
        for match in REFERENCE.finditer(path.read_text(encoding="utf-8", errors="replace")):
            for number in re.findall(r"\d+(?:\.\d+)?", match.group(1)):
                seen += 1
                assert number in known, f"{path.relative_to(ROOT)}: {match.group(0)!r} names no section of {DOC.name}"
    assert seen >= 20  # the docstrings, help texts and DAG docs do point here


def test_nothing_points_to_a_design_file_outside_the_repository():
    for path in _scanned_files():
        if path == Path(__file__):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for old in OLD_DESIGN:
            assert old not in text, f"{path.relative_to(ROOT)} still refers to {old!r}: point to docs/contracts.md"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert not re.findall(r"\]\((?:\.\./|/)", readme), "README links outside the repository"


@pytest.mark.parametrize("name, value", CONSTANT.findall(DOC.read_text(encoding="utf-8")))
def test_quoted_constants_are_the_codes(name, value):
    module, attr = name.rsplit(".", 1)
    assert getattr(importlib.import_module(module), attr) == ast.literal_eval(value), name


# §2 settings


def test_settings_table_is_kt_config():
    import hcl2

    from kt.config import Settings, env_var

    rows = {code(r["variable"]): r for r in table("2.1")}
    fields = dataclasses.fields(Settings)
    assert sorted(rows) == sorted(env_var(f.name) for f in fields)
    terraform = hcl2.load((ROOT / "terraform" / "locals.tf").open())["locals"][0]["ssm_config"]
    for f in fields:
        row = rows[env_var(f.name)]
        assert code(row["SSM key"]) == f.name
        default = "unset" if f.default is None else str(f.default).lower() if isinstance(f.default, bool) else str(f.default)
        assert code(row["default"]) == default, f.name
        assert row["Terraform writes it"] == ("yes" if f.name in terraform else "no"), f.name


def test_training_paths_table_is_kt_config():
    from kt.config import TrainingPaths, training_paths

    rows = table("2.3")
    defaults = TrainingPaths()
    covered = set()
    for row in rows:
        var = code(row["variable"])
        changed = [f.name for f in dataclasses.fields(TrainingPaths)
                   if getattr(training_paths(environ={var: "/set/by/env"}), f.name) == "/set/by/env"]
        assert len(changed) == 1, f"{var} sets {changed}"
        assert code(row["default"]) == getattr(defaults, changed[0])
        covered.add(changed[0])
    assert covered == {f.name for f in dataclasses.fields(TrainingPaths)}


# §3 lake


def test_the_layout_lists_every_prefix_the_code_builds():
    from kt import drift, lake, refresh
    from kt.config import Settings

    settings = Settings(lake="LAKE")
    layout = sections()["3"]
    paths = [*lake.uris(settings, run_date="<run-date>").values(), refresh.watermark_uri("LAKE"),
             drift.report_uri(settings, "<run-date>")]
    for uri in paths:
        assert uri.startswith("LAKE/")
        assert uri[len("LAKE/"):] in layout, f"{uri} is not in §3"


def test_the_pointer_example_has_the_keys_switch_writes(tmp_path):
    from kt import lake

    root = str(tmp_path / "processed" / "ednet")
    version = lake.new_version()
    lake.write_text(lake.join(root, version, "_manifest.json"), "{}")
    written = lake.switch(root, version, "_manifest.json", keep=3)
    example = re.search(r"```\n(\{\"version\".*?\})\n```", sections()["3"], re.S)
    assert example, "no pointer example in §3"
    documented = json.loads(example.group(1))
    assert set(documented) == set(written)
    assert re.fullmatch(r"v=\d{8}T\d{12}Z", documented["version"]) and re.fullmatch(r"v=\d{8}T\d{12}Z", version)
    assert f"{lake.POINTER}" in sections()["3"]


def test_raw_formats_are_kt_schema():
    from kt import schema

    text = sections()["3.2"]
    expected = {"Riiid `train.csv`": schema.RIIID_COLUMNS, "Riiid `questions.csv`": schema.RIIID_QUESTION_COLUMNS,
                "EdNet KT1 per-user file": schema.KT1_COLUMNS, "KT1 shard": schema.KT1_SHARD_COLUMNS,
                "EdNet `contents/questions.csv`": schema.KT1_QUESTION_COLUMNS}
    for label, columns in expected.items():
        match = re.search(re.escape(label) + r"[^\n]* columns: `([^`]+)`", text)
        assert match, f"no column list for {label} in §3.2"
        assert tuple(c.strip() for c in match.group(1).split(",")) == columns, label


# §4 processed data


def _type_name(t: pa.DataType) -> str:
    return f"list<{_type_name(t.value_type)}>" if pa.types.is_list(t) else str(t)


@pytest.mark.parametrize("number, name", [("4.1", "SEQUENCES_SCHEMA"), ("4.2", "SKILLS_SCHEMA"),
                                          ("4.3", "QUARANTINE_SCHEMA")])
def test_parquet_tables_are_kt_schema(number, name):
    from kt import schema

    documented = [(code(r["column"]), r["type"]) for r in table(number)]
    assert documented == [(f.name, _type_name(f.type)) for f in getattr(schema, name)]


def test_quarantine_reasons_in_check_order():
    from kt.schema import QUARANTINE_REASONS

    assert tuple(code(r["reason"]) for r in table("4.3", 1)) == QUARANTINE_REASONS


def test_manifest_keys_are_what_the_etl_writes(sample_lake):
    manifest = json.loads(Path(sample_lake, "processed", "ednet", "_manifest.json").read_text())
    assert [code(r["key"]) for r in table("4.4")] == list(manifest)


def test_topics_table_is_kt_topics_and_the_glue_mapping():
    from kt.topics import DEFAULT_SKILL_TOPICS, TOPICS

    documented = [(r["skill"], r["topic"]) for r in table("4.5")]
    assert documented == list(DEFAULT_SKILL_TOPICS.items())
    assert [t for _, t in documented] == list(TOPICS)
    assert json.loads((ROOT / "glue" / "skill_mappings.json").read_text()) == dict(documented)


# §5 model and artifact


def test_hyperparameters_table_is_kt_train():
    from kt.train import Hyperparameters

    documented = [(code(r["name"]), r["default"]) for r in table("5.2")]
    assert documented == [(f.name, str(f.default)) for f in dataclasses.fields(Hyperparameters)]


def test_model_dir_members_and_model_json_keys(tiny_model_dir):
    from kt.model import DKTConfig

    members = sorted(str(p.relative_to(tiny_model_dir)) for p in Path(tiny_model_dir).rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts)
    assert sorted(code(r["member"]) for r in table("5.4")) == members
    info = json.loads(Path(tiny_model_dir, "model.json").read_text())
    rows = table("5.5")
    assert [code(r["key"]) for r in rows] == list(info)
    config_row = next(r for r in rows if code(r["key"]) == "config")
    assert codes(config_row["meaning"])[1:] == [f.name for f in dataclasses.fields(DKTConfig)] == list(info["config"])


# §6 inference


def test_response_table_and_example_are_kt_mastery():
    from kt.mastery import response

    body = response({1: 0.5, 2: 0.25}, {2}, {"algebra": 0.375}, "v1")
    assert [code(r["key"]) for r in table("6.2")] == list(body)
    example = json.loads(re.search(r"```json\n(.*?)```", sections()["6.2"], re.S).group(1))
    assert list(example) == list(body)


# §7 DynamoDB


def test_dynamodb_keys_are_what_ensure_tables_creates():
    import boto3
    from moto import mock_aws

    from kt import dynamo

    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        dynamo.ensure_tables(client, "kt-history", "kt-mastery")
        history = client.describe_table(TableName="kt-history")["Table"]
        mastery = client.describe_table(TableName="kt-mastery")["Table"]

    def keys(schema: list[dict]) -> list[str]:
        return [k["AttributeName"] for k in sorted(schema, key=lambda k: k["KeyType"])]  # HASH before RANGE

    history_keys = re.search(r"Key: `(\w+)` \(S, partition\), `(\w+)` \(S, sort\)", sections()["7.1"]).groups()
    assert list(history_keys) == keys(history["KeySchema"])
    (index,) = history["GlobalSecondaryIndexes"]
    gsi = re.search(r"index\s+`(\w+)`: partition `(\w+)`, sort `(\w+)`, keys only", sections()["7.1"]).groups()
    assert list(gsi) == [index["IndexName"], *keys(index["KeySchema"])]
    assert index["Projection"]["ProjectionType"] == "KEYS_ONLY"
    assert re.search(r"Key: `(\w+)` \(S\)\.", sections()["7.2"]).group(1) == keys(mastery["KeySchema"])[0]


def _attributes(number: str) -> list[tuple[str, str]]:
    return [(code(r["attribute"]), r["type"]) for r in table(number)]


def test_history_item_attributes():
    from kt import dynamo

    answer = {"user_id": "u1", "answer_id": "a1", "skill_id": 3, "correct": 1, "content_id": 7,
              "answered_at": "2026-11-24T10:00:00.000Z"}
    item = dynamo.serialize(dynamo.history_item(answer))
    assert _attributes("7.1") == [(k, next(iter(v))) for k, v in item.items()]
    assert "content_id" not in dynamo.serialize(dynamo.history_item({**answer, "content_id": None}))


def test_mastery_item_attributes():
    from kt import dynamo, refresh

    line = {"user_id": "u1", "as_of": "2026-11-24T10:00:00.000Z", "mastery": {"3": 0.5}, "topic_mastery": {"algebra": 0.5},
            "next_skill_recommendation": 3, "predicted_accuracy": 0.5, "model_version": "v1"}
    item = dynamo.serialize(refresh.mastery_item(line, "2026-11-25T02:00:00+00:00", 1))
    assert _attributes("7.2") == [(k, next(iter(v))) for k, v in item.items()]


# §8 DAGs


def _dag_facts(path: Path) -> dict[str, str | list[str]]:
    """dag_id, schedule, params, announced asset and task ids of a DAG file, read with ast (nothing runs)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            value = node.value
            if isinstance(value, ast.Constant):
                names[node.targets[0].id] = value.value
            elif isinstance(value, ast.Call) and getattr(value.func, "attr", "") == "lake_asset":
                names[node.targets[0].id] = f"{value.args[0].value} asset"
    (dag_fn,) = [n for n in tree.body if isinstance(n, ast.FunctionDef)
                 and any(isinstance(d, ast.Call) and getattr(d.func, "id", "") == "dag" for d in n.decorator_list)]
    (decorator,) = [d for d in dag_fn.decorator_list if isinstance(d, ast.Call)]
    kw = {k.arg: k.value for k in decorator.keywords}
    schedule = kw["schedule"]
    if isinstance(schedule, ast.List):
        schedule_text = " ".join(names[e.id] for e in schedule.elts)
    else:
        schedule_text = "manual" if schedule.value is None else schedule.value
    params = [k.value for k in kw["params"].keys] if "params" in kw else []
    tasks, announces = [], []
    for node in ast.walk(dag_fn):
        if isinstance(node, ast.FunctionDef) and node is not dag_fn:
            if any("task" in ast.unparse(d) for d in node.decorator_list):
                tasks.append(node.name)
            for d in node.decorator_list:
                for k in getattr(d, "keywords", []):
                    if k.arg == "outlets":
                        announces += [names[e.id] for e in k.value.elts]
        elif isinstance(node, ast.Call):
            tasks += [k.value.value for k in node.keywords if k.arg == "task_id" and isinstance(k.value, ast.Constant)]
    dag_id = kw["dag_id"]
    return {"dag_id": names[dag_id.id] if isinstance(dag_id, ast.Name) else dag_id.value, "schedule": schedule_text,
            "params": params, "announces": " ".join(announces), "tasks": tasks}


def test_dag_table_is_the_dag_files():
    documented = {code(r["dag_id"]): r for r in table("8")}
    files = sorted(DAGS.glob("*.py"))
    assert sorted(documented) == sorted(f.stem for f in files)
    for path in files:
        facts = _dag_facts(path)
        row = documented[facts["dag_id"]]
        assert code(row["schedule"]) == facts["schedule"], path.name
        assert codes(row["params"]) == facts["params"], path.name
        assert row["announces"] == facts["announces"], path.name
        assert sorted(codes(row["tasks"])) == sorted(facts["tasks"]), path.name


# §9 API


def test_get_body_and_answer_fields_are_kt_api():
    from kt import api

    assert tuple(codes(paragraph("9", "GET body"))) == api.GET_FIELDS
    answer = paragraph("9", "Answer body")
    for field in api.ANSWER_FIELDS:
        assert f"`{field}`" in answer
        assert (f"`{field}` (optional" in answer) == (field not in api.ANSWER_REQUIRED), field
