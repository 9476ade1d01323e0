"""Who a connected Envoy is: its role, its group (the view it is served) and its node."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kxds.errors import KxdsError

ROLES = ("edge", "node")
SOURCE_IP_MODES = ("transparent", "node")
"""Node metadata ``source_ip_mode`` of a per-node proxy: ``transparent`` when the
node is set up to route replies to the proxy's transparent sockets back to it."""
MAX_NAME = 253
"""Longest ``node.cluster`` or node name (a DNS subdomain's limit): it names a group,
which appears in metric labels and log lines."""
MAX_NODE_ID = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidNodeError(KxdsError):
    """The Envoy node does not say who it is in a way kxds understands."""


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """Who a connected Envoy is, derived once from the first request's ``Node``."""

    node_id: str
    role: str
    """``edge`` or ``node``."""
    group: str
    """The cache view this proxy is served: ``edge/<cluster>`` or ``node/<node name>``."""
    node_name: str | None
    zone: str | None
    cluster: str
    bind_address: str | None = None
    """Node metadata ``bind_address`` (per-node proxies only), if given."""
    source_ip_mode: str | None = None
    """Node metadata ``source_ip_mode`` (per-node proxies only), if given."""


def _metadata_str(node: Any, key: str) -> str | None:
    fields = node.metadata.fields
    if key not in fields:
        return None
    value = fields[key]
    if value.WhichOneof("kind") != "string_value":
        raise InvalidNodeError(f"node metadata {key!r} must be a string")
    return str(value.string_value) or None


def _checked(value: str, what: str, limit: int) -> str:
    """``value``, unless it is too long or holds control characters (which would
    forge log lines); those raise :class:`InvalidNodeError`."""
    if len(value) > limit:
        raise InvalidNodeError(f"{what} is {len(value)} characters long; at most {limit}")
    if _CONTROL.search(value):
        raise InvalidNodeError(f"{what} {value[:64]!r} holds control characters")
    return value


def node_identity(node: Any) -> NodeIdentity:
    """Derive the :class:`NodeIdentity` of an ``envoy.config.core.v3.Node``.

    Raises :class:`InvalidNodeError` with a message meant for the Envoy
    operator when metadata ``role`` is missing or unknown.
    """
    node_id = _checked(str(node.id), "node id", MAX_NODE_ID)
    role = _metadata_str(node, "role")
    if role is None:
        raise InvalidNodeError(
            f"node {node_id!r}: metadata 'role' is missing; set it to one of {', '.join(ROLES)}")
    if role not in ROLES:
        raise InvalidNodeError(
            f"node {node_id!r}: unknown role {role!r}; expected one of {', '.join(ROLES)}")
    cluster = _checked(str(node.cluster), "node.cluster", MAX_NAME) or "default"
    zone = _metadata_str(node, "zone") or (str(node.locality.zone) or None)
    if role == "edge":
        return NodeIdentity(node_id, role, f"edge/{cluster}", None, zone, cluster)
    node_name = _checked(_metadata_str(node, "node_name") or node_id, "node name", MAX_NAME)
    if not node_name:
        raise InvalidNodeError("per-node proxy without node id or metadata 'node_name'")
    mode = _metadata_str(node, "source_ip_mode")
    if mode is not None and mode not in SOURCE_IP_MODES:
        raise InvalidNodeError(f"node {node_id!r}: unknown source_ip_mode {mode!r}; "
                               f"expected one of {', '.join(SOURCE_IP_MODES)}")
    return NodeIdentity(node_id, role, f"node/{node_name}", node_name, zone, cluster,
                        _metadata_str(node, "bind_address"), mode)
