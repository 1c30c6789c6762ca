"""``GET /openapi.json``: an OpenAPI 3.1 document of every HTTP route and body.

Bodies come from the pydantic models the routes validate with, so the document cannot
drift from what the server accepts; a test checks that every route of the app is in it.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from streaming.requests import GenerateRequest, ToolResultRequest

__all__ = ["ROUTES", "openapi_document"]

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "suggestion": {"type": ["string", "null"]},
            },
        }
    },
}
ANY_OBJECT: dict[str, Any] = {"type": "object"}
SSE = {"text/event-stream": {"schema": {"type": "string"}}}
ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}

_STATUS_TEXT = {
    400: "Not JSON, or JSON refused at the door (too_deep, invalid_text, invalid_number)",
    401: "Credentials missing or wrong",
    403: "A read token used beyond its generation",
    404: "Unknown id (or another key's)",
    409: "State conflict",
    413: "Body too large",
    422: "Invalid body, unknown generator or unsupported capability",
    429: "Over a limit (see Retry-After)",
}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(c): {"description": _STATUS_TEXT[c], "content": {"application/json": {"schema": ERROR}}}
        for c in codes
    }


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema or ANY_OBJECT}}}


def _schema(model: Any) -> dict[str, Any]:
    schema: dict[str, Any] = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return schema


def openapi_document(extra_paths: dict[str, Any] | None = None) -> dict[str, Any]:
    generate = _schema(GenerateRequest)
    tool_result = _schema(ToolResultRequest)
    components: dict[str, Any] = {"Error": ERROR}
    for schema in (generate, tool_result):
        components.update(schema.pop("$defs", {}))
    components["GenerateRequest"] = generate
    components["ToolResultRequest"] = tool_result
    auth: list[dict[str, list[str]]] = [{"bearer": []}, {"access_token": []}]
    generation_response = _json("The generation, its blocks and its events URL")
    paths: dict[str, Any] = {
        "/generations": {
            "post": {
                "summary": "Start a generation",
                "description": "With `Accept: text/event-stream` the response is the event stream.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/GenerateRequest"}}},
                },
                "responses": {
                    "201": {
                        "description": "Started",
                        "content": {"application/json": {"schema": ANY_OBJECT}, **SSE},
                    },
                    **_errors(400, 401, 403, 404, 409, 413, 422, 429),
                },
            }
        },
        "/generations/{id}": {
            "get": {
                "summary": "A generation: state, blocks, usage",
                "parameters": [ID_PARAM],
                "responses": {"200": generation_response, **_errors(401, 404)},
            }
        },
        "/generations/{id}/events": {
            "get": {
                "summary": "The event stream (SSE), resumable",
                "parameters": [
                    ID_PARAM,
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {"description": "Events after the cursor, then live", "content": SSE},
                    **_errors(401, 404, 422, 429),
                },
            }
        },
        "/generations/{id}/cancel": {
            "post": {
                "summary": "Cancel (idempotent)",
                "parameters": [ID_PARAM],
                "responses": {"200": _json("The generation after the cancel"), **_errors(401, 404)},
            }
        },
        "/generations/{id}/tool-results": {
            "post": {
                "summary": "Answer a client-side tool call",
                "parameters": [ID_PARAM],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ToolResultRequest"}}},
                },
                "responses": {"202": _json("Accepted"), **_errors(400, 401, 404, 409, 413, 422)},
            }
        },
        "/blocks/{id}": {
            "get": {
                "summary": "A block",
                "parameters": [ID_PARAM],
                "responses": {"200": _json("The block"), **_errors(401, 404)},
            }
        },
        "/blocks/{id}/raw": {
            "get": {
                "summary": "A block's content, streamed until the block ends",
                "description": "With auth on, `content_url` of `GET /blocks/{id}` is a signed URL "
                "(`expires`, `signature`) that reaches this content without credentials until it expires.",
                "parameters": [
                    ID_PARAM,
                    {"name": "expires", "in": "query", "schema": {"type": "integer"}},
                    {"name": "signature", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {"description": "The bytes", "content": {"*/*": {"schema": {"type": "string"}}}},
                    **_errors(401, 404),
                },
            }
        },
        "/files/{id}": {
            "get": {
                "summary": "A conversation and its blocks",
                "parameters": [ID_PARAM],
                "responses": {"200": _json("The file"), **_errors(401, 403, 404)},
            }
        },
        "/healthz": {
            "get": {"summary": "Liveness", "security": [], "responses": {"200": _json("ok")}}
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {"description": "Text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    **_errors(401, 403),
                },
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "security": [], "responses": {"200": _json("OpenAPI")}}
        },
    }
    paths.update(extra_paths or {})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "streaming-runtime",
            "version": "0.1.0",
            "description": "Streaming generation runtime. Events: see README. WebSocket at /ws.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "access_token": {"type": "apiKey", "in": "query", "name": "access_token"},
            },
        },
        "security": auth,
    }


def _extra_paths() -> dict[str, Any]:
    """Routes defined by other modules, described here so the document stays whole."""
    chat = {
        "post": {
            "summary": "OpenAI-compatible chat completions (streaming and not, tools)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": ANY_OBJECT}}},
            "responses": {
                "200": {"description": "A chat.completion, or chat.completion.chunk SSE frames",
                        "content": {"application/json": {"schema": ANY_OBJECT}, **SSE}},
                **_errors(400, 401, 404, 413, 422, 429),
            },
        }
    }
    return {
        "/v1/chat/completions": chat,
        "/v1/models": {"get": {"summary": "Registered generators as models",
                               "responses": {"200": _json("A model list"), **_errors(401)}}},
        "/v1/models/{id}": {"get": {"summary": "One model", "parameters": [ID_PARAM],
                                    "responses": {"200": _json("A model"), **_errors(401, 404)}}},
        **_plugin_paths(),
        **_dialect_paths(),
        **_ai_sdk_paths(),
        "/generators": {"get": {"summary": "Registered generator names",
                                "responses": {"200": _json("Names"), **_errors(401)}}},
        "/": {"get": {"summary": "The demo chat page", "security": [],
                      "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
        "/static/{name}": {"get": {"summary": "Browser client and page assets", "security": [],
                                   "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                                   "responses": {"200": {"description": "An asset", "content": {"*/*": {"schema": {"type": "string"}}}},
                                                 **_errors(404)}}},
    }


def _dialect_paths() -> dict[str, Any]:
    """OpenAI Responses (server/routes/responses.py) and Anthropic Messages
    (server/routes/messages.py), in their own error shapes."""
    body = {"required": True, "content": {"application/json": {"schema": ANY_OBJECT}}}
    answer = {"content": {"application/json": {"schema": ANY_OBJECT}, **SSE}}
    stream = {"name": "stream", "in": "query", "required": False, "schema": {"type": "boolean"}}
    after = {"name": "starting_after", "in": "query", "required": False, "schema": {"type": "integer"}}
    errors = _errors(400, 401, 403, 404, 409, 413, 429)
    return {
        "/v1/responses": {"post": {"summary": "OpenAI Responses: create a response (streaming and not)",
                                   "requestBody": body,
                                   "responses": {"200": {"description": "A response, or its stream events", **answer},
                                                 **errors}}},
        "/v1/responses/{id}": {"get": {"summary": "A response; with stream=true its events (after starting_after)",
                                       "parameters": [ID_PARAM, stream, after],
                                       "responses": {"200": {"description": "The response, or its events", **answer},
                                                     **_errors(400, 401, 403, 404, 429)}}},
        "/v1/responses/{id}/cancel": {"post": {"summary": "Cancel a response", "parameters": [ID_PARAM],
                                               "responses": {"200": _json("The response"), **_errors(401, 403, 404)}}},
        "/v1/messages": {"post": {"summary": "Anthropic Messages: create a message (streaming and not)",
                                  "requestBody": body,
                                  "responses": {"200": {"description": "A message, or its stream events", **answer},
                                                **errors}}},
        "/v1/messages/{id}": {"get": {"summary": "A message; with stream=true its events (after Last-Event-ID)",
                                      "parameters": [ID_PARAM, stream],
                                      "responses": {"200": {"description": "The message, or its events", **answer},
                                                    **_errors(400, 401, 403, 404, 429)}}},
    }


def _ai_sdk_paths() -> dict[str, Any]:
    """The Vercel AI SDK's chat (server/routes/ai_sdk.py), in our error shape."""
    stream = {"description": "A UI message stream (data: chunks, then data: [DONE])", "content": SSE}
    nothing = {"description": "Nothing runs on the chat"}
    return {
        "/api/chat": {"post": {"summary": "The AI SDK's chat (useChat, Chat, DefaultChatTransport): "
                                          "id, messages, trigger, messageId, model, options, tools",
                               "requestBody": {"required": True, "content": {"application/json": {"schema": ANY_OBJECT}}},
                               "responses": {"200": stream, **_errors(400, 401, 404, 409, 413, 422, 429)}}},
        "/api/chat/{id}/stream": {"get": {"summary": "The chat's running generation from its start (after "
                                                     "?after=N or Last-Event-ID), then live",
                                          "parameters": [ID_PARAM],
                                          "responses": {"200": stream, "204": nothing, **_errors(401, 422, 429)}}},
        "/api/chat/{id}/stop": {"post": {"summary": "Cancel the chat's running generation", "parameters": [ID_PARAM],
                                         "responses": {"200": _json("The generation, cancelled"), "204": nothing,
                                                       **_errors(401)}}},
    }


