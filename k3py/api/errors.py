"""Kubernetes ``Status`` errors: the one exception type every API failure is raised as.

An ``ApiError`` carries the HTTP code, the machine-readable ``reason`` and the human message in
Kubernetes' own wording, because kubectl prints ``Error from server (<reason>): <message>``
straight from the Status body. The constructors below produce the exact sentences the upstream
API server uses (``configmaps "x" not found``, ``Operation cannot be fulfilled on ...``), so
users and scripts that match on them keep working.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A failed API request, rendered as a ``v1 Status`` by the HTTP layer."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status


def _qualified(resource: str, group: str) -> str:
    """``deployments.apps`` for grouped resources, ``pods`` for core, as upstream prints them."""
    return f"{resource}.{group}" if group else resource


def _details(name: str, group: str, kind: str, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    if kind:
        details["kind"] = kind
    details.update(extra)
    return details


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{_qualified(resource, group)} "{name}" not found',
        _details(name, group, resource),
    )


def already_exists(resource: str, name: str, group: str = "") -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{_qualified(resource, group)} "{name}" already exists',
        _details(name, group, resource),
    )


OBJECT_MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def conflict(resource: str, name: str, group: str = "", msg: str = OBJECT_MODIFIED) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(resource, group)} "{name}": {msg}',
        _details(name, group, resource),
    )


def invalid(kind: str, name: str, causes: list[dict[str, Any]], group: str = "") -> ApiError:
    """422 with one cause per field problem; the message lists them as upstream does."""
    qualified_kind = f"{kind}.{group}" if group else kind
    parts = []
    for cause in causes:
        field = cause.get("field", "")
        parts.append(f"{field}: {cause.get('message', '')}" if field else cause.get("message", ""))
    if len(parts) == 1:
        summary = parts[0]
    else:
        summary = "[" + ", ".join(parts) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{qualified_kind} "{name}" is invalid: {summary}',
        _details(name, group, kind, causes=causes),
    )


def bad_request(msg: str) -> ApiError:
    return ApiError(400, "BadRequest", msg)


def method_not_allowed(msg: str = "the server does not allow this method on the requested resource") -> ApiError:
    return ApiError(405, "MethodNotAllowed", msg)


def gone(msg: str) -> ApiError:
    return ApiError(410, "Expired", msg)


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        415, "UnsupportedMediaType", f'the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got "{content_type}")'
    )


def not_acceptable(accept: str) -> ApiError:
    return ApiError(
        406,
        "NotAcceptable",
        f"only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {accept!r})",
    )


def request_entity_too_large(msg: str = "Request entity too large: limit is 3145728") -> ApiError:
    return ApiError(413, "RequestEntityTooLarge", msg)


def forbidden(resource: str, name: str, group: str, msg: str) -> ApiError:
    subject = f'{_qualified(resource, group)} "{name}"' if name else _qualified(resource, group)
    return ApiError(403, "Forbidden", f"{subject} is forbidden: {msg}", _details(name, group, resource))


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def internal(msg: str) -> ApiError:
    return ApiError(
        500,
        "InternalError",
        f"Internal error occurred: {msg}",
        {"causes": [{"message": msg}]},
    )


def too_many_requests(msg: str = "Too many requests, please try again later.") -> ApiError:
    return ApiError(429, "TooManyRequests", msg)


def timeout(msg: str) -> ApiError:
    return ApiError(504, "Timeout", msg)


def not_found_path(path: str) -> ApiError:
    """404 for a URL that names no resource at all (upstream answers plain "404 page not found")."""
    return ApiError(404, "NotFound", "the server could not find the requested resource", {"causes": [{"reason": "UnexpectedServerResponse", "message": f"404 page not found: {path}"}]})
