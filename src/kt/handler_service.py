"""The handler service our model runs under, on AWS and in `kt endpoint serve`: the toolkit's, errors by the contract.

The AWS PyTorch inference image starts TorchServe through sagemaker-pytorch-inference
(``serving.main``), which loads ``/opt/ml/model`` and calls the handler that the model's
``MAR-INF/MANIFEST.json`` names, or the toolkit's own handler service when there is none
(TorchServe's model-archive format). ``model.tar.gz`` ships that manifest naming this module
(``kt.artifact``), so each request goes through the inference toolkit's ``DefaultHandlerService``
and ``Transformer``: they import ``code/inference.py`` and call its model_fn once, then
input_fn, predict_fn and output_fn. Two things differ from the toolkit, both about errors:

- ``handle_error`` answers the ``{"error", "field"}`` body alone (the toolkit answers the
  exception's message followed by its Python traceback, file paths included); a 5xx body says
  only that the handler failed, and the traceback goes to the log (CloudWatch on AWS).
- a body that is not UTF-8 under a content type the toolkit decodes (``application/json``,
  ``text/csv``) is refused as input_fn refuses it, a 400, where the toolkit's decoding would fail
  with a 500.

The PyTorch toolkit's ``HandlerService`` differs from ``DefaultHandlerService`` only by the PyTorch
defaults for handler functions (our inference.py defines all four) and multi-model loading.
"""

from __future__ import annotations

import json
import logging

from sagemaker_inference import content_types, utils
from sagemaker_inference.default_handler_service import DefaultHandlerService
from sagemaker_inference.errors import BaseInferenceToolkitError
from sagemaker_inference.transformer import Transformer

from kt.inference import JSON, RequestError, decode_text

log = logging.getLogger(__name__)

INTERNAL_ERROR = "internal error in the model handler"


def error_body(error: BaseInferenceToolkitError) -> str:
    """The contract's body for a toolkit error: RequestError's message is that body already; a 5xx names no cause."""
    if error.status_code < 500:
        try:
            if isinstance(json.loads(error.message), dict):
                return error.message
        except (TypeError, ValueError):
            pass
        return json.dumps({"error": str(error.message), "field": None})
    return json.dumps({"error": INTERNAL_ERROR, "field": None})


class ContractTransformer(Transformer):
    """The toolkit's Transformer, answering errors with the contract's body and no traceback."""

    @staticmethod
    def handle_error(context, inference_exception: BaseInferenceToolkitError, trace: str) -> list[str]:
        """Status and phrase as the toolkit sets them (a 5xx's phrase names no cause), the body alone, JSON."""
        if inference_exception.status_code >= 500:
            log.error("invocation failed: %s\n%s", inference_exception.message, trace)
        phrase = inference_exception.phrase if inference_exception.status_code < 500 else INTERNAL_ERROR
        context.set_response_status(code=inference_exception.status_code, phrase=utils.remove_crlf(phrase))
        context.set_response_content_type(0, JSON)
        return [error_body(inference_exception)]

    def transform(self, data: list[dict], context) -> list:
        """The toolkit's transform, after refusing a body that its UTF-8 decoding would turn into a 500."""
        properties = context.request_processor[0].get_request_properties()
        if utils.retrieve_content_type_header(properties) in content_types.UTF8_TYPES:
            for item in data:
                try:
                    decode_text(item.get("body") or b"")
                except RequestError as e:
                    return self.handle_error(context, e, "")
        return super().transform(data, context)


class HandlerService(DefaultHandlerService):
    """DefaultHandlerService over ContractTransformer."""

    def __init__(self):
        super().__init__(transformer=ContractTransformer())


_service = HandlerService()


def handle(data: list[dict] | None, context) -> list | None:
    """TorchServe's function entry point: called with no data once per worker to load, then once per request."""
    if data is None:
        _service.initialize(context)
        return None
    return _service.handle(data, context)
