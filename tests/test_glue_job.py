"""The Glue job as Glue 5.1 runs it: glue/ednet_preprocessor.py and kt_glue.zip on Glue's Python path only.

Glue gives a Spark job's script the standard library, the Python modules of
AWS's documented list (tests/glue_runtime/glue_provided_modules.json, its
source named there), pyspark/py4j and awsglue, plus the ``--extra-py-files``
zip. Here a Python started with ``-I -S`` (no site-packages) gets exactly that:
``.venv-glue`` (built by ``make test`` from requirements-glue.txt: the listed
modules the job imports, at Glue 5.1's versions, nothing else), pyspark 3.5.6
(Glue 5.1's Spark) from the app venv, the ``kt_glue.zip`` that ``kt package``
builds, and a stand-in ``awsglue`` (tests/glue_runtime/awsglue, following
aws-glue-libs). The job's arguments are terraform/glue.tf's
``default_arguments`` (the lake a local folder, since local Spark cannot read
s3://) overridden by the ednet_etl DAG's per-run arguments
(``kt.runtime.glue_job``), as a StartJobRun does. Its output must equal the
reference ETL's (run in the app venv) on the same raw files.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import hcl2
import pyspark
import pytest
from hcl2 import SerializationOptions
from test_spark_etl import assert_same_output

from kt import etl, lake, package, runtime, sample
from kt.config import Settings

ROOT = Path(__file__).resolve().parents[1]
GLUE_RUNTIME = ROOT / "tests" / "glue_runtime"
LAUNCH = GLUE_RUNTIME / "launch.py"
PROVIDED = json.loads((GLUE_RUNTIME / "glue_provided_modules.json").read_text())
GLUE_VENV = ROOT / ".venv-glue"
GLUE_PYTHON = GLUE_VENV / "bin" / "python"
MODELLED = "5.1"  # the Glue version whose module versions and Spark run here
SPARK_RUNTIME = ("pyspark", "py4j")  # Glue's Spark runtime, not on the pip list: always there
# The Spark configuration Glue's launcher would give, for a 2-core local run; C1-only JIT: a short JVM run
# (about half the wall time on 2 busy cores, results unchanged).
SUBMIT_ARGS = ("--master local[2] --driver-memory 1g --driver-java-options -XX:TieredStopAtLevel=1 "
               "--conf spark.ui.enabled=false "
               "--conf spark.sql.shuffle.partitions=2 --conf spark.sql.session.timeZone=UTC pyspark-shell")
TF_OPTIONS = SerializationOptions(strip_string_quotes=True, with_comments=False, explicit_blocks=False)
TF_REF = re.compile(r"\$\{(local|var)\.([\w-]+)\}")


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def provided(version: str) -> dict[str, str]:
    """Glue `version`'s provided distributions: canonical name -> version."""
    return {canonical(name): v for name, v in PROVIDED["modules"][version].items()}


def glue_site_packages() -> Path:
    """.venv-glue's site-packages, after checking it holds only Glue-provided distributions at Glue's versions."""
    assert GLUE_PYTHON.exists(), f"{GLUE_VENV} is missing: `make test` builds it from requirements-glue.txt"
    (site,) = GLUE_VENV.glob("lib/python*/site-packages")
    installed = {canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions(path=[str(site)])}
    assert installed and installed.items() <= provided(MODELLED).items(), "not Glue's module or version"
    assert set(installed) <= set(provided("5.0")), "Glue 5.0 lacks one (at whatever version)"
    return site


def spark_runtime(dest: Path) -> Path:
    """A folder of links to this venv's pyspark and py4j: Glue's Spark runtime."""
    dest.mkdir()
    for name in SPARK_RUNTIME:
        dist = importlib.metadata.distribution(name)
        for top in {f.parts[0] for f in dist.files if f.parts[0] != ".."}:
            (dest / top).symlink_to(Path(dist.locate_file(top)))
    return dest


@cache
def terraform() -> dict[str, dict]:
    """glue.tf, locals.tf, variables.tf and s3.tf, parsed."""
    return {name: hcl2.load((ROOT / "terraform" / name).open(), serialization_options=TF_OPTIONS)
            for name in ("glue.tf", "locals.tf", "variables.tf", "s3.tf")}


def tf_resource(file: str, type_: str, name: str) -> dict:
    return next(entry[type_][name] for entry in terraform()[file]["resource"] if name in entry.get(type_, {}))


def tf_value(value: str, lake_root: str) -> str:
    """A Terraform string with its locals and variables resolved, the lake bucket being the local lake folder."""
    tf_locals = {k: v for entry in terraform()["locals.tf"]["locals"] for k, v in entry.items()}
    variables = {k: v for entry in terraform()["variables.tf"]["variable"] for k, v in entry.items()}

    def resolve(match: re.Match) -> str:
        kind, name = match.groups()
        if kind == "var":
            return str(variables[name]["default"])
        return lake_root if name == "lake_uri" else tf_value(tf_locals[name], lake_root)

    resolved = TF_REF.sub(resolve, value)
    assert "${" not in resolved, f"unresolved Terraform expression in {value!r}"
    return resolved


