"""`make test` runs what CI runs: chromium is installed first (or the run stops saying how), and skips are named.

scripts/ensure-chromium.sh runs here against a stand-in apt-get and sudo on
PATH (nothing is installed) and a chromium path of the test's own
(``KT_CHROMIUM``); the summary hook of tests/conftest.py is called with the
skip reports of a run.

    .venv/bin/python -m pytest -q tests/test_make_test.py
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "ensure-chromium.sh"
# A stand-in apt-get: logs its arguments; "install" puts an executable at $KT_CHROMIUM; FAIL_APT=1 fails.
FAKE_APT = """#!/bin/bash
echo "$*" >> "$APT_LOG"
[ "${FAIL_APT:-0}" = 1 ] && exit 100
if [ "$1" = install ]; then printf '#!/bin/sh\\necho Chromium 1.0\\n' > "$KT_CHROMIUM"; chmod +x "$KT_CHROMIUM"; fi
exit 0
"""
FAKE_SUDO = '#!/bin/bash\necho "sudo $*" >> "$APT_LOG"\nexec "$@"\n'


@pytest.fixture
def machine(tmp_path):
    """A PATH with the stand-in apt-get and sudo first, a log of their calls and a chromium path not there yet."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("apt-get", FAKE_APT), ("sudo", FAKE_SUDO)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "APT_LOG": str(tmp_path / "apt.log"),
           "KT_CHROMIUM": str(tmp_path / "chromium")}
    return SimpleNamespace(env=env, log=tmp_path / "apt.log", chromium=tmp_path / "chromium", bin=bin_dir)


def ensure(machine, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/bash", str(SCRIPT), *args], env={**machine.env, **env}, capture_output=True,
                          text=True, timeout=60)


def apt_calls(machine) -> list[str]:
    return [line.removeprefix("sudo ") for line in machine.log.read_text().splitlines()] if machine.log.exists() else []


def test_installs_chromium_with_apt_get_when_it_is_missing(machine):
    result = ensure(machine)
    assert result.returncode == 0, result.stderr
    assert [c for c in apt_calls(machine) if not c.startswith("env ")] == ["update -q", "install -y -q chromium"]
    assert "Chromium 1.0" in result.stdout  # it checks the installed browser runs


def test_does_nothing_when_chromium_is_there(machine):
    machine.chromium.write_text("#!/bin/sh\n")
    machine.chromium.chmod(0o755)
    result = ensure(machine)
    assert result.returncode == 0 and result.stdout == "" and apt_calls(machine) == []


def test_dry_run_prints_the_commands_and_installs_nothing(machine):
    result = ensure(machine, "--dry-run")
    assert result.returncode == 0
    assert "apt-get update -q" in result.stdout and "apt-get install -y -q chromium" in result.stdout
    assert apt_calls(machine) == [] and not machine.chromium.exists()


@pytest.mark.parametrize("case", ["no apt-get", "apt-get fails"])
def test_stops_with_a_message_saying_how(machine, case):
    if case == "no apt-get":
        (machine.bin / "apt-get").unlink()
        machine.env["PATH"] = str(machine.bin)  # nothing else: no apt-get anywhere
    result = ensure(machine, FAIL_APT="1")
    assert result.returncode == 1
    assert "sudo apt-get install chromium" in result.stderr and str(machine.chromium) in result.stderr
    assert ("no apt-get" if case == "no apt-get" else "apt-get update failed") in result.stderr


def test_make_test_ensures_chromium_before_the_suite_and_ci_runs_make_test():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE).group(1).splitlines()
    ensure_line = next(i for i, line in enumerate(recipe) if "scripts/ensure-chromium.sh" in line)
    pytest_line = next(i for i, line in enumerate(recipe) if "pytest" in line)
    assert ensure_line < pytest_line
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == "exec make test"  # exactly the README's test command
    assert "make test" in (ROOT / "README.md").read_text()
    assert os.access(SCRIPT, os.R_OK)


def _summary_lines(request, reasons: list[str]) -> list[str]:
    """What tests/conftest.py's summary hook writes for skip reports with these reasons."""
    conftest = next(p for p in request.config.pluginmanager.get_plugins()
                    if getattr(p, "__file__", None) and Path(p.__file__).resolve() == ROOT / "tests" / "conftest.py")
    lines: list[str] = []
    reporter = SimpleNamespace(
        stats={"skipped": [SimpleNamespace(longrepr=("tests/x.py", 1, f"Skipped: {r}")) for r in reasons]},
        write_line=lambda text, **markup: lines.append(text),
    )
    conftest.pytest_terminal_summary(reporter)
    return lines


def test_the_summary_names_what_skipped_tests_looked_for(request):
    from kt_testing import SHARED_DATA

    lines = _summary_lines(request, [f"no real data at {SHARED_DATA}"] * 3 + ["/usr/bin/chromium is missing"] * 2)
    assert len(lines) == 2
    assert lines[0].startswith("real data: 3 tests") and os.path.normpath(SHARED_DATA) in lines[0]
    assert lines[1].startswith("browser: 2 tests") and "make test" in lines[1]
    assert _summary_lines(request, ["some other reason"]) == []
