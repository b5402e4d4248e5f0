"""The OpenAPI document says every answer an operation really gives, not only its success: problem
JSON errors (401/403 for auth, 400/404/422 for bad requests, 413 for bodies over the limit, 429 from
the rate limits, 503 when the store is away), the portal routes' own reply shape, and the bearer key.
What a route declares itself is kept; this only adds what it leaves out."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field, TypeAdapter

from shared.problems import PROBLEM

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details with a machine-readable code (and, for batches, per-item results)",
    "required": ["type", "title", "status", "code", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string"},
        "detail": {"type": "string"},
    },
    "additionalProperties": True,
}
READY_REF = {"$ref": "#/components/schemas/Readiness"}
DESCRIPTIONS = {
    400: "Bad request (a body that is not JSON, a bad parameter value)",
    401: "No API key, or an unknown one",
    403: "The key's role or units do not allow this",
    404: "Unknown unit, snapshot or resource",
    413: "Body or batch over the limit",
    422: "Invalid parameters, or every item of the batch rejected",
    429: "Rate limited: retry after Retry-After seconds",
    503: "The store (or the event stream) is unavailable: retry later",
}
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
# Models named by request_body(): added to the document's components with the routes' own.
BODY_SCHEMAS: dict[str, dict] = {}


def batch(item: Any) -> Any:
    """A feed's body: a non-empty JSON array of items, or a single item."""
    return Annotated[list[item], Field(min_length=1)] | item


def request_body(shape: Any, *, description: str, required: bool = True, media_type: str = "application/json",
                 more: dict[str, dict] | None = None) -> dict:
    """``openapi_extra`` declaring the body a route reads itself (raw, for speed or for several formats):
    the shape a generated client sends; the route validates what it reads itself. ``shape``: a type, or
    a JSON Schema already made (with the components it names in BODY_SCHEMAS)."""
    if isinstance(shape, dict):
        schema = shape
    else:
        schema = TypeAdapter(shape).json_schema(ref_template="#/components/schemas/{model}")
        BODY_SCHEMAS.update(schema.pop("$defs", {}))
        if isinstance(shape, type) and issubclass(shape, BaseModel):  # named, as the models in a list are
            BODY_SCHEMAS[shape.__name__] = schema
            schema = {"$ref": f"#/components/schemas/{shape.__name__}"}
    return {"requestBody": {"required": required, "description": description,
                            "content": {media_type: {"schema": schema}, **(more or {})}}}

PORTAL_REF = {"$ref": "#/components/schemas/PortalReply"}


def answers(path: str, method: str, operation: dict) -> dict[int, tuple[dict, ...]]:
    """Status -> the schemas (by content type) the operation may answer besides what it declares."""
    if path == "/healthz":
        return {}
    if path == "/readyz":
        return {503: ({"application/json": READY_REF},)}
    problem = {PROBLEM: PROBLEM_REF}
    portal = {"application/json": PORTAL_REF}
    own = portal if path.startswith("/v1/dvcqg") else problem  # the portal routes answer in the portal's shape
    out: dict[int, tuple[dict, ...]] = {
        400: (own, problem), 401: (own,), 403: (own,), 404: (own, problem), 422: (own, problem),
        429: (problem,), 503: (problem,),
    }
    if method in ("post", "put", "patch"):
        out[413] = (own, problem)
    return out


def document_answers(app: FastAPI) -> None:
    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                             description=app.description, routes=app.routes)
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for name, body_schema in BODY_SCHEMAS.items():
            schemas.setdefault(name, body_schema)
        schemas["Problem"] = PROBLEM_SCHEMA
        components["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "an API key: Authorization: Bearer <key>"},
            "portalToken": {"type": "apiKey", "in": "header", "name": "token",
                            "description": "the portal callers' token header (the /v1/dvcqg routes)"},
        }
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                validation = responses.get("422", {}).get("content", {}).get("application/json", {})
                if validation.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                    del responses["422"]  # FastAPI's default shape; ours is problem JSON
                for status, shapes in answers(path, method, operation).items():
                    entry = responses.setdefault(str(status), {"description": DESCRIPTIONS.get(status, "")})
                    content = entry.setdefault("content", {})
                    for shape in shapes:
                        for media_type, shape_schema in shape.items():
                            content.setdefault(media_type, {"schema": shape_schema})
                    if status == 429:
                        entry.setdefault("headers", {})["Retry-After"] = {
                            "description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}
                    if status == 401 and PROBLEM in content:
                        entry.setdefault("headers", {})["WWW-Authenticate"] = {"schema": {"type": "string"}}
                if path.startswith("/v1/"):
                    operation.setdefault("security", [{"apiKey": []}, {"portalToken": []}]
                                         if path.startswith("/v1/dvcqg") else [{"apiKey": []}])
        for name in ("HTTPValidationError", "ValidationError"):
            if not _referenced(schema, name):
                schemas.pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _referenced(schema: dict, name: str) -> bool:
    import json

    target = f'"#/components/schemas/{name}"'
    return target in json.dumps(schema.get("paths", {})) or any(
        target in json.dumps(v) for k, v in schema.get("components", {}).get("schemas", {}).items() if k != name)
