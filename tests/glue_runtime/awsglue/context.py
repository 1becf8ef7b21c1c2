"""awsglue.context stand-in: GlueContext is an SQLContext over the one SparkSession, with `spark_session`."""

from __future__ import annotations

from pyspark.sql import SparkSession, SQLContext


class GlueContext(SQLContext):
    """Glue's GlueContext: given a SparkContext, a SparkSession or nothing, it wraps the active session."""

    def __init__(self, sparkContext=None, **options) -> None:
        if sparkContext is None:
            spark_session = SparkSession.builder.getOrCreate()
            sparkContext = spark_session.sparkContext
        elif type(sparkContext) is SparkSession:
            spark_session = sparkContext
            sparkContext = spark_session.sparkContext
        else:
            spark_session = SparkSession.builder.getOrCreate()
        super().__init__(sparkContext, spark_session)
        self.spark_session = self.sparkSession
