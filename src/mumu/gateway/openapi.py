"""The OpenAPI 3.1 document of the gateway's HTTP routes (``schemas/openapi.json``)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from mumu import __version__
from mumu.db.history import HistoryItem


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable, e.g. rate_limited, invalid_token")
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    uptime: float
    hostname: str


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    reasons: list[str] = Field(default_factory=list)


class SessionRequest(BaseModel):
    session_id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="continue this session of the workspace (default: a new one)",
    )


class SessionCreated(BaseModel):
    session_id: str
    token: str = Field(description="Bearer token for /api/ask, /api/ws and the history")
    expires_at: str = Field(description="ISO 8601")


class TextAskBody(BaseModel):
    text: str = Field(min_length=1, max_length=32_000)
    language: str | None = None


class AskAccepted(BaseModel):
    request_id: str
    session_id: str


class AskResult(BaseModel):
    request_id: str
    session_id: str
    transcript: str | None
    language: str | None
    answer: str | None
    cancelled: bool
    timings: dict[str, float] = Field(description="seconds since the request, per event")


class History(BaseModel):
    session_id: str
    items: list[HistoryItem] = Field(description="oldest first")


class Transcription(BaseModel):
    text: str


MODELS: tuple[type[BaseModel], ...] = (
    ErrorBody, Health, Readiness, SessionRequest, SessionCreated, TextAskBody, AskAccepted,
    AskResult, HistoryItem, History, Transcription,
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "bad input", 401: "missing or invalid credentials", 403: "not yours",
            404: "no such route (e.g. an empty session id)", 410: "crypto-erased (shredded)",
            413: "too large", 415: "unsupported media or audio",
            422: "no speech in the audio (no_speech)", 429: "rate limited (Retry-After)",
            502: "a stage failed with an error the gateway does not map",
            503: "unavailable or overloaded (Retry-After)", 504: "a stage did not answer"}
    return {str(s): _json(ErrorBody, text[s]) for s in statuses}


_MULTIPART_AUDIO = {
    "type": "object",
    "required": ["audio"],
    "properties": {
        "audio": {"type": "string", "format": "binary",
                  "description": "wav, flac, ogg/opus, mp3, webm or m4a"},
        "language": {"type": "string"},
    },
}
_TRANSCRIPTION_FORM = {
    "type": "object",
    "required": ["file", "model"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "model": {"type": "string", "description": "accepted for compatibility"},
        "language": {"type": "string"},
        "prompt": {"type": "string"},
        "response_format": {"type": "string",
                            "enum": ["json", "text", "srt", "verbose_json", "vtt"]},
        "temperature": {"type": "number"},
        "timestamp_granularities[]": {"type": "array",
                                      "items": {"type": "string", "enum": ["segment", "word"]}},
    },
}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


EXAMPLE_SESSION = "demo"
"""The session id the document's examples use (the schemathesis test asks in it first)."""


def _plain(description: str, media: str) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": {"type": "string"}}}}


def _probes() -> dict[str, Any]:
    return {
        "/": {"get": {"summary": "The demo page (HTML)", "operationId": "demoPage",
                      "responses": {"200": _plain("the page", "text/html")}}},
        "/api/health": {"get": {"summary": "Liveness", "operationId": "health",
                                "responses": {"200": _json(Health, "alive")}}},
        "/api/ready": {"get": {
            "summary": "Readiness: NATS, streams, every stage's consumer, stage lag, database",
            "operationId": "ready",
            "responses": {"200": _json(Readiness, "ready"),
                          "503": _json(Readiness, "not ready, with reasons")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics",
                             "responses": {"200": _plain("text exposition format",
                                                         "text/plain")}}},
        "/api/openapi.json": {"get": {
            "summary": "This document", "operationId": "openapi",
            "responses": {"200": {"description": "OpenAPI 3.1",
                                  "content": {"application/json": {"schema": {
                                      "type": "object"}}}}}}},
    }


def _paths() -> dict[str, Any]:
    return {
        **_probes(),
        "/api/session": {"post": {
            "summary": "Trade a workspace API key for a session token",
            "operationId": "createSession", "security": _BEARER,
            "requestBody": {"required": False, "content": {"application/json": {
                "schema": _ref(SessionRequest), "example": {"session_id": EXAMPLE_SESSION}}}},
            "responses": {"200": _json(SessionCreated, "the session and its token"),
                          **_errors(400, 401, 413, 429, 503)},
        }},
        "/api/ask": {"post": {
            "summary": "Ask by text (JSON) or audio (multipart)", "operationId": "ask",
            "security": _BEARER,
            "parameters": [{"name": "wait", "in": "query", "required": False,
                            "schema": {"type": "boolean", "default": False}, "example": True,
                            "description": "wait for the full result"}],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref(TextAskBody),
                                     "example": {"text": "What is the capital of France?",
                                                 "language": "en"}},
                "multipart/form-data": {"schema": _MULTIPART_AUDIO}}},
            "responses": {"202": _json(AskAccepted, "published"),
                          "200": _json(AskResult, "the whole result (wait=true)"),
                          **_errors(400, 401, 403, 413, 415, 422, 429, 502, 503, 504)},
        }},
        "/api/sessions/{id}/history": {"get": {
            "summary": "Decrypted transcripts and answers of the token's session",
            "operationId": "history", "security": _BEARER,
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string"}, "example": EXAMPLE_SESSION}],
            "responses": {"200": _json(History, "the session's history"),
                          **_errors(401, 403, 404, 410, 429, 503)},
        }},
        "/v1/audio/transcriptions": {"post": {
            "summary": "OpenAI-compatible transcription (bearer: workspace API key)",
            "operationId": "createTranscription", "security": _BEARER,
            "requestBody": {"required": True,
                            "content": {"multipart/form-data": {"schema": _TRANSCRIPTION_FORM}}},
            "responses": {
                "200": {"description": "the transcript in the asked format", "content": {
                    "application/json": {"schema": _ref(Transcription)},
                    "text/plain": {"schema": {"type": "string"}},
                    "application/x-subrip": {"schema": {"type": "string"}},
                    "text/vtt": {"schema": {"type": "string"}}}},
                **_errors(400, 401, 403, 413, 415, 422, 429, 502, 503, 504)},
        }},
    }


def openapi_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "mumu gateway", "version": __version__.split("+")[0],
                 "description": "HTTP API of mumu. The websocket /api/ws is described in "
                 "docs/gateway.md (OpenAPI cannot describe websockets). Every error is "
                 "JSON {\"error\": {\"code\", \"message\"}}; an undocumented path "
                 "is 404, an undocumented method on a documented path 405 (with Allow)."},
        "paths": _paths(),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "workspace API key (/api/session, "
                                           "/v1/...) or session token (other routes)"}},
        },
    }


def openapi_text() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"
