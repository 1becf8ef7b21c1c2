"""Run a Glue job script the way Glue 5 starts it, on exactly the Python path given (tests/test_glue_job.py).

    python -I -S launch.py PATH[:PATH...] SCRIPT [--key value ...]

``-I -S``: no site-packages, no PYTHONPATH, no user site and not this file's
folder, so the script imports only the standard library and PATH (a view of
the modules Glue provides, the ``--extra-py-files`` zip, the stand-in
``awsglue``). As on Glue, the script runs as ``__main__`` with the job
arguments in ``sys.argv``; Spark's master and settings come from
``PYSPARK_SUBMIT_ARGS``, as Glue's launcher passes them to spark-submit. The
last line printed is the stand-in Job's record of init/commit calls, as JSON.
"""

from __future__ import annotations

import json
import os
import runpy
import sys


def main() -> int:
    path, script, *args = sys.argv[1:]
    sys.path.extend(path.split(os.pathsep))
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        spark_context = sys.modules.get("pyspark.context")
        if spark_context and spark_context.SparkContext._active_spark_context is not None:
            spark_context.SparkContext._active_spark_context.stop()
        job = sys.modules.get("awsglue.job")
        print(json.dumps({"job_calls": job.RECORD if job else None}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
