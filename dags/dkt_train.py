"""# dkt_train

Trains DKT when the **processed asset** (`processed/ednet/`) is updated by
`ednet_etl`, or when `kt_drift_check` finds drift, or by hand. Logic: `kt`.

0. **check_dataset**: the processed version `processed/ednet/_current.json`
   names, refused unless its manifest checks out (`kt.runtime.check_dataset`);
   the job trains on exactly that version, and the candidate's model.json must
   carry its manifest's checksum.
1. **train_model**: the CreateTrainingJob request of `kt.aws_requests.training_job`
   (script mode on the PyTorch image, managed spot with `MaxWaitTimeInSeconds`,
   checkpoints in the lake through `CheckpointConfig`, so a spot interruption
   resumes instead of restarting). The current model (`models/dkt/current.json`)
   is the job's `current` channel: after training, the job scores the new model
   and the current one on the test split of the version it trained on and puts
   the report in model.tar.gz (`kt.job_evaluation`). `SageMakerTrainingOperator`
   on aws; the local runner of the same request locally.
2. **evaluate**: reads that report from the new model.tar.gz (the worker loads
   no data); refuses a model trained on another manifest, or compared with a
   model that is no longer the promoted one.
3. **gate**: continue only if the new model's test AUC beats the current one by
   the tolerance (`kt.runtime.promotion_decision`); otherwise the run ends here,
   successfully, and nothing changes.
4. **create_model**, **create_endpoint_config**, **deploy_endpoint**: the model,
   a new endpoint config (serverless or real-time, `KT_ENDPOINT_MODE`), and the
   endpoint created or, when it exists, updated to the new config: SageMaker
   keeps serving the old variant until the new one is in service (no downtime).
5. **promote**: `current.json` now names the new model (the nightly refresh uses it).

A failed training job fails the run and leaves `current.json` as it was.
Trigger with `{"hyperparameters": {"epochs": 5}}` to override hyperparameters.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, chain, dag, get_current_context, task

from kt import runtime

DAG_ID = "dkt_train"
PROCESSED = runtime.lake_asset("processed")


@dag(
    dag_id=DAG_ID,
    schedule=[PROCESSED],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["kt"],
    doc_md=__doc__,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=12),
    params={
        "hyperparameters": Param({}, type="object", title="Hyperparameters",
                                 description="overrides of kt.train.Hyperparameters, e.g. {\"epochs\": 5}"),
    },
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=2),
        "on_failure_callback": runtime.on_failure,
    },
)
def dkt_train():
    @task
    def check_dataset() -> dict:
        """Refuse a processed dataset whose manifest does not check out; pin the version to train on."""
        return runtime.check_dataset(runtime.task_settings())

    @task
    def training_request(dataset: dict, params: dict | None = None) -> dict:
        """CreateTrainingJob of this run: every name from the run id, the channel on the checked version,
        the promoted model as the `current` channel the job scores the new one against."""
        from kt import aws_requests, pipeline

        settings, context = runtime.task_settings(), get_current_context()
        current = pipeline.current_model(settings)
        return aws_requests.training_job(settings, runtime.run_id(context), params["hyperparameters"],
                                         processed=dataset["uri"],
                                         current_model_url=current["model_data_url"] if current else None)

    dataset = check_dataset()
    request = training_request(dataset)
    train_model = runtime.operator(
        "training",
        task_id="train_model",
        config=request,
        wait_for_completion=True,
        check_interval=60,
        max_ingestion_time=9 * 3600,  # a little over the request's MaxWaitTimeInSeconds (spot)
        execution_timeout=timedelta(hours=10),
        retries=1,  # a failed job is mostly data or code; SageMaker itself retries spot capacity
    )

    @task
    def evaluate(training: dict, dataset: dict) -> dict:
        """The job's test-split report of the new model and of the current one (from the new model.tar.gz)."""
        return runtime.evaluate_candidate(runtime.task_settings(), training, dataset)

    @task.short_circuit
    def gate(evaluation: dict) -> bool:
        """Deploy and promote only a model that beats the current one by the tolerance."""
        import logging

        promote_it, reason = runtime.promotion_decision(evaluation)
        logging.getLogger(__name__).info(reason)
        return promote_it

    @task(multiple_outputs=True)
    def deployment_requests(evaluation: dict) -> dict:
        """CreateModel, CreateEndpointConfig and CreateEndpoint requests of the new model."""
        context = get_current_context()
        return runtime.deployment_requests(runtime.task_settings(), runtime.run_id(context),
                                           evaluation["model_data_url"])

    evaluation = evaluate(train_model.output, dataset)
    deploy = deployment_requests(evaluation)
    create_model = runtime.operator("model", task_id="create_model", config=deploy["model"])
    create_endpoint_config = runtime.operator("endpoint_config", task_id="create_endpoint_config",
                                              config=deploy["endpoint_config"])
    deploy_endpoint = runtime.operator(
        "endpoint",
        task_id="deploy_endpoint",
        config=deploy["endpoint"],
        operation="create",  # an existing endpoint is updated to the new config instead
        wait_for_completion=True,
        check_interval=30,
        max_ingestion_time=3600,
    )

    @task
    def promote(evaluation: dict) -> dict:
        """current.json names the new model: the nightly refresh and drift checks use it from now on."""
        from kt import pipeline

        return pipeline.promote(runtime.task_settings(), evaluation["job_name"], evaluation["model_data_url"],
                                evaluation["candidate"])

    chain(dataset, request, train_model, evaluation, gate(evaluation), deploy, create_model, create_endpoint_config,
          deploy_endpoint, promote(evaluation))


dkt_train()
