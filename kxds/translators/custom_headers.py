"""``custom-headers``: response headers from a ConfigMap (nginx ``more_set_headers``).

The annotation names a ConfigMap, ``[namespace/]name``; each key is a header
name and its value the header's value, set (replacing) on every response of
the Ingress's routes. ingress-nginx also requires each name to be in the
controller's ``global-allowed-response-headers``; kxds has no controller
ConfigMap, so the Ingress's ConfigMap is taken as it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from kxds import ir
from kxds.diagnostics import Diagnostic, Reason
from kxds.kube.models import MAX_CONFIG_MAP_BYTES, ConfigMap, Key
from kxds.translators import annotations as ann
from kxds.translators.annotations import registry as r
from kxds.translators.annotations import values as v
from kxds.translators.annotations.values import BadValue


def config_map_key(value: str, namespace: str) -> Key | None:
    """``(namespace, name)`` of ``[namespace/]name``, or None when it names nothing."""
    ns, _, name = value.strip().rpartition("/")
    if not name or "/" in ns:
        return None
    return (ns or namespace, name)


def custom_headers(parsed: ann.Parsed, namespace: str, config_maps: Mapping[Key, ConfigMap],
                   diags: list[Diagnostic]) -> tuple[ir.Header, ...]:
    """The headers of the ConfigMap ``custom-headers`` names, sorted by name."""
    value = parsed.get(r.CUSTOM_HEADERS)
    if value is None:
        return ()
    key = config_map_key(value, namespace)
    if key is None:
        diags.append(parsed.problem(r.CUSTOM_HEADERS, f"{value!r} is not `[namespace/]name` "
                                    "of a ConfigMap; no header is added"))
        return ()
    cm = config_maps.get(key)
    if cm is None:
        diags.append(parsed.problem(
            r.CUSTOM_HEADERS, f"ConfigMap {key[0]}/{key[1]} not found; the routes are served "
            "without its headers", Reason.CONFIG_MAP_NOT_FOUND))
        return ()
    if cm.too_large:
        diags.append(parsed.problem(
            r.CUSTOM_HEADERS, f"ConfigMap {key[0]}/{key[1]} holds more than "
            f"{MAX_CONFIG_MAP_BYTES} bytes of data, too much for a header list; no header is "
            "added"))
        return ()
    out: dict[str, ir.Header] = {}
    for name, text in sorted(cm.data.items()):
        try:
            header = v.header_name(name)
        except BadValue:
            diags.append(parsed.problem(r.CUSTOM_HEADERS, f"ConfigMap {key[0]}/{key[1]} key "
                                        f"{name!r} is not a header name; it is not set"))
            continue
        why = _value_problem(text)
        if why is not None:
            diags.append(parsed.problem(r.CUSTOM_HEADERS, f"ConfigMap {key[0]}/{key[1]} value "
                                        f"of {name!r} {why}; it is not set"))
            continue
        out[header] = ir.Header(name=header, value=text.strip())
    return tuple(out[n] for n in sorted(out))


def _value_problem(text: str) -> str | None:
    if any(c in text for c in "\r\n\x00"):
        return "holds control characters"
    # nginx expands variables in more_set_headers values, and Envoy reads % as the
    # start of a formatter command: neither would be sent as written.
    if "$" in text:
        return "uses an nginx variable ($), which kxds does not expand"
    if "%" in text:
        return "holds '%', which Envoy would read as a formatter command"
    return None


def with_custom_headers(policy: ir.RoutePolicy | None,
                        headers: tuple[ir.Header, ...]) -> ir.RoutePolicy | None:
    """``policy`` setting ``headers`` on responses too; a header the policy sets wins."""
    if not headers:
        return policy
    base = policy or ir.RoutePolicy()
    response = base.response_headers or ir.HeaderChanges()
    own = {h.name for h in response.set}
    extra = tuple(h for h in headers if h.name not in own)
    return dataclasses.replace(
        base, response_headers=dataclasses.replace(response, set=(*extra, *response.set)))
