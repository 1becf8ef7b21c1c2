"""awsglue.job stand-in: Job wraps a GlueContext or a SparkSession; init/commit are recorded in RECORD."""

from __future__ import annotations

from typing import Any

# Glue's reserved job arguments (aws-glue-libs awsglue/job.py): the option first, then its allowed values.
BOOKMARK_OPTIONS = ["--job-bookmark-option", "job-bookmark-enable", "job-bookmark-pause", "job-bookmark-disable"]
CONTINUATION_OPTIONS = ["--continuation-option", "continuation-enabled", "continuation-readonly", "continuation-ignore"]
BOOKMARK_RANGE_OPTIONS = ["--job-bookmark-from", "--job-bookmark-to"]
ID_PARAMS = ["--JOB_NAME", "--JOB_ID", "--JOB_RUN_ID", "--SECURITY_CONFIGURATION"]
ENCRYPTION_TYPE_OPTIONS = ["--encryption-type", "sse-s3"]
DATA_LINEAGE_OPTIONS = ["--enable-data-lineage"]

# What the JVM side was asked to do, in order: ("init", job name, bookmark option) and ("commit", job name, None).
RECORD: list[tuple[str, str, str | None]] = []


class Job:
    """Glue's Job: built from a GlueContext or a SparkSession, anything else refused."""

    @classmethod
    def job_bookmark_options(cls) -> list[str]:
        return list(BOOKMARK_OPTIONS)

    @classmethod
    def continuation_options(cls) -> list[str]:
        return list(CONTINUATION_OPTIONS)

    @classmethod
    def job_bookmark_range_options(cls) -> list[str]:
        return list(BOOKMARK_RANGE_OPTIONS)

    @classmethod
    def id_params(cls) -> list[str]:
        return list(ID_PARAMS)

    @classmethod
    def encryption_type_options(cls) -> list[str]:
        return list(ENCRYPTION_TYPE_OPTIONS)

    @classmethod
    def data_lineage_options(cls) -> list[str]:
        return list(DATA_LINEAGE_OPTIONS)

    def __init__(self, glue_context_or_spark_session: Any) -> None:
        from pyspark.sql import SparkSession

        from awsglue.context import GlueContext

        if isinstance(glue_context_or_spark_session, GlueContext):
            self._glue_context = glue_context_or_spark_session
            self._spark_session = glue_context_or_spark_session.sparkSession
        elif isinstance(glue_context_or_spark_session, SparkSession):
            self._glue_context = None
            self._spark_session = glue_context_or_spark_session
        else:
            raise Exception(f"cannot init Job instance given input parameter type: {type(glue_context_or_spark_session)}")
        self._name: str | None = None

    def init(self, job_name: str, args: dict | None = None) -> None:
        """Start the run (on Glue: the JVM Job loads the bookmark state the option asks for)."""
        args = {} if args is None else args
        self._name = job_name
        RECORD.append(("init", job_name, args.get("job_bookmark_option")))

    def isInitialized(self) -> bool:
        return self._name is not None

    def commit(self) -> None:
        """End the run (on Glue: the JVM Job stores the bookmark state)."""
        if self._name is None:
            raise RuntimeError("Job.commit before Job.init")
        RECORD.append(("commit", self._name, None))
