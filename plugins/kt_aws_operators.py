"""The Amazon provider's CreateModel and CreateEndpointConfig operators, safe to retry (``KT_RUNTIME=aws``).

SageMaker refuses a name that exists ("Cannot create already existing model
..."), and every name of a promotion derives from the DAG run's id
(``kt.aws_requests.names``). So when a try of ``create_model`` created the
model and then failed (the worker died, a later call timed out), every retry
asked for the same name and failed: the run could never deploy. These
subclasses describe the name first: the same request already carried out is
the task's result; another request under that name is an error (it is not
ours to replace); no such name, and they create as the provider does.
``kt.runtime.operator`` picks them on aws; locally the twins in
``kt_local_operators`` record requests idempotently already.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from airflow.providers.amazon.aws.operators.sagemaker import (
    SageMakerEndpointConfigOperator,
    SageMakerModelOperator,
)
from airflow.sdk.exceptions import AirflowException
from botocore.exceptions import ClientError


def _existing(describe: Callable[[str], dict], name: str) -> dict | None:
    """The describe of a SageMaker resource, or None when SageMaker says there is none of that name."""
    try:
        return describe(name)
    except ClientError as e:
        if e.response["Error"]["Code"] == "ValidationException" and "Could not find" in e.response["Error"]["Message"]:
            return None
        raise


def _serialize(describe: dict) -> dict:
    return json.loads(json.dumps(describe, default=repr))  # datetimes as the provider's operators return them


class SageMakerModelOnceOperator(SageMakerModelOperator):
    """SageMakerModelOperator; a model of this name with the same container is this task's model (a retry)."""

    def execute(self, context: Any) -> dict:
        name = self.config["ModelName"]
        existing = _existing(self.hook.describe_model, name)
        if existing is None:
            return super().execute(context)
        wanted, found = self.config["PrimaryContainer"], existing.get("PrimaryContainer", {})
        for key in ("Image", "ModelDataUrl"):
            if found.get(key) != wanted.get(key):
                raise AirflowException(f"SageMaker model {name} exists with {key} {found.get(key)!r}, not this "
                                       f"request's {wanted.get(key)!r}: not replacing it")
        self.log.info("SageMaker model %s exists with this request (an earlier try created it)", name)
        return {"Model": _serialize(existing)}


class SageMakerEndpointConfigOnceOperator(SageMakerEndpointConfigOperator):
    """SageMakerEndpointConfigOperator; a config of this name serving the same models is this task's (a retry)."""

    def execute(self, context: Any) -> dict:
        name = self.config["EndpointConfigName"]
        existing = _existing(self.hook.describe_endpoint_config, name)
        if existing is None:
            return super().execute(context)
        wanted = [v["ModelName"] for v in self.config["ProductionVariants"]]
        found = [v["ModelName"] for v in existing["ProductionVariants"]]
        if found != wanted:
            raise AirflowException(f"SageMaker endpoint config {name} exists serving {found}, not this request's "
                                   f"{wanted}: not replacing it")
        self.log.info("SageMaker endpoint config %s exists with this request (an earlier try created it)", name)
        return {"EndpointConfig": _serialize(existing)}
