"""awsglue.utils stand-in: getResolvedOptions, Glue's parser of the job arguments in sys.argv.

As aws-glue-libs (glue-5.0, glue-5.1): argparse over ``args[1:]`` with unknown
arguments ignored; every asked-for option is required and keyed by its argparse
name (``--skill-mappings`` -> ``skill_mappings``); a missing one raises
GlueArgumentError, never exits; asking for a reserved option (bookmarks,
continuations, job ids, encryption type, lineage) raises RuntimeError;
``job_bookmark_option`` is always in the result (``job-bookmark-disable`` when
absent, translated from an old ``--continuation-option``); ``TempDir`` and
``RedshiftTempDir`` mirror each other and are never required.
"""

from __future__ import annotations

import argparse

from awsglue.job import Job


class GlueArgumentError(Exception):
    pass


class GlueArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so the job run fails with the message."""

    def error(self, message: str):
        raise GlueArgumentError(message)


def _refuse_reserved(options: list[str]) -> None:
    reserved = [Job.continuation_options()[0][2:], Job.job_bookmark_options()[0][2:],
                *[o[2:] for o in Job.job_bookmark_range_options()],
                # as in aws-glue-libs, these three are compared with their leading dashes (so never match a plain name)
                *Job.id_params()[1:], Job.encryption_type_options()[0], Job.data_lineage_options()[0]]
    for option in options:
        if option in reserved:
            raise RuntimeError(f"Using reserved arguments {option}")


def getResolvedOptions(args: list[str], options: list[str]) -> dict:
    """The job's arguments as a dict: the asked-for options (all required) plus Glue's own."""
    _refuse_reserved(options)
    parser = GlueArgumentParser()
    bookmark, continuation = Job.job_bookmark_options(), Job.continuation_options()
    parser.add_argument(bookmark[0], choices=bookmark[1:], required=False)
    parser.add_argument(continuation[0], choices=continuation[1:], required=False)
    for option in [*Job.job_bookmark_range_options(), *Job.id_params()[1:]]:
        parser.add_argument(option, required=False)
    encryption = Job.encryption_type_options()
    parser.add_argument(encryption[0], choices=encryption[1:])
    parser.add_argument(Job.data_lineage_options()[0], required=False)
    parser.add_argument("--RedshiftTempDir", required=False)
    parser.add_argument("--TempDir", required=False)
    for option in options:
        if option not in ("RedshiftTempDir", "TempDir"):
            parser.add_argument(f"--{option}", required=True)

    parsed, _unknown = parser.parse_known_args(args[1:])
    resolved = vars(parsed)
    if resolved["TempDir"] is not None:
        resolved["RedshiftTempDir"] = resolved["TempDir"]
    elif resolved["RedshiftTempDir"] is not None:
        resolved["TempDir"] = resolved["RedshiftTempDir"]

    old_style = resolved.pop("continuation_option")
    if resolved["job_bookmark_option"] is None:
        resolved["job_bookmark_option"] = (bookmark[3] if old_style is None
                                           else bookmark[continuation.index(old_style)])
    absent = [o for o in Job.job_bookmark_range_options() if resolved[o[2:].replace("-", "_")] is None]
    if resolved["job_bookmark_option"] == "job-bookmark-pause":
        if len(absent) == 1:
            raise RuntimeError(f"Missing option or value for {absent[0]}")
    elif not absent:
        raise RuntimeError("Invalid option(s)" + " ".join(Job.job_bookmark_range_options()))
    return resolved
