"""`kt package` (`make package`): the two archives AWS runs our code from.

    kt package --out dist

- ``dist/kt_glue.zip``: kt's pure-Python modules for the Glue job
  (``--extra-py-files``; Glue puts the zip on ``sys.path``): every module
  whose module-level imports, followed through kt, reach nothing Glue lacks
  (torch, the serving stack, plotting).
- ``dist/sourcedir.tar.gz``: SageMaker script mode (``sagemaker_submit_directory``):
  ``kt_train_entry.py`` (``sagemaker_program``) calling ``kt.job_evaluation.main``
  (kt.train, then the job's evaluation of the candidate and the current model), the
  ``kt`` package, and a ``requirements.txt`` that the training toolkit
  pip-installs on top of the PyTorch image (which brings torch) before
  it runs the entry point. tests/test_toolkit_training.py runs the archive under
  the real toolkit (docs/aws-fidelity.md).

Terraform uploads both (``terraform/s3.tf``). Locally, publishing the sourcedir
to ``lake.uris(settings)["sourcedir"]`` makes the local runner run
script mode from it too (it falls back to ``python -m kt.train`` otherwise).
Archives are reproducible (sorted members, fixed times and owners): unchanged
code gives byte-identical files, and Terraform's ``filemd5`` stays put.
"""

from __future__ import annotations

import ast
import gzip
import io
import logging
import os
import sys
import tarfile
import zipfile
from importlib import metadata

log = logging.getLogger(__name__)

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
GLUE_ZIP = "kt_glue.zip"
SOURCEDIR = "sourcedir.tar.gz"
ENTRY_POINT = "kt_train_entry.py"  # aws_requests.training_job names it as sagemaker_program
# Third-party roots that Glue does not provide: a module importing one (directly or through kt) stays out.
NOT_ON_GLUE = ("torch", "sagemaker_inference", "starlette", "uvicorn", "httpx", "anyio", "matplotlib", "sklearn",
               "airflow", "moto")
# What the entry point (kt.job_evaluation: kt.train, kt.evaluate, kt.inference) imports besides torch (the
# image's), pinned to the versions tested here; matplotlib for the reliability diagram (imported where it is
# drawn). numpy too: some PyTorch 2.6 training images pinned numpy<2, and pyarrow 26 (which does not declare
# numpy) fails to import with it.
ENTRY_MODULE = "job_evaluation"
TRAINING_REQUIREMENTS = ("matplotlib", "numpy", "pyarrow", "sagemaker-inference", "scikit-learn")
FIXED_MTIME = 1577836800  # 2020-01-01T00:00:00Z: archive times that do not change the bytes
ENTRY_SOURCE = '''"""SageMaker script-mode entry point (sagemaker_program): the training container runs it from /opt/ml/code."""

import sys

from kt.job_evaluation import main

if __name__ == "__main__":
    sys.exit(main())
'''


def _module_imports(path: str) -> set[str]:
    """Modules imported at module level (what runs on import; imports inside functions are lazy)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for n in ast.walk(node):
            if isinstance(n, ast.Import):
                found.update(a.name for a in n.names)
            elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                found.add(n.module)
                if n.module == "kt":
                    found.update(f"kt.{a.name}" for a in n.names)
    return found


def glue_modules(package_dir: str = PACKAGE_DIR) -> list[str]:
    """File names of the kt modules that import on Glue (no torch and friends, through kt either)."""
    names = sorted(f[:-3] for f in os.listdir(package_dir) if f.endswith(".py"))
    imports = {n: _module_imports(os.path.join(package_dir, f"{n}.py")) for n in names}

    def blocked(name: str, seen: set[str]) -> bool:
        if name in seen:
            return False
        seen.add(name)
        for imported in imports[name]:
            if imported.split(".")[0] in NOT_ON_GLUE:
                return True
            if imported.startswith("kt.") and imported[3:].split(".")[0] in imports:
                if blocked(imported[3:].split(".")[0], seen):
                    return True
        return False

    return [f"{n}.py" for n in names if not blocked(n, set())]


def third_party_imports(module: str, package_dir: str = PACKAGE_DIR) -> set[str]:
    """Top-level packages beyond the standard library that importing kt.<module> loads (through kt too)."""
    found: set[str] = set()
    seen: set[str] = set()
    todo = ["__init__", module]  # importing kt.<module> runs kt/__init__.py first
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = os.path.join(package_dir, f"{name}.py")
        if not os.path.exists(path):
            path = os.path.join(package_dir, name, "__init__.py")  # a subpackage (kt.web)
        for imported in _module_imports(path):
            root, _, rest = imported.partition(".")
            if root == "kt":
                todo += [rest.split(".")[0]] if rest else []
            elif root not in sys.stdlib_module_names:
                found.add(root)
    return found


def _python_files(package_dir: str) -> list[str]:
    """Every .py file of the package, relative to it, sorted."""
    out = []
    for root, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        out += [os.path.relpath(os.path.join(root, f), package_dir) for f in files if f.endswith(".py")]
    return sorted(out)


def requirements() -> str:
    """requirements.txt of the sourcedir: the versions installed (and tested) here."""
    return "".join(f"{name}=={metadata.version(name)}\n" for name in TRAINING_REQUIREMENTS)


def build_glue_zip(path: str, package_dir: str = PACKAGE_DIR) -> list[str]:
    """Write kt_glue.zip (kt/<module>.py members); return the module file names."""
    modules = glue_modules(package_dir)
    with zipfile.ZipFile(path, "w") as z:
        for name in modules:
            info = zipfile.ZipInfo(f"kt/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(os.path.join(package_dir, name), "rb") as f:
                z.writestr(info, f.read())
    return modules


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), FIXED_MTIME, 0o644
    tar.addfile(info, io.BytesIO(data))


def build_sourcedir(path: str, package_dir: str = PACKAGE_DIR) -> list[str]:
    """Write sourcedir.tar.gz (entry point, kt/, requirements.txt); return its member names."""
    members = {ENTRY_POINT: ENTRY_SOURCE.encode("utf-8"), "requirements.txt": requirements().encode("utf-8")}
    for name in _python_files(package_dir):
        with open(os.path.join(package_dir, name), "rb") as f:
            members[f"kt/{name}"] = f.read()
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            _add(tar, name, members[name])
    return sorted(members)


def build(out_dir: str) -> dict[str, str]:
    """Both archives into out_dir; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"glue_zip": os.path.join(out_dir, GLUE_ZIP), "sourcedir": os.path.join(out_dir, SOURCEDIR)}
    modules = build_glue_zip(paths["glue_zip"])
    members = build_sourcedir(paths["sourcedir"])
    log.info("%s: %d modules; %s: %d files", paths["glue_zip"], len(modules), paths["sourcedir"], len(members))
    return paths


def main(out_dir: str = "dist") -> int:
    paths = build(out_dir)
    for path in paths.values():
        print(f"{path}  ({os.path.getsize(path):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
