"""Access and identity reviews: create-only resources answered on the spot, never stored.

``kubectl auth can-i`` posts a SelfSubjectAccessReview, ``kubectl auth whoami`` a
SelfSubjectReview; admission webhooks and proxies use SubjectAccessReview and TokenReview.
There is no authorization in k3py yet — every authenticated user may do everything — so every
access review is allowed, and the identity review reports the client certificate's subject.
"""

from __future__ import annotations

from typing import Any

from k3py.api import errors
from k3py.api.resources import ResourceInfo

_CREATE = ("create",)

REVIEW_RESOURCES = (
    ResourceInfo("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", "selfsubjectreview", False, _CREATE),
    ResourceInfo("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", "tokenreview", False, _CREATE),
    ResourceInfo("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews", "localsubjectaccessreview", True, _CREATE),
    ResourceInfo("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", "selfsubjectaccessreview", False, _CREATE),
    ResourceInfo("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", "selfsubjectrulesreview", False, _CREATE),
    ResourceInfo("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", "subjectaccessreview", False, _CREATE),
)
REVIEW_KINDS = frozenset((i.group, i.kind) for i in REVIEW_RESOURCES)

ADMIN = {"username": "system:admin", "groups": ["system:masters", "system:authenticated"]}


def user_from_peercert(cert: dict[str, Any] | None) -> dict[str, Any]:
    """The user a verified client certificate names: CN the user, each O a group."""
    if not cert:
        return dict(ADMIN)
    name = ""
    groups: list[str] = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                name = value
            elif key == "organizationName":
                groups.append(value)
    return {"username": name, "groups": [*groups, "system:authenticated"]}


def review(info: ResourceInfo, body: Any, user: dict[str, Any], token_valid: Any) -> dict[str, Any]:
    """The review object with its status filled in."""
    if not isinstance(body, dict):
        raise errors.bad_request(f"the body of the request must be a {info.kind} object")
    if not isinstance(body.get("spec") or {}, dict) or not isinstance(body.get("metadata") or {}, dict):
        raise errors.bad_request(f"json: cannot unmarshal into Go struct field {info.kind}.spec of type v1.{info.kind}Spec")
    result = {**body, "apiVersion": info.api_version, "kind": info.kind}
    result["metadata"] = {**(body.get("metadata") or {}), "creationTimestamp": None}
    if info.kind == "SelfSubjectReview":
        result["status"] = {"userInfo": user}
    elif info.kind == "TokenReview":
        token = ((body.get("spec") or {}).get("token")) or ""
        if token and token_valid(token):
            result["status"] = {"authenticated": True, "user": dict(ADMIN), "audiences": (body.get("spec") or {}).get("audiences") or []}
        else:
            result["status"] = {"authenticated": False, "user": {}}
    elif info.kind == "SelfSubjectRulesReview":
        result["status"] = {
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False,
        }
    else:
        result["status"] = {"allowed": True, "reason": "k3py: every authenticated user is a cluster administrator"}
    return result
