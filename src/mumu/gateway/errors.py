"""JSON errors ``{"error": {"code", "message", "request_id"}}`` with the right status, for
every route. The message is meant for the client; internals (database errors, backend
URLs, exception text) go to the log only, under the same request id."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from multidict import MultiDictProxy

from mumu.contracts.events import new_id

log = logging.getLogger("mumu.gateway")

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    503: "unavailable",
    504: "timeout",
}


class ApiError(Exception):
    """An error the client caused or must know about; rendered as JSON."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None,
        *, request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.request_id = request_id
        """The pipeline request the error is about; None: the HTTP request gets an id."""


def retry_fields(exc: ApiError) -> dict[str, int]:
    """``{"retry_after": seconds}`` of a refusal with ``Retry-After`` (429, 503): what a
    socket's error message carries where an HTTP answer has the header."""
    retry = exc.headers.get("Retry-After", "")
    return {"retry_after": int(retry)} if retry.isdigit() else {}


def error_body(code: str, message: str, request_id: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message, "request_id": request_id}}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None,
    request_id: str | None = None,
) -> web.Response:
    rid = request_id or new_id()
    return web.json_response(error_body(code, message, rid), status=status,
                             headers={**(headers or {}), "X-Request-Id": rid})


async def read_form(request: web.Request) -> MultiDictProxy[Any]:
    """The multipart form; a malformed one (or one cut off: the client went away during
    the upload) is the client's 400, not our 500."""
    try:
        return await request.post()
    except web.HTTPException:
        raise
    except (ValueError, TypeError, AssertionError, UnicodeError, HttpProcessingError,
            ConnectionResetError) as exc:
        raise ApiError(400, "bad_request", f"malformed multipart body: {exc}"[:300]) from exc


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as JSON; unexpected ones as a logged 500 without details."""
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.headers,
                                  exc.request_id)
        if exc.status >= 500:
            log.info("%s %s: %d %s", request.method, request.path, exc.status, exc.code,
                     extra={"request_id": response.headers["X-Request-Id"], "code": exc.code})
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 413:
            message = "request body is larger than the limit"
        else:
            message = exc.reason or "error"
        code = _STATUS_CODES.get(exc.status, "error")
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(exc.status, code, message, headers)
    except Exception:
        rid = new_id()
        log.exception("unhandled error on %s %s", request.method, request.path,
                      extra={"request_id": rid})
        return error_response(500, "internal", "internal error; the operators can look it up "
                              "by its request id", request_id=rid)
