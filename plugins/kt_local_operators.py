"""Local twins of the Amazon provider's Glue and SageMaker operators (``KT_RUNTIME=local``).

Each takes the arguments of the Amazon operator it stands for (``config=``,
``wait_for_completion``, ``action_if_job_exists``, ... and the Glue job
arguments) and executes the same request on this machine:

- ``LocalGlueJobOperator`` runs the Glue script (``glue/ednet_preprocessor.py``)
  with the job's ``script_args`` in a child Python, where it runs on local
  Spark (plain PySpark when ``awsglue`` is not importable);
- the SageMaker operators hand their request dictionaries to
  ``kt.local_sagemaker`` (training in a child process following the container
  contract, batch transform with the model's own handlers), and record models,
  endpoint configs and endpoints in its work directory.

``deferrable`` is accepted as the Amazon operators accept it (``kt.runtime``
passes it to the waiting kinds), and it changes nothing here: on aws the job
runs elsewhere and only the wait is deferred to the triggerer; locally the job
itself runs in the task's process (local Spark, the local runner), so there is
no remote job for a trigger to poll and the task never defers.

They return what the Amazon operators return (``{"Training": describe}``,
``{"Model": ..., "Transform": ...}``, the Glue JobRunId), so downstream tasks
read the same XComs. ``kt.runtime.operator`` picks them; DAG files never
import this module themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

UI_COLOR = "#e8f4e8"  # local twins are green in the graph view; the Amazon operators are grey


def _work_dir() -> str:
    from kt import pipeline
    from kt.config import load_settings

    return pipeline.sagemaker_work_dir(load_settings())


def _timestamped(name: str) -> str:
    """The name the Amazon operators give a job or model whose name is taken."""
    return f"{name[: 63 - 11]}-{int(time.time())}"


class LocalGlueJobOperator(BaseOperator):
    """GlueJobOperator's arguments; runs the job's script on this machine with its script_args."""

    template_fields = ("job_name", "script_location", "script_args", "create_job_kwargs", "run_job_kwargs",
                       "s3_bucket", "iam_role_name", "iam_role_arn")
    ui_color = UI_COLOR

    def __init__(self, *, job_name: str = "aws_glue_default_job", script_location: str | None = None,
                 script_args: dict | None = None, s3_bucket: str | None = None, iam_role_name: str | None = None,
                 iam_role_arn: str | None = None, create_job_kwargs: dict | None = None,
                 run_job_kwargs: dict | None = None, wait_for_completion: bool = True, verbose: bool = False,
                 replace_script_file: bool = False, update_config: bool = False, job_poll_interval: float = 6,
                 deferrable: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deferrable = deferrable  # no effect locally (module docstring)
        self.job_name = job_name
        self.script_location = script_location
        self.script_args = script_args or {}
        self.s3_bucket = s3_bucket
        self.iam_role_name = iam_role_name
        self.iam_role_arn = iam_role_arn
        self.create_job_kwargs = create_job_kwargs or {}
        self.run_job_kwargs = run_job_kwargs or {}
        self.wait_for_completion = wait_for_completion
        self.verbose = verbose

    def execute(self, context: Any) -> str:
        from kt import lake

        if not self.script_location:
            raise AirflowException(f"Glue job {self.job_name}: no script_location")
        run_id = f"jr_local_{uuid.uuid4().hex}"
        with tempfile.TemporaryDirectory(prefix="kt-glue-") as tmp:
            script = lake.stage(self.script_location, tmp) if lake.is_s3(self.script_location) else self.script_location
            if not os.path.exists(script):
                raise AirflowException(f"Glue job {self.job_name}: script {script} does not exist")
            argv = [sys.executable, script]
            for key, value in {**self.create_job_kwargs.get("DefaultArguments", {}), **self.script_args}.items():
                if key != "--extra-py-files":  # the kt package is installed here
                    argv += [key, str(value)]
            self.log.info("Glue job %s run %s on local Spark: %s", self.job_name, run_id, " ".join(argv))
            process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert process.stdout is not None
            for line in process.stdout:
                self.log.info("[%s] %s", self.job_name, line.rstrip())
            code = process.wait()
        context["ti"].xcom_push(key="glue_job_run_id", value=run_id)
        if code != 0:
            raise AirflowException(f"Glue job {self.job_name} run {run_id} FAILED: the script exited with {code}")
        self.log.info("Glue job %s run %s SUCCEEDED", self.job_name, run_id)
        return run_id


class _LocalSageMakerOperator(BaseOperator):
    template_fields = ("config",)
    template_fields_renderers = {"config": "json"}
    ui_color = UI_COLOR

    def __init__(self, *, config: dict, deferrable: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.deferrable = deferrable  # no effect locally (module docstring)


class LocalSageMakerTrainingOperator(_LocalSageMakerOperator):
    """SageMakerTrainingOperator's arguments; the CreateTrainingJob request runs in kt.local_sagemaker."""

    def __init__(self, *, config: dict, wait_for_completion: bool = True, print_log: bool = True,
                 check_interval: int = 30, max_attempts: int | None = None, max_ingestion_time: int | None = None,
                 check_if_job_exists: bool = True, action_if_job_exists: str = "timestamp",
                 deferrable: bool = False, **kwargs: Any) -> None:
        super().__init__(config=config, deferrable=deferrable, **kwargs)
        if action_if_job_exists not in ("timestamp", "fail"):
            raise AirflowException(f"action_if_job_exists must be timestamp or fail, got {action_if_job_exists!r}")
        self.wait_for_completion = wait_for_completion
        self.print_log = print_log
        self.check_if_job_exists = check_if_job_exists
        self.action_if_job_exists = action_if_job_exists

    def execute(self, context: Any) -> dict:
        from kt import local_sagemaker

        work_dir = _work_dir()
        request = dict(self.config)
        name = request["TrainingJobName"]
        if self.check_if_job_exists and local_sagemaker.describe_training_job(name, work_dir) is not None:
            if self.action_if_job_exists == "fail":
                raise AirflowException(f"A SageMaker training job with name {name} already exists.")
            request["TrainingJobName"] = _timestamped(name)
            self.log.info("training job %s exists: running it as %s", name, request["TrainingJobName"])
        describe = local_sagemaker.run_training_job(request, work_dir, stream_logs=self.print_log)
        if self.wait_for_completion and describe["TrainingJobStatus"] != "Completed":
            raise AirflowException(f"SageMaker training job {request['TrainingJobName']} "
                                   f"{describe['TrainingJobStatus']}: {describe.get('FailureReason')}")
        return {"Training": describe}


