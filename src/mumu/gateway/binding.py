"""Reading a request into its model: a JSON body, a multipart form, the query string.

A request that does not fit its model is the client's 400, naming each problem and
where it is (``text: must not be blank; language: ...``). The same models generate
the OpenAPI document, so what is documented is what is checked.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar, get_origin

from aiohttp import web
from pydantic import BaseModel, ValidationError

from mumu.gateway.errors import ApiError, read_form

M = TypeVar("M", bound=BaseModel)
_VALUE_ERROR = "Value error, "


def problems(exc: ValidationError, limit: int = 5) -> str:
    """``field: what is wrong; ...`` for the client."""
    parts = []
    for error in exc.errors(include_url=False)[:limit]:
        message = error["msg"].removeprefix(_VALUE_ERROR)
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def validated(model: type[M], data: Any, code: str = "bad_request") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, code, problems(exc)) from exc


async def json_body(request: web.Request, model: type[M], code: str = "bad_request") -> M:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, code, "the body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise ApiError(400, code, "the body must be a JSON object")
    return validated(model, body, code)


async def form_body(request: web.Request, model: type[M], code: str = "bad_request") -> M:
    """The model's fields from a multipart form (files read off the event loop); a field
    that is not a list given twice is a 400; other form fields are left to the model
    (ignored or refused, as it says)."""
    form = await read_form(request)
    data: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        values = [await _value(v) for v in form.getall(key, [])]
        if not values:
            continue
        if get_origin(field.annotation) is list:
            data[key] = values
        elif len(values) > 1:  # which one the client meant is anyone's guess
            raise ApiError(400, code, f"{key}: given {len(values)} times; send it once")
        else:
            data[key] = values[0]
    return validated(model, data, code)


async def _value(value: Any) -> Any:
    if isinstance(value, web.FileField):
        return await asyncio.to_thread(value.file.read)
    return value


def query(request: web.Request, model: type[M], code: str = "bad_request") -> M:
    return validated(model, dict(request.query), code)