def deploy(lake_root: str) -> dict[str, str]:
    """What Terraform uploads for the job (script, kt_glue.zip, skill mappings), into the local lake; the job's paths."""
    for name in ("glue_script", "skill_mappings", "glue_library"):
        obj = tf_resource("s3.tf", "aws_s3_object", name)
        target = tf_value(f"${{local.lake_uri}}/{obj['key']}", lake_root)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if name == "glue_library":
            package.build_glue_zip(target)  # `kt package`; Terraform uploads its dist/kt_glue.zip
        else:
            shutil.copyfile(obj["source"].replace("${path.module}", str(ROOT / "terraform")), target)
    job = tf_resource("glue.tf", "aws_glue_job", "this")
    paths = {"script": tf_value(job["command"][0]["script_location"], lake_root),
             "library": tf_value(job["default_arguments"]["--extra-py-files"], lake_root)}
    assert all(os.path.isfile(p) for p in paths.values())
    return paths


def job_argv(lake_root: str, settings: Settings) -> list[str]:
    """sys.argv[1:] of a run: the job's default arguments, the run's arguments over them, Glue's ids."""
    job = tf_resource("glue.tf", "aws_glue_job", "this")
    arguments = {key: tf_value(value, lake_root) for key, value in job["default_arguments"].items()}
    dag = runtime.glue_job(settings)
    assert dag["job_name"] == tf_value(job["name"], lake_root)
    arguments.update(dag["script_args"])
    arguments.update({"--JOB_ID": "j_0123", "--JOB_RUN_ID": "jr_0123", "--JOB_NAME": dag["job_name"]})
    return [token for item in arguments.items() for token in item]