class LocalSageMakerModelOperator(_LocalSageMakerOperator):
    """SageMakerModelOperator's arguments; records the CreateModel request for the local runners."""

    def execute(self, context: Any) -> dict:
        from kt import local_sagemaker

        return {"Model": local_sagemaker.create_model(self.config, _work_dir())}


class LocalSageMakerEndpointConfigOperator(_LocalSageMakerOperator):
    """SageMakerEndpointConfigOperator's arguments; records the CreateEndpointConfig request."""

    def execute(self, context: Any) -> dict:
        from kt import local_sagemaker

        work_dir = _work_dir()
        for variant in self.config["ProductionVariants"]:
            if local_sagemaker.describe_model(variant["ModelName"], work_dir) is None:
                raise AirflowException(f"Could not find model {variant['ModelName']!r} (CreateModel first)")
        _save(os.path.join(work_dir, "endpoint-configs", f"{self.config['EndpointConfigName']}.json"), self.config)
        return {"EndpointConfig": self.config}


class LocalSageMakerEndpointOperator(_LocalSageMakerOperator):
    """SageMakerEndpointOperator's arguments; points the local endpoint record at the new config.

    As on SageMaker, "create" on an existing endpoint becomes an update: the
    record switches to the new config in one atomic write, so readers see the
    old model or the new one, never none.
    """

    def __init__(self, *, config: dict, wait_for_completion: bool = True, check_interval: int = 30,
                 max_ingestion_time: int | None = None, operation: str = "create", deferrable: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(config=config, deferrable=deferrable, **kwargs)
        if operation not in ("create", "update"):
            raise AirflowException(f"operation must be create or update, got {operation!r}")
        self.operation = operation
        self.wait_for_completion = wait_for_completion

    def execute(self, context: Any) -> dict:
        from kt import local_sagemaker

        work_dir = _work_dir()
        endpoint = self.config.get("Endpoint", self.config)
        if "Model" in self.config:
            local_sagemaker.create_model(self.config["Model"], work_dir)
        if "EndpointConfig" in self.config:
            config = self.config["EndpointConfig"]
            _save(os.path.join(work_dir, "endpoint-configs", f"{config['EndpointConfigName']}.json"), config)
        config_path = os.path.join(work_dir, "endpoint-configs", f"{endpoint['EndpointConfigName']}.json")
        if not os.path.exists(config_path):
            raise AirflowException(f"Could not find endpoint configuration {endpoint['EndpointConfigName']!r}")
        path = os.path.join(work_dir, "endpoints", f"{endpoint['EndpointName']}.json")
        operation = "update" if os.path.exists(path) else self.operation
        if operation == "update" and not os.path.exists(path):
            raise AirflowException(f"Could not find endpoint {endpoint['EndpointName']!r} to update")
        describe = {**endpoint, "EndpointStatus": "InService", "LastOperation": operation,
                    "LastModifiedTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _save(path, describe)
        self.log.info("endpoint %s (%s) now serves %s", endpoint["EndpointName"], operation,
                      endpoint["EndpointConfigName"])
        return {"Endpoint": describe}


class LocalSageMakerTransformOperator(_LocalSageMakerOperator):
    """SageMakerTransformOperator's arguments; the CreateTransformJob request runs in kt.local_sagemaker."""

    def __init__(self, *, config: dict, wait_for_completion: bool = True, check_interval: int = 30,
                 max_attempts: int | None = None, max_ingestion_time: int | None = None,
                 check_if_job_exists: bool = True, action_if_job_exists: str = "timestamp",
                 check_if_model_exists: bool = True, action_if_model_exists: str = "timestamp",
                 deferrable: bool = False, **kwargs: Any) -> None:
        super().__init__(config=config, deferrable=deferrable, **kwargs)
        for name, value in (("action_if_job_exists", action_if_job_exists),
                            ("action_if_model_exists", action_if_model_exists)):
            if value not in ("timestamp", "fail"):
                raise AirflowException(f"{name} must be timestamp or fail, got {value!r}")
        self.wait_for_completion = wait_for_completion
        self.check_if_model_exists = check_if_model_exists
        self.action_if_model_exists = action_if_model_exists

    def execute(self, context: Any) -> dict:
        from kt import local_sagemaker

        work_dir = _work_dir()
        transform = dict(self.config.get("Transform", self.config))
        model = dict(self.config["Model"]) if "Model" in self.config else None
        if model is not None:
            if self.check_if_model_exists and local_sagemaker.describe_model(model["ModelName"], work_dir) is not None:
                if self.action_if_model_exists == "fail":
                    raise AirflowException(f"A SageMaker model with name {model['ModelName']} already exists.")
                model["ModelName"] = _timestamped(model["ModelName"])
                transform["ModelName"] = model["ModelName"]  # as the Amazon operator rewrites it
            local_sagemaker.create_model(model, work_dir)
        describe = local_sagemaker.run_transform_job(transform, work_dir)
        if self.wait_for_completion and describe["TransformJobStatus"] != "Completed":
            raise AirflowException(f"SageMaker transform job {transform['TransformJobName']} "
                                   f"{describe['TransformJobStatus']}: {describe.get('FailureReason')}")
        return {"Model": model or local_sagemaker.describe_model(transform["ModelName"], work_dir),
                "Transform": describe}


def _save(path: str, record: dict) -> None:
    """Write a JSON record atomically (a reader sees the old one or the new one)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(path + ".tmp", path)
