"""The OpenAPI 3.1 document of the gateway's HTTP routes (``schemas/openapi.json``).

Generated from ``OPERATIONS``, which names for every route the models its handler
reads (``gateway.models``: JSON body, multipart form, query) and answers with. A test
keeps the checked-in file equal to what this generates, and the app's routes equal to
the documented ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from mumu import __version__
from mumu.gateway import models as m

EXAMPLE_SESSION = "demo"
"""The session id the document's examples use (the schemathesis test asks in it first)."""

_ERRORS = {400: "bad input", 401: "missing or invalid credentials", 403: "not yours",
           404: "no such route (e.g. an empty session id)",
           410: "crypto-erased (shredded; a new ask: workspace_shredded)",
           413: "too large", 415: "unsupported media or audio",
           422: "no speech in the audio (no_speech)",
           429: "rate limited or over a workspace quota (Retry-After)",
           502: "a stage failed with an error the gateway does not map",
           503: "unavailable or overloaded (Retry-After)", 504: "a stage did not answer"}


@dataclass(frozen=True)
class Reply:
    """One documented response: a model as JSON, or a plain media type."""

    description: str
    model: type[BaseModel] | tuple[type[BaseModel], ...] | None = None
    media: tuple[str, ...] = ()


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    replies: dict[int, Reply]
    errors: tuple[int, ...] = ()
    secured: bool = True
    query: type[BaseModel] | None = None
    body: dict[str, type[BaseModel]] = field(default_factory=dict)
    """Media type → model of the request body."""
    body_required: bool = True
    examples: dict[str, Any] = field(default_factory=dict)
    """Media type → an example body; ``query`` → example query values."""


_MULTIPART = "multipart/form-data"
_JSON = "application/json"

