"""The webhook's HTTPS server: Starlette app + uvicorn with TLS."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from teegate.k8s.webhook.mutate import MAX_REVIEW_BYTES, AdmissionError, WebhookSettings, review_response

__all__ = ["MUTATE_PATH", "create_app"]

MUTATE_PATH = "/mutate-v1-pod"
_log = logging.getLogger("teegate.k8s.webhook")


async def _read_bounded(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REVIEW_BYTES:
            raise AdmissionError(f"request body exceeds {MAX_REVIEW_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: WebhookSettings) -> Starlette:
    """``POST /mutate-v1-pod`` (AdmissionReview v1) and ``GET /healthz``."""

    async def mutate(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return PlainTextResponse("expected application/json", status_code=415)
        try:
            body = await _read_bounded(request)
            answer = review_response(body, settings)
        except AdmissionError as exc:
            _log.warning("bad AdmissionReview: %s", exc)
            return PlainTextResponse(str(exc), status_code=400)
        resp = answer["response"]
        _log.info("uid=%s allowed=%s patched=%s", resp["uid"], resp["allowed"], "patch" in resp)
        return JSONResponse(answer)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route(MUTATE_PATH, mutate, methods=["POST"]), Route("/healthz", healthz)])
