"""The mastery API: the local twin of the API Gateway deployment (terraform/api_gateway.tf), and the page.

    kt api --port 8000                     # KT_API_KEY=... to require the x-api-key header
    curl -H 'x-api-key: ...' 'localhost:8000/api/kt/mastery?user_id=tutor-0001'

Routes, with the bodies of the Terraform mapping templates (docs/contracts.md §6, §7, §9):

``GET /api/kt/mastery?user_id=U``
    200 ``{user_id, mastery, topic_mastery, answers_by_topic,
    next_skill_recommendation, predicted_accuracy, model_version, source,
    as_of, updated_at, n_interactions}``; 404 ``{"error": "unknown user_id",
    "field": "user_id"}``. From the user's kt-mastery row, as
    get_mastery_response.vtl does on AWS (``kt.api_service.get_body``):

    1. ``SAGEMAKER_KT_ENABLED=true`` and the row has ``source = "dkt"``: that
       row (the nightly DKT refresh).
    2. Otherwise the Bayesian estimate (``kt.bayes.estimate``) computed from the
       row's Phase 1 counters, which every stored answer adds to.
    3. No DKT row to serve and no answer counted: 404.

``POST /api/kt/mastery`` with ``{"user_sequence": [...]}``
    Live mastery. DKT enabled: the endpoint answers (``SAGEMAKER_KT_ENDPOINT``
    through sagemaker-runtime InvokeEndpoint, or ``endpoint_url``: a
    ``kt endpoint serve`` on the SageMaker hosting contract), within
    ``endpoint_timeout`` seconds. Its 4xx (a bad request) is passed through as
    API Gateway does; a timeout, a 5xx, a connection failure or an invalid body
    makes the Bayesian estimate answer instead. DKT disabled: the Bayesian
    estimate. The body is docs/contracts.md §6.2 plus ``source`` (``dkt`` or ``bayes``) and,
    after a fallback, ``fallback_reason``: local additions, API Gateway passes
    the endpoint's body through untouched.

``POST /api/kt/answers`` with ``{user_id, answer_id, skill_id, correct, content_id?, answered_at}``
    200 ``{"status": "stored"}``; ``{"status": "duplicate"}`` for an
    answer_id seen before with the same content, whatever its answered_at;
    409 naming ``answer_id`` for other content. The answer goes first to the
    lake (``events/answers/day=<day>/api-<pid>.jsonl``, appended and fsynced:
    the lake is the local source of truth, docs/contracts.md §7.3), then one
    TransactWriteItems stores it in kt-history with its markers and adds it
    to the counters of the user's kt-mastery row (``kt.dynamo.answer_transaction``,
    the request of the Terraform template). A crash between the two is
    repaired by the client's retry: the answer is never lost, and at worst
    appears twice in the lake, whose readers keep the first per
    (user_id, answer_id).

``GET /knowledge-state/{user_id}``
    The Knowledge State page: an inline-SVG spider chart of the 8 topics (DKT
    and Bayesian), the recommended next topic and the skill inside it (``kt.tutor``). No
    JavaScript, no CDN: it renders offline. ``/static/`` holds its stylesheet.

The routes' work is ``kt.api_service.MasteryService``; request parsing and bounds are ``kt.api_validation``.

Every route but ``/static/`` needs the ``x-api-key`` header when ``KT_API_KEY``
is set (compared in constant time; 403 otherwise). When it is unset the app
logs a warning at start and lets every request in: local development only;
the aws runtime refuses to start without a key. Bodies are limited (413),
inputs are validated (4xx naming the field), and AWS failures answer 502.
"""

from __future__ import annotations

import hmac
import logging
from datetime import datetime
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from kt import aws, dynamo, web
from kt.api_service import (  # noqa: F401  (the API's public names, wherever they live)
    BAYES_MODEL_VERSION, ENDPOINT_TIMEOUT_S, GET_FIELDS, MAX_THREADS, Catalog, MasteryService,
    append_answer_event, get_body, load_catalog, rebuild_from_lake,
)
from kt.api_validation import (  # noqa: F401
    ANSWER_FIELDS, ANSWER_REQUIRED, JSON, MAX_ANSWER_BYTES, MAX_ID_CHARS, MAX_MASTERY_BYTES, ApiError,
    _check_id, _read_json, _user_id_param, parse_answer,
)
from kt.config import ConfigError, Settings, env_var

log = logging.getLogger(__name__)

API_KEY_HEADER = "x-api-key"


# HTTP


def _error(status: int, error: str, field: str | None) -> JSONResponse:
    return JSONResponse({"error": error, "field": field}, status_code=status)


