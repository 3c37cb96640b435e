"""The OpenAPI endpoints: ``/openapi/v2`` and ``/openapi/v3[/<gv>]``, from ``k3py.api.openapi``.

Documents are built once per resource-table generation (CRDs change them) and served with an
ETag; kubectl and Helm fetch them before every apply/install.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from aiohttp import web

from k3py.api import errors, openapi, openapi_v2_proto
from k3py.api.resources import ResourceTable


class OpenAPIRoutes:
    def __init__(self, table: ResourceTable) -> None:
        self.table = table
        self._generation = -1
        # key -> (document, ETag), or None for a document that does not exist
        self._cache: dict[str, tuple[bytes, str] | None] = {}
        self._module: Any = openapi  # the document builders (k3py.api.openapi)

    def _cached(self, key: str, build: Any) -> tuple[bytes, str] | None:
        if self._generation != self.table.generation:
            self._cache = {}
            self._generation = self.table.generation
        if key not in self._cache:
            body = build()
            self._cache[key] = None if body is None else (body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
        return self._cache[key]

    def serve(self, request: web.BaseRequest, segments: list[str]) -> web.Response:
        module = self._module
        content_type = "application/json"
        if segments == ["openapi", "v2"] and "protobuf" in request.headers.get("Accept", "") and hasattr(module, "openapi_v2_protobuf"):
            # kubectl <= 1.28 asks for the gnostic protobuf form first.
            found = self._cached("v2pb", lambda: module.openapi_v2_protobuf(self.table))
            content_type = openapi_v2_proto.CONTENT_TYPE
        elif segments == ["openapi", "v2"]:
            found = self._cached("v2", lambda: module.openapi_v2(self.table))
        elif segments == ["openapi", "v3"]:
            found = self._cached("v3", lambda: orjson.dumps(module.openapi_v3_index(self.table)))
        elif len(segments) > 2 and segments[:2] == ["openapi", "v3"]:
            gv_path = "/".join(segments[2:])
            found = self._cached(f"v3/{gv_path}", lambda: module.openapi_v3_document(self.table, gv_path))
        else:
            found = None
        if found is None:
            raise errors.not_found_path(request.path)
        body, etag = found
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(
            body=body,
            headers={"Content-Type": content_type, "ETag": etag, "Cache-Control": "no-cache, private", "Vary": "Accept"},
        )