def glue_python(path: list[Path | str], *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """.venv-glue's Python with no site-packages: the standard library plus `path`, through launch.py."""
    env = {k: v for k, v in os.environ.items() if k != "SPARK_HOME"}
    env["PYSPARK_SUBMIT_ARGS"] = SUBMIT_ARGS
    return subprocess.run([str(GLUE_PYTHON), "-I", "-S", str(LAUNCH), os.pathsep.join(map(str, path)), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> list[Path]:
    """Glue's modules and its Spark runtime: the path entries every Glue run here starts from."""
    return [glue_site_packages(), spark_runtime(tmp_path_factory.mktemp("glue") / "spark")]


def test_the_modelled_runtime_is_glue_51s():
    assert pyspark.__version__ == PROVIDED["spark"][MODELLED]
    done = subprocess.run([str(GLUE_PYTHON), "-I", "-S", "-c", "import sys; print(sys.version)"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.startswith(PROVIDED["python"][MODELLED] + ".")
    pins = [line.split("==") for line in (ROOT / "requirements-glue.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert {canonical(name): v for name, v in pins}.items() <= provided(MODELLED).items()


def test_every_module_of_kt_glue_zip_imports_on_glue(site, tmp_path):
    """The Glue path has no tqdm, torch or serving stack; every module `kt package` zips imports without them."""
    zip_path = tmp_path / "kt_glue.zip"
    modules = [f"kt.{m[:-3]}" if m != "__init__.py" else "kt" for m in package.build_glue_zip(str(zip_path))]
    assert {"kt.spark_etl", "kt.etl", "kt.readers", "kt.lake"} <= set(modules)
    check = tmp_path / "imports.py"
    check.write_text(
        "import importlib, importlib.util, json\n"
        "absent = [m for m in ('tqdm', 'torch', 'sklearn', 'fastapi', 'airflow') if importlib.util.find_spec(m)]\n"
        f"for m in {modules!r}:\n    importlib.import_module(m)\n"
        "versions = {m: importlib.import_module(m).__version__ for m in ('numpy', 'pyarrow', 'pandas', 'boto3')}\n"
        "print(json.dumps({'found_but_not_on_glue': absent, 'kt': importlib.import_module('kt').__file__,\n"
        "                  'versions': versions}))\n"
    )
    done = glue_python([*site, zip_path], str(check))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-2])
    glue = provided(MODELLED)
    assert report == {"found_but_not_on_glue": [], "kt": str(zip_path / "kt" / "__init__.py"),
                      "versions": {m: glue[m] for m in ("numpy", "pyarrow", "pandas", "boto3")}}


def test_bookmarks_are_off_in_terraform_and_the_job_refuses_them(site, tmp_path):
    """Terraform disables bookmarks; a run that enables them stops before Spark starts."""
    job = tf_resource("glue.tf", "aws_glue_job", "this")
    assert job["default_arguments"]["--job-bookmark-option"] == "job-bookmark-disable"
    lake_root = str(tmp_path / "lake")
    paths = deploy(lake_root)
    argv = job_argv(lake_root, Settings(lake=lake_root))
    done = glue_python([*site, paths["library"], GLUE_RUNTIME], paths["script"], *argv,
                       "--job-bookmark-option", "job-bookmark-enable")
    assert done.returncode != 0
    assert "ValueError: --job-bookmark-option job-bookmark-enable" in done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"job_calls": []}  # never reached Job.init
    assert "SparkContext" not in done.stderr


@pytest.mark.slow
def test_glue_branch_end_to_end_equals_the_reference(site, tmp_path):
    """The Glue branch on local Spark with Terraform's and the DAG's arguments: the reference ETL's output."""
    lake_root = str(tmp_path / "lake")
    sample.generate(lake_root, users=60, skills=8, seed=11, tutor_users=0)  # Riiid, with malformed rows
    paths = deploy(lake_root)
    settings = Settings(lake=lake_root)
    argv = job_argv(lake_root, settings)

    done = glue_python([*site, paths["library"], GLUE_RUNTIME], paths["script"], *argv)
    assert done.returncode == 0, done.stderr[-5000:]
    calls = json.loads(done.stdout.splitlines()[-1])["job_calls"]
    assert calls == [["init", "ednet-preprocessor", "job-bookmark-disable"], ["commit", "ednet-preprocessor", None]]

    out = lake.dataset(settings, "processed")  # the version the job switched processed/ednet/_current.json to
    assert out != f"{lake_root}/processed/ednet"
    manifest = json.loads(lake.read_text(f"{out}/_manifest.json"))
    reference = str(tmp_path / "reference")
    ref_manifest = etl.run_etl(f"{lake_root}/raw/ednet", reference, progress=False)  # same files, same paths
    assert_same_output(reference, out, ref_manifest, manifest)
    assert runtime.check_manifest(settings)["rows_in"] == manifest["rows_in"] > 0  # the DAG's next task accepts it


@pytest.fixture
def awsglue(monkeypatch):
    """The stand-in awsglue, imported in this process and forgotten after (test_spark_etl needs it absent)."""
    monkeypatch.syspath_prepend(str(GLUE_RUNTIME))
    import awsglue.utils

    yield awsglue.utils
    for name in [m for m in sys.modules if m == "awsglue" or m.startswith("awsglue.")]:
        del sys.modules[name]


ARGV0 = "script.py"


def test_resolved_options_follow_aws_glue_libs(awsglue):
    """Keys as argparse names them, unknown arguments ignored, bookmarks off by default, TempDir mirrored."""
    args = awsglue.getResolvedOptions(
        [ARGV0, "--JOB_ID", "j_1", "--enable-metrics", "true", "--raw", "r", "--skill-mappings", "m", "--TempDir", "t"],
        ["raw", "skill-mappings"])
    assert (args["raw"], args["skill_mappings"], args["JOB_ID"]) == ("r", "m", "j_1")
    assert (args["job_bookmark_option"], args["RedshiftTempDir"]) == ("job-bookmark-disable", "t")
    assert "enable_metrics" not in args and "continuation_option" not in args
    old_style = awsglue.getResolvedOptions([ARGV0, "--continuation-option", "continuation-enabled"], [])
    assert old_style["job_bookmark_option"] == "job-bookmark-enable"


@pytest.mark.parametrize(
    ("argv", "options", "error", "match"),
    [
        ([ARGV0, "--raw", "r"], ["raw", "processed"], "GlueArgumentError", "--processed"),
        ([ARGV0, "--job-bookmark-option", "on"], [], "GlueArgumentError", "invalid choice"),
        ([ARGV0], ["job-bookmark-option"], "RuntimeError", "reserved"),
        ([ARGV0, "--job-bookmark-option", "job-bookmark-pause", "--job-bookmark-from", "a"], [], "RuntimeError",
         "Missing option or value for --job-bookmark-to"),
        ([ARGV0, "--job-bookmark-from", "a", "--job-bookmark-to", "b"], [], "RuntimeError", "Invalid option"),
    ],
)
def test_resolved_options_refuse_as_aws_glue_libs(awsglue, argv, options, error, match):
    expected = awsglue.GlueArgumentError if error == "GlueArgumentError" else RuntimeError
    with pytest.raises(expected, match=match):
        awsglue.getResolvedOptions(argv, options)


def test_the_script_asks_for_optional_options_only_when_given(awsglue):
    """getResolvedOptions fails on a missing asked-for option; a job the DAG made itself has no --skill-mappings."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ednet_preprocessor", ROOT / "glue" / "ednet_preprocessor.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = ["--JOB_NAME", "j", "--raw", "r", "--processed", "p", "--format", "kt1"]
    args = awsglue.getResolvedOptions([ARGV0, *argv], script.glue_options(argv))
    assert (args["format"], "skill_mappings" in args) == ("kt1", False)
