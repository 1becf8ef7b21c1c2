"""Glue job `ednet-preprocessor`: raw EdNet/Riiid CSVs -> processed sequences, skills, quarantine, manifest.

On AWS Glue 5 (Spark 3.5, Python 3.11) Terraform (terraform/glue.tf) runs it with

    --raw s3://LAKE/raw/ednet/ --processed s3://LAKE/processed/ednet/
    --skill-mappings s3://LAKE/artifacts/skill_mappings.json --format riiid|kt1
    (+ Glue's own --JOB_NAME, --TempDir; kt arrives through --extra-py-files)

and locally, where `awsglue` is not importable, the same arguments run it on plain PySpark:

    python glue/ednet_preprocessor.py --raw .kt/lake/raw/ednet --processed .kt/lake/processed/ednet [--format kt1]

The rows are exactly those of `kt etl --engine python`; the logic, and how each
rule of the reference is met, is in `kt.spark_etl` (this file only wires it).

`--raw` and `--processed` are the dataset roots (docs/contracts.md §3): the job
reads the raw version `raw/ednet/_current.json` names, writes a new
`processed/ednet/v=<time>/`, and switches `processed/ednet/_current.json` to it
only after its manifest checks out (`kt.etl.publish`); a job that fails or is
killed midway leaves the pointer, and every reader, on the previous version.
`--keep-versions` (default `kt.lake.DEFAULT_KEEP_VERSIONS`; the DAG passes
`KT_KEEP_VERSIONS`) is how many versions stay.

EdNet KT1's ~784K per-user files are read by ONE CSV read over the KT1/
directory, never file by file: a read per file would be 784K Spark jobs
planned one after the other by the driver, while one read lets Spark pack the
small files into a few thousand tasks across the cluster. Each row's file (its
user id, its quarantine source, its row position) comes from the file-path
column `_metadata.file_path`, the successor of `input_file_name()` that also
gives the split's block start, which "file order" needs.

Job bookmarks are disabled (`--job-bookmark-option job-bookmark-disable` in
terraform/glue.tf), and a run with any other option stops before Spark starts:
every run rebuilds every user's full history from all raw files (a user's
sequence, the duplicate row_id rule and the splits need all of them), and Spark's
own readers ignore bookmarks anyway (they track only Glue DynamicFrame sources
read with a transformation_ctx), so an enabled bookmark would only claim an
incremental run that does not happen. `Job.init`/`Job.commit` stay: Glue's job
lifecycle, storing no state with bookmarks disabled.

On Glue, `getResolvedOptions` (awsglue.utils) fails on a missing option it is
asked for and names an option by its argparse key: `--skill-mappings` arrives as
`skill_mappings`. `--skill-mappings` and `--format` are asked for only when
given (a job made by the DAG itself has no Terraform defaults). What Glue 5
provides and what this import chain needs: docs/aws-fidelity.md, section Glue;
tests/test_glue_job.py runs this branch on local Spark with a stand-in awsglue.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from kt import etl, lake, spark_etl

log = logging.getLogger("ednet_preprocessor")

GLUE_REQUIRED = ("JOB_NAME", "raw", "processed")
GLUE_OPTIONAL = ("skill-mappings", "format", "keep-versions")
BOOKMARKS_OFF = "job-bookmark-disable"


def parse_args(argv: list[str]) -> dict[str, str | None]:
    """The job's arguments when run outside Glue (same names as on Glue)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", required=True, help="raw/ednet prefix: a directory or s3:// URI")
    parser.add_argument("--processed", required=True, help="processed/ednet prefix")
    parser.add_argument("--skill-mappings", help="skill->topic JSON (default: raw/skill_mappings.json, else the seed's)")
    parser.add_argument("--format", choices=spark_etl.FORMATS, help="input format (default: detected)")
    parser.add_argument("--keep-versions", type=int, default=lake.DEFAULT_KEEP_VERSIONS,
                        help="versions of processed/ednet kept, the new one included")
    parser.add_argument("--JOB_NAME", default="ednet-preprocessor")
    parser.add_argument("--TempDir", help="Glue's temporary directory (unused)")
    return vars(parser.parse_args(argv))


def glue_options(argv: list[str]) -> list[str]:
    """The options to ask getResolvedOptions for: it fails on any missing one, so the optional ones only when given."""
    return [*GLUE_REQUIRED, *[name for name in GLUE_OPTIONAL if f"--{name}" in argv]]


def main(argv: list[str] | None = None) -> dict:
    """Run the ETL on Glue when awsglue is there, else on local PySpark; return the manifest."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        from awsglue.context import GlueContext
        from awsglue.job import Job
        from awsglue.utils import getResolvedOptions
    except ImportError:
        args = parse_args(argv)
        return etl.publish(args["processed"], lambda version: spark_etl.run(
            args["raw"], version, fmt=args["format"], skill_mappings=args["skill_mappings"]), args["keep_versions"])

    from pyspark.context import SparkContext

    args = getResolvedOptions(["ednet_preprocessor.py", *argv], glue_options(argv))
    if args["job_bookmark_option"] != BOOKMARKS_OFF:
        raise ValueError(f"--job-bookmark-option {args['job_bookmark_option']}: this job reads every raw file on every "
                         f"run and tracks nothing; run it with {BOOKMARKS_OFF} (terraform/glue.tf)")
    glue_context = GlueContext(SparkContext.getOrCreate())
    job = Job(glue_context)
    job.init(args["JOB_NAME"], args)
    manifest = etl.publish(args["processed"], lambda version: spark_etl.run(
        args["raw"], version, fmt=args.get("format"), skill_mappings=args.get("skill_mappings"),
        spark=glue_context.spark_session), int(args.get("keep_versions") or lake.DEFAULT_KEEP_VERSIONS))
    job.commit()
    return manifest


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = main()
    log.info("manifest: %s", json.dumps({k: v for k, v in result.items() if k != "inputs"}))
