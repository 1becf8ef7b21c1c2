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


def _carried_out(operator: Any, kind: str, name: str, describe: Callable[[str], dict],
                 differences: Callable[[dict], str]) -> dict | None:
    """The describe of ``name`` when it exists with this request; None when there is none; else an error."""
    existing = _existing(describe, name)
    if existing is None:
        return None
    different = differences(existing)
    if different:
        raise AirflowException(f"SageMaker {kind} {name} exists with {different}: not replacing it")
    operator.log.info("SageMaker %s %s exists with this request (an earlier try created it)", kind, name)
    return json.loads(json.dumps(existing, default=repr))  # datetimes as the provider's operators return them


class SageMakerModelOnceOperator(SageMakerModelOperator):
    """SageMakerModelOperator; a model of this name with the same container is this task's model (a retry)."""

    def execute(self, context: Any) -> dict:
        model = _carried_out(self, "model", self.config["ModelName"], self.hook.describe_model, self._differences)
        return {"Model": model} if model is not None else super().execute(context)

    def _differences(self, existing: dict) -> str:
        wanted, found = self.config["PrimaryContainer"], existing.get("PrimaryContainer", {})
        return ", ".join(f"{key} {found.get(key)!r}, not this request's {wanted.get(key)!r}"
                         for key in ("Image", "ModelDataUrl") if found.get(key) != wanted.get(key))


class SageMakerEndpointConfigOnceOperator(SageMakerEndpointConfigOperator):
    """SageMakerEndpointConfigOperator; a config of this name serving the same models is this task's (a retry)."""

    def execute(self, context: Any) -> dict:
        config = _carried_out(self, "endpoint config", self.config["EndpointConfigName"],
                              self.hook.describe_endpoint_config, self._differences)
        return {"EndpointConfig": config} if config is not None else super().execute(context)

    def _differences(self, existing: dict) -> str:
        wanted = [v["ModelName"] for v in self.config["ProductionVariants"]]
        found = [v["ModelName"] for v in existing["ProductionVariants"]]
        return "" if found == wanted else f"models {found}, not this request's {wanted}"