def _plugin_paths() -> dict[str, Any]:
    from streaming.plugin_host import PATHS

    failed = {"description": "The plugin failed (InvocableResponse with a failed status)",
              "content": {"application/json": {"schema": ERROR}}}
    call = {
        "post": {
            "summary": "Call a hosted plugin instance at one of the seed's paths (PluginRequest in, InvocableResponse out)",
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "path", "in": "path", "required": True, "schema": {"type": "string", "enum": list(PATHS)}},
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": ANY_OBJECT}}},
            "responses": {
                "200": _json("An InvocableResponse: data and a succeeded status"),
                "202": _json("An InvocableResponse whose status is running (a generation or training task)"),
                **_errors(400, 401, 403, 404, 409, 413, 422, 429),
                "500": failed,
                "503": {"description": "The store is unavailable", "content": {"application/json": {"schema": ERROR}}},
            },
        }
    }
    return {
        "/plugins": {"get": {"summary": "Hosted plugin instances and the paths each answers",
                             "responses": {"200": _json("Instances"), **_errors(401, 403)}}},
        "/plugins/{name}/{path}": call,
    }


async def openapi(request: Request) -> Response:
    doc = getattr(request.app.state, "openapi", None)
    if doc is None:
        doc = request.app.state.openapi = openapi_document(_extra_paths())
    return JSONResponse(doc)


ROUTES = [Route("/openapi.json", openapi, methods=["GET"])]