OPERATIONS: tuple[Operation, ...] = (
    Operation("get", "/", "demoPage", "The demo page (HTML)",
              {200: Reply("the page", media=("text/html",))}, secured=False),
    Operation("get", "/api/health", "health", "Liveness",
              {200: Reply("alive", m.Health)}, secured=False),
    Operation("get", "/api/ready", "ready",
              "Readiness: NATS, streams, every stage's consumer, stage lag, database",
              {200: Reply("ready", m.Readiness), 503: Reply("not ready, with reasons",
                                                           m.Readiness)}, secured=False),
    Operation("get", "/metrics", "metrics", "Prometheus metrics",
              {200: Reply("text exposition format", media=("text/plain",))}, secured=False),
    Operation("get", "/api/openapi.json", "openapi", "This document",
              {200: Reply("OpenAPI 3.1", media=(_JSON,))}, secured=False),
    Operation("post", "/api/session", "createSession",
              "Trade a workspace API key for a session token",
              {200: Reply("the session and its token", m.SessionCreated)},
              errors=(400, 401, 413, 429, 503), body={_JSON: m.SessionRequest},
              body_required=False, examples={_JSON: {"session_id": EXAMPLE_SESSION}}),
    Operation("post", "/api/ask", "ask", "Ask by text (JSON) or audio (multipart)",
              {202: Reply("published", m.AskAccepted),
               200: Reply("the whole result (wait=true)", m.AskResult)},
              errors=(400, 401, 403, 410, 413, 415, 422, 429, 502, 503, 504), query=m.AskQuery,
              body={_JSON: m.TextAskBody, _MULTIPART: m.AudioAskForm},
              examples={_JSON: {"text": "What is the capital of France?", "language": "en"},
                        "query": {"wait": True}}),
    Operation("get", "/api/sessions/{id}/history", "history",
              "Decrypted transcripts and answers of the token's session",
              {200: Reply("the session's history", m.History)},
              errors=(401, 403, 404, 410, 429, 503)),
    Operation("post", "/v1/audio/transcriptions", "createTranscription",
              "OpenAI-compatible transcription (bearer: workspace API key)",
              {200: Reply("the transcript in the asked format",
                          (m.Transcription, m.VerboseTranscription),
                          media=("text/plain", "application/x-subrip", "text/vtt"))},
              errors=(400, 401, 403, 410, 413, 415, 422, 429, 502, 503, 504),
              body={_MULTIPART: m.TranscriptionForm}),
    Operation("post", "/v1/audio/translations", "createTranslation",
              "OpenAI-compatible translation into English (bearer: workspace API key)",
              {200: Reply("the English text in the asked format",
                          (m.Transcription, m.VerboseTranscription),
                          media=("text/plain", "application/x-subrip", "text/vtt"))},
              errors=(400, 401, 403, 410, 413, 415, 422, 429, 502, 503, 504),
              body={_MULTIPART: m.TranslationForm}),
    Operation("get", "/v1/models", "listModels",
              "OpenAI-compatible model list (bearer: workspace API key)",
              {200: Reply("the models `model` may name", m.ModelList)},
              errors=(401, 429, 503)),
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _reply(reply: Reply) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if isinstance(reply.model, tuple):
        content[_JSON] = {"schema": {"anyOf": [_ref(x) for x in reply.model]}}
    elif reply.model is not None:
        content[_JSON] = {"schema": _ref(reply.model)}
    for media in reply.media:
        content[media] = {"schema": {"type": "object"} if media == _JSON else {"type": "string"}}
    return {"description": reply.description, "content": content}


def _parameters(op: Operation) -> list[dict[str, Any]]:
    params = [{"name": name[1:-1], "in": "path", "required": True, "schema": {"type": "string"},
               "example": EXAMPLE_SESSION}
              for name in op.path.split("/") if name.startswith("{")]
    if op.query is not None:
        props = op.query.model_json_schema()["properties"]
        for name, info in op.query.model_fields.items():
            schema = dict(props[name])
            param = {"name": name, "in": "query", "required": info.is_required(),
                     "description": schema.pop("description", ""), "schema": schema}
            if name in op.examples.get("query", {}):
                param["example"] = op.examples["query"][name]
            params.append(param)
    return params


def _operation(op: Operation) -> dict[str, Any]:
    doc: dict[str, Any] = {"summary": op.summary, "operationId": op.operation_id}
    if op.secured:
        doc["security"] = [{"bearer": []}]
    if params := _parameters(op):
        doc["parameters"] = params
    if op.body:
        content = {}
        for media, model in op.body.items():
            content[media] = {"schema": _ref(model)}
            if media in op.examples:
                content[media]["example"] = op.examples[media]
        doc["requestBody"] = {"required": op.body_required, "content": content}
    responses = {str(s): _reply(r) for s, r in sorted(op.replies.items())}
    responses.update({str(s): _reply(Reply(_ERRORS[s], m.ErrorBody)) for s in op.errors})
    doc["responses"] = responses
    return doc


def _named() -> list[type[BaseModel]]:
    """``models.MODELS`` and every model an operation names (its body or a reply), so no
    ``$ref`` of the document is left without its schema."""
    named = list(m.MODELS)
    for op in OPERATIONS:
        replies = [r.model for r in op.replies.values() if r.model is not None]
        for model in [*op.body.values(),
                      *(x for r in replies for x in (r if isinstance(r, tuple) else (r,)))]:
            if model not in named:
                named.append(model)
    return named


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in _named():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def openapi_document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "mumu gateway", "version": __version__.split("+")[0],
                 "description": "HTTP API of mumu. The websocket /api/ws is described in "
                 "docs/gateway.md (OpenAPI cannot describe websockets). Every error is "
                 "JSON {\"error\": {\"code\", \"message\", \"request_id\"}}; an undocumented path "
                 "is 404, an undocumented method on a documented path 405 (with Allow)."},
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "workspace API key (/api/session, "
                                           "/v1/...) or session token (other routes)"}},
        },
    }


def openapi_text() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"
