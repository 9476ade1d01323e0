"""Serialized resources -> YAML shaped like an Envoy config dump.

Used by ``kxds translate``, the golden tests and the debug endpoints. Each
resource is decoded with its message class and rendered with protobuf's JSON
mapping, keeping the proto field names (``snake_case``, as Envoy's own config
files and ``/config_dump`` use them). Output is deterministic: kinds in push
order, resources sorted by name, fields in proto order, map entries by key.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import yaml
from google.protobuf import any_pb2, descriptor_pool, json_format, message_factory, struct_pb2
from google.protobuf.message import Message

from kxds.envoy.resource import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SECRET,
    SHORT_NAMES,
    TYPE_ORDER,
    Resource,
    Resources,
)

_MESSAGE_MODULES = {
    CLUSTER: ("envoy.config.cluster.v3.cluster_pb2", "Cluster"),
    ENDPOINT: ("envoy.config.endpoint.v3.endpoint_pb2", "ClusterLoadAssignment"),
    LISTENER: ("envoy.config.listener.v3.listener_pb2", "Listener"),
    ROUTE: ("envoy.config.route.v3.route_pb2", "RouteConfiguration"),
    SECRET: ("envoy.extensions.transport_sockets.tls.v3.secret_pb2", "Secret"),
}

# Messages that appear packed in ``Any`` fields: importing their modules
# registers them so the JSON mapping can expand them.
_ANY_MODULES = (
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.filters.http.router.v3.router_pb2",
    "envoy.extensions.filters.http.rbac.v3.rbac_pb2",
    "envoy.extensions.filters.network.rbac.v3.rbac_pb2",
    "envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2",
    "envoy.extensions.filters.udp.udp_proxy.v3.udp_proxy_pb2",
    "envoy.extensions.filters.udp.udp_proxy.v3.route_pb2",
    "envoy.extensions.filters.listener.tls_inspector.v3.tls_inspector_pb2",
    "envoy.extensions.filters.listener.proxy_protocol.v3.proxy_protocol_pb2",
    "envoy.extensions.filters.listener.original_src.v3.original_src_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
    "envoy.extensions.transport_sockets.proxy_protocol.v3.upstream_proxy_protocol_pb2",
    "envoy.extensions.transport_sockets.raw_buffer.v3.raw_buffer_pb2",
    "envoy.extensions.upstreams.http.v3.http_protocol_options_pb2",
    "envoy.extensions.filters.network.direct_response.v3.config_pb2",
    "xds.type.matcher.v3.matcher_pb2",
    "envoy.extensions.matching.common_inputs.network.v3.network_inputs_pb2",
    "envoy.extensions.filters.http.basic_auth.v3.basic_auth_pb2",
    "envoy.extensions.common.matching.v3.extension_matcher_pb2",
    "envoy.extensions.filters.common.matcher.action.v3.skip_action_pb2",
    "envoy.extensions.matching.input_matchers.metadata.v3.metadata_pb2",
)


def _register_any_types() -> None:
    for name in _ANY_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # pragma: no cover - depends on the xds-protos build
            continue


_register_any_types()


def message_class(type_url: str) -> type[Message]:
    """The protobuf class of a resource type URL."""
    module, name = _MESSAGE_MODULES[type_url]
    cls: type[Message] = getattr(importlib.import_module(module), name)
    return cls


def decode(resource: Resource) -> Message:
    """The message ``resource`` holds."""
    msg = message_class(resource.type_url)()
    msg.ParseFromString(resource.body)
    return msg


def to_dict(message: Message) -> dict[str, Any]:
    """``message`` in the protobuf JSON mapping, with proto field names."""
    raw = json_format.MessageToDict(message, preserving_proto_field_name=True)
    _sort_maps(message, raw)
    out: dict[str, Any] = _plain(raw)
    return out


def _sort_maps(message: Message, value: Any) -> None:
    """Put map entries in key order, in place (maps inside ``Any`` too).

    upb iterates a map in hash order, which changes from one process to the
    next, so without this a map with two entries (RBAC policies) would render
    differently run to run.
    """
    if not isinstance(value, dict):
        return
    if isinstance(message, struct_pb2.Struct):  # a JSON object: a map too
        entries = sorted(value.items())
        value.clear()
        value.update(entries)
        return
    if isinstance(message, any_pb2.Any):
        try:
            desc = descriptor_pool.Default().FindMessageTypeByName(message.TypeName())
        except KeyError:
            return
        inner = message_factory.GetMessageClass(desc)()
        message.Unpack(inner)
        _sort_maps(inner, value)
        return
    for field, sub in message.ListFields():
        if field.message_type is None or field.name not in value:
            continue
        if field.message_type.GetOptions().map_entry:
            entries = value[field.name]
            if field.message_type.fields_by_name["value"].message_type is not None:
                for key in sub:
                    _sort_maps(sub[key], entries.get(str(key)))
            value[field.name] = dict(sorted(entries.items()))
        elif field.is_repeated:
            for item, rendered in zip(sub, value[field.name], strict=False):
                _sort_maps(item, rendered)
        else:
            _sort_maps(sub, value[field.name])


def _plain(value: Any) -> Any:
    # ``Any`` fields come back as OrderedDict, which safe_dump refuses.
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


REDACTED = "[redacted]"


def _redact(secret: dict[str, Any]) -> dict[str, Any]:
    """Hide a secret's private key, as Envoy's own ``/config_dump`` does."""
    cert = secret.get("tls_certificate")
    if isinstance(cert, dict) and "private_key" in cert:
        cert["private_key"] = {"inline_string": REDACTED}
    return secret


_USERS_TYPES = frozenset({
    "type.googleapis.com/envoy.extensions.filters.http.basic_auth.v3.BasicAuthPerRoute",
    "type.googleapis.com/envoy.extensions.filters.http.basic_auth.v3.BasicAuth",
})
"""Configs whose ``users`` hold password hashes (htpasswd lines)."""


def _redact_users(value: Any) -> None:
    """Hide the password hashes of basic auth configs anywhere in ``value``; the user
    names stay, so a dump still says who may sign in."""
    if isinstance(value, dict):
        if value.get("@type") in _USERS_TYPES and isinstance(value.get("users"), dict):
            lines = str(value["users"].get("inline_string", "")).split("\n")
            value["users"] = {"inline_string": "\n".join(
                f"{line.partition(':')[0]}:{REDACTED}" for line in lines if line)}
        for v in value.values():
            _redact_users(v)
    elif isinstance(value, list):
        for v in value:
            _redact_users(v)


def resources_to_dict(resources: Resources, *, redact: bool = True
                      ) -> dict[str, list[dict[str, Any]]]:
    """``{"clusters": [...], "endpoints": [...], ...}``: kinds present, in push order.

    Private keys and basic auth password hashes are replaced by ``[redacted]``
    unless ``redact`` is false.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for type_url in TYPE_ORDER:
        by_name: Mapping[str, Resource] = resources.get(type_url, {})
        if by_name:
            rendered = [to_dict(decode(by_name[n])) for n in sorted(by_name)]
            if redact and type_url == SECRET:
                rendered = [_redact(r) for r in rendered]
            elif redact and type_url == ROUTE:
                _redact_users(rendered)
            out[SHORT_NAMES[type_url]] = rendered
    return out


def resources_to_yaml(resources: Resources, *, redact: bool = True) -> str:
    """The resources as YAML, grouped by kind like an Envoy config dump."""
    return yaml.safe_dump(resources_to_dict(resources, redact=redact), sort_keys=False,
                          default_flow_style=False, allow_unicode=True, width=100)
