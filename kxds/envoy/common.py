"""Small pieces every Envoy builder shares: ``Any`` packing, stat names, the ADS source."""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message


def pack(message: Message) -> any_pb2.Any:
    """``message`` packed in an ``Any``, serialized deterministically.

    Deterministic so that a message holding a map (RBAC policies, per-filter
    configs) always gives the same bytes: resource versions hash these bytes.
    """
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def stat_name(name: str) -> str:
    """A resource name fit for an Envoy stat segment.

    Envoy splits stat names on ``.`` into tree levels and its tag extraction
    reads ``:``; host names and IP addresses keep neither.
    """
    return name.replace(".", "_").replace(":", "_")


def ads_config_source() -> config_source_pb2.ConfigSource:
    """A config source meaning "over the ADS stream", xDS v3."""
    source = config_source_pb2.ConfigSource()
    fill_ads_config_source(source)
    return source


def fill_ads_config_source(source: config_source_pb2.ConfigSource) -> None:
    """Set ``source`` (a message field, in place) to "over the ADS stream", xDS v3."""
    source.ads.SetInParent()
    source.resource_api_version = config_source_pb2.V3