class ApiKeyMiddleware:
    """403 unless x-api-key matches (constant-time compare); /static/ is open. No key configured: all open."""

    def __init__(self, app: Any, api_key: str | None):
        self.app = app
        self.expected = api_key.encode("utf-8") if api_key else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.expected is not None and not scope["path"].startswith("/static/"):
            given = dict(scope["headers"]).get(API_KEY_HEADER.encode("latin-1"), b"")
            if not hmac.compare_digest(given, self.expected):
                response = _error(403, f"missing or invalid {API_KEY_HEADER} header", API_KEY_HEADER)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings, *, catalog: Catalog | None = None, endpoint_url: str | None = None,
               endpoint_timeout: float = ENDPOINT_TIMEOUT_S, now: Callable[[], datetime] | None = None,
               max_threads: int = MAX_THREADS) -> Starlette:
    """The ASGI app. Tables must exist (``main`` creates and fills them locally; Terraform on AWS)."""
    if not settings.api_key:
        if settings.runtime == "aws":
            raise ConfigError(f"{env_var('api_key')}: the aws runtime needs an API key for `kt api`")
        log.warning("%s is not set: every route is open to anyone who can reach this port "
                    "(local development only; set it to require the %s header)", env_var("api_key"), API_KEY_HEADER)
    catalog = catalog or load_catalog(settings)
    service = MasteryService(settings, catalog, endpoint_url, endpoint_timeout, now, max_threads)
    log.info("mastery API: %d skills from %s; DKT %s%s", len(catalog.skill_ids), catalog.origin,
             "enabled" if settings.sagemaker_enabled else "disabled (the Bayesian estimate answers)",
             f", endpoint {endpoint_url or settings.endpoint_name}" if settings.sagemaker_enabled else "")

    async def get_mastery(request: Request) -> Response:
        body = await service.call(service.current, _user_id_param(request))
        if body is None:
            return _error(404, "unknown user_id", "user_id")
        return JSONResponse(body)

    async def post_mastery(request: Request) -> Response:
        raw, payload = await _read_json(request, MAX_MASTERY_BYTES)
        status, body = await service.live(raw, payload)
        return JSONResponse(body, status_code=status)

    async def mastery(request: Request) -> Response:
        return await (post_mastery(request) if request.method == "POST" else get_mastery(request))

    async def post_answer(request: Request) -> Response:
        _, payload = await _read_json(request, MAX_ANSWER_BYTES)
        answer = parse_answer(payload, service.now())
        return JSONResponse({"status": await service.call(service.record_answer, answer)})

    async def knowledge_state(request: Request) -> Response:
        user_id = _check_id(request.path_params["user_id"], "user_id")
        state = await service.call(service.knowledge_state, user_id)
        if state is None:
            return HTMLResponse(web.not_found_page(user_id), status_code=404)
        return HTMLResponse(web.knowledge_state_page(state))

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error(exc.status, exc.error, exc.field)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        # an unknown route or method: JSON like every other answer (405 keeps its Allow header)
        return JSONResponse({"error": exc.detail, "field": None}, status_code=exc.status_code, headers=exc.headers)

    async def aws_error(request: Request, exc: Exception) -> Response:
        log.error("%s %s: AWS call failed: %s", request.method, request.url.path, exc)
        return _error(502, "mastery store or endpoint unavailable", None)

    app = Starlette(
        routes=[
            Route("/api/kt/mastery", mastery, methods=["GET", "POST"]),
            Route("/api/kt/answers", post_answer, methods=["POST"]),
            Route("/knowledge-state/{user_id}", knowledge_state, methods=["GET"]),
            Mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static"),
        ],
        exception_handlers={ApiError: api_error, HTTPException: http_error, ClientError: aws_error,
                            BotoCoreError: aws_error},
        middleware=[Middleware(ApiKeyMiddleware, api_key=settings.api_key)],
    )
    app.state.service = service
    return app


def main(settings: Settings, host: str = "127.0.0.1", port: int = 8000, endpoint_url: str | None = None) -> int:
    """`kt api`: locally, create the tables and load them from the lake, then serve until interrupted."""
    import uvicorn

    with aws.local_aws(settings) as settings:
        if settings.runtime == "local":
            client = aws.client(settings, "dynamodb")
            dynamo.ensure_tables(client, settings.history_table, settings.mastery_table)
            log.info("loaded from the lake %s: %s", settings.lake, rebuild_from_lake(settings, client))
        app = create_app(settings, endpoint_url=endpoint_url)
        uvicorn.run(app, host=host, port=port, log_level="info")
    return 0

