"""The typed structure of the built-in Kubernetes kinds, from their protobuf definitions.

`schema` loads the compact descriptor `scripts/gen-proto-schema.py` generates (messages, field
numbers, JSON names, Go pointer/omitempty/inline facts); `k3py.api.protobuf` decodes request
bodies with it and `structure` checks JSON objects against it (wrong types, unknown fields).
"""
