"""The OpenAPI endpoints: ``/openapi/v2`` and ``/openapi/v3[/<gv>]``, from ``k3py.api.openapi``.

Documents are built once per resource-table generation (CRDs change them) and served with an
ETag; kubectl and Helm fetch them before every apply/install.
"""

from __future__ import annotations

import asyncio
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
        # key -> the build under way (requests arriving meanwhile wait for the same one)
        self._building: dict[tuple[int, str], asyncio.Future[tuple[bytes, str] | None]] = {}
        self._module: Any = openapi  # the document builders (k3py.api.openapi)

    async def _cached(self, key: str, build: Any) -> tuple[bytes, str] | None:
        """The document ``build()`` makes, built once per table generation on a worker thread:
        a group's v3 document or the v2 one takes 100 ms and more to render, which on the event
        loop would stall every other request (kubectl fetches them before each apply)."""
        generation = self.table.generation
        if self._generation != generation:
            self._cache = {}
            self._generation = generation
        if key in self._cache:
            return self._cache[key]
        pending = self._building.get((generation, key))
        if pending is None:
            pending = asyncio.ensure_future(asyncio.to_thread(_build_with_etag, build))
            self._building[(generation, key)] = pending
            pending.add_done_callback(lambda _done: self._building.pop((generation, key), None))
        found = await asyncio.shield(pending)
        if self.table.generation == generation == self._generation:
            self._cache[key] = found
        return found

    async def serve(self, request: web.BaseRequest, segments: list[str]) -> web.Response:
        module = self._module
        content_type = "application/json"
        if segments == ["openapi", "v2"] and "protobuf" in request.headers.get("Accept", "") and hasattr(module, "openapi_v2_protobuf"):
            # kubectl <= 1.28 asks for the gnostic protobuf form first.
            found = await self._cached("v2pb", lambda: module.openapi_v2_protobuf(self.table))
            content_type = openapi_v2_proto.CONTENT_TYPE
        elif segments == ["openapi", "v2"]:
            found = await self._cached("v2", lambda: module.openapi_v2(self.table))
        elif segments == ["openapi", "v3"]:
            found = await self._cached("v3", lambda: orjson.dumps(module.openapi_v3_index(self.table)))
        elif len(segments) > 2 and segments[:2] == ["openapi", "v3"]:
            gv_path = "/".join(segments[2:])
            found = await self._cached(f"v3/{gv_path}", lambda: module.openapi_v3_document(self.table, gv_path))
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


def _build_with_etag(build: Any) -> tuple[bytes, str] | None:
    # The table may gain or lose a CRD on the loop while this thread reads it: build again.
    for attempt in range(3):
        try:
            body = build()
            break
        except RuntimeError:  # "dictionary changed size during iteration"
            if attempt == 2:
                raise
    return None if body is None else (body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
