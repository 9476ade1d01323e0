"""Gateway API field checks shared by the parsers of :mod:`kxds.kube.parse_gateway` and
:mod:`kxds.kube.parse_route_filters`: the CRD's patterns, lengths and CEL rules in its words."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from kxds.diagnostics import show
from kxds.kube.fields import fail, get_str

_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
CONTROLLER_NAME = re.compile(_DNS_SUBDOMAIN + r"/[A-Za-z0-9/\-._~%!$&'()*+,;=:]+")
SECTION_NAME = re.compile(_DNS_SUBDOMAIN)
HOSTNAME = re.compile(r"(\*\.)?" + _DNS_SUBDOMAIN)
PROTOCOL = re.compile(r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?|" + _DNS_SUBDOMAIN
                      + r"/[A-Za-z0-9]+")
KIND = re.compile(r"[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?")
GROUP = re.compile(r"|" + _DNS_SUBDOMAIN)
DURATION = re.compile(r"([0-9]{1,5}(h|m|s|ms)){1,4}")
PATH_CHARS = re.compile(r"(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}


def matching(value: str | None, pattern: re.Pattern[str], limit: int, field: str,
              what: str) -> str | None:
    """``value`` when it fits the CRD's pattern and length, else fail (None passes)."""
    if value is not None and (len(value) > limit or not pattern.fullmatch(value)):
        fail(field, f"{show(value)} is not {what}")
    return value


def duration_ms(value: str, field: str) -> int:
    """A Gateway API ``Duration`` (``1h30m``, ``500ms``: at most four parts) in milliseconds."""
    if not DURATION.fullmatch(value):
        fail(field, f"{show(value)} is not a duration (like 10s, 1m30s or 500ms)")
    return sum(int(n) * _UNIT_MS[u] for n, u in re.findall(r"([0-9]+)(ms|h|m|s)", value))


def object_name(raw: Mapping[str, Any], key: str, path: str, *, required: bool = True
                ) -> str | None:
    """An ``ObjectName`` (1-253 characters) or a namespace (a DNS label)."""
    value = get_str(raw, key, path, required=required)
    if value is not None and len(value) > 253:
        fail(f"{path}.{key}", f"is {len(value)} characters, more than 253")
    return value


def group_kind(raw: Mapping[str, Any], path: str, group: str, kind: str) -> tuple[str, str]:
    """``group`` and ``kind`` of a reference, defaulted as the CRD defaults them."""
    grp = raw.get("group")
    if grp is not None and not isinstance(grp, str):
        fail(f"{path}.group", f"must be a string, not {show(grp)}")
    value_group = group if grp is None else grp
    matching(value_group, GROUP, 253, f"{path}.group", "a group (a DNS subdomain, or empty)")
    value_kind = get_str(raw, "kind", path) or kind
    matching(value_kind, KIND, 63, f"{path}.kind", "a kind")
    return value_group, value_kind


def parse_hostname(value: str | None, field: str) -> str | None:
    """A Gateway API ``Hostname``: a DNS name, optionally ``*.`` first; no IP, no port."""
    if value is None:
        return None
    host = value.lower()
    matching(host, HOSTNAME, 253, field, "a host name (a DNS name, optionally '*.' first)")
    labels = host.removeprefix("*.").split(".")
    if all(lbl.isdigit() for lbl in labels) and len(labels) == 4:
        fail(field, f"{show(value)} is an IP address, not a host name")
    return host



def check_path(value: str, field: str) -> None:
    """The CEL rules of an Exact or PathPrefix ``value``, in the CRD's words."""
    if not value.startswith("/"):
        fail(field, "value must be an absolute path and start with '/' when type one of "
             "['Exact', 'PathPrefix']")
    for bad in ("//", "/./", "/../", "%2f", "%2F", "#"):
        if bad in value:
            fail(field, f"must not contain '{bad}' when type one of ['Exact', 'PathPrefix']")
    for end in ("/..", "/."):
        if value.endswith(end):
            fail(field, f"must not end with '{end}' when type one of ['Exact', 'PathPrefix']")
    if not PATH_CHARS.fullmatch(value):
        fail(field, f"{show(value)} must only contain valid characters (matching "
             "^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$) for types "
             "['Exact', 'PathPrefix']")


HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
