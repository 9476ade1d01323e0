"""``auth-proxy-set-headers``: headers from a ConfigMap added to the external
authentication check request (nginx ``proxy_set_header`` in the auth location).

Each key of the ConfigMap is a header name, its value the header's value, in
which nginx variables may appear. The variables Envoy can compute per request
are kept as :class:`~kxds.ir.ValuePart` values; any other variable, a bad
header name, a header kxds sets on the check itself or a missing ConfigMap
cannot be honoured: the annotation narrows what the service is told, so the
Ingress fails closed (every route answers 503) with a diagnostic saying why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from kxds import ir
from kxds.diagnostics import Diagnostic, Reason
from kxds.kube.models import MAX_CONFIG_MAP_BYTES, ConfigMap, Key
from kxds.translators import annotations as ann
from kxds.translators.annotations import registry as r
from kxds.translators.annotations.values import BadValue, header_name
from kxds.translators.custom_headers import config_map_key

VARIABLES: Mapping[str, ir.RequestValue] = {
    "remote_addr": ir.RequestValue.CLIENT_ADDRESS,
    "remote_port": ir.RequestValue.CLIENT_PORT,
    "host": ir.RequestValue.AUTHORITY,
    "http_host": ir.RequestValue.AUTHORITY,
    "request_uri": ir.RequestValue.PATH,
    "request_method": ir.RequestValue.METHOD,
    "scheme": ir.RequestValue.SCHEME,
}
"""The nginx variables kxds can express, besides ``$http_<name>`` (a request header)."""

RESERVED = ("x-original-url", "x-original-method", "x-sent-from", "x-real-ip",
            "x-auth-request-redirect", "host", "content-length", "x-kxds-")
"""Headers kxds sets on the check request itself (a name starting with the last)."""

_VARIABLE = re.compile(r"\$(\{(?P<braced>[A-Za-z0-9_]+)\}|(?P<bare>[A-Za-z0-9_]+))")
_OUTCOME = "authentication cannot be checked as asked, every route of this Ingress answers 503 " \
           "(fail closed)"


def check_headers(parsed: ann.Parsed, namespace: str, config_maps: Mapping[Key, ConfigMap]
                  ) -> tuple[tuple[ir.HeaderTemplate, ...], Diagnostic | None]:
    """The check request's extra headers, or the problem that makes the routes refuse."""
    value = parsed.get(r.AUTH_PROXY_SET_HEADERS)
    if value is None:
        if r.AUTH_PROXY_SET_HEADERS.name in parsed.keys:  # present but unusable
            return (), _refuse(parsed, "is not usable")
        return (), None
    key = config_map_key(value, namespace)
    if key is None:
        return (), _refuse(parsed, f"{value!r} is not `[namespace/]name` of a ConfigMap")
    cm = config_maps.get(key)
    if cm is None:
        return (), _refuse(parsed, f"ConfigMap {key[0]}/{key[1]} not found",
                           Reason.CONFIG_MAP_NOT_FOUND)
    if cm.too_large:
        return (), _refuse(parsed, f"ConfigMap {key[0]}/{key[1]} holds more than "
                           f"{MAX_CONFIG_MAP_BYTES} bytes of data, too much for a header list")
    out: list[ir.HeaderTemplate] = []
    for name, text in sorted(cm.data.items()):
        where = f"ConfigMap {key[0]}/{key[1]} key {name!r}"
        try:
            header = header_name(name)
        except BadValue:
            return (), _refuse(parsed, f"{where} is not a header name")
        if header in RESERVED[:-1] or header.startswith(RESERVED[-1]):
            return (), _refuse(parsed, f"{where} names a header kxds sets on the check "
                               "request itself")
        parts, why = template(text)
        if why is not None:
            return (), _refuse(parsed, f"{where}: {why}")
        out.append(ir.HeaderTemplate(name=header, parts=parts))
    return tuple(out), None


def template(text: str) -> tuple[tuple[ir.ValuePart, ...], str | None]:
    """``text`` split into text and request values, or why it cannot be."""
    if not (text.isascii() and text.isprintable()):
        return (), "the value must be printable ASCII"
    parts: list[ir.ValuePart] = []
    at = 0
    for found in _VARIABLE.finditer(text):
        if found.start() > at:
            parts.append(ir.ValuePart(text=text[at:found.start()]))
        name = (found.group("braced") or found.group("bare")).lower()
        if name in VARIABLES:
            parts.append(ir.ValuePart(value=VARIABLES[name]))
        elif name.startswith("http_") and len(name) > 5:
            parts.append(ir.ValuePart(request_header=name[5:].replace("_", "-")))
        else:
            return (), (f"the nginx variable ${name} cannot be expressed (kxds knows "
                        f"{', '.join('$' + v for v in VARIABLES)} and $http_<name>)")
        at = found.end()
    if "$" in text[at:] or any("$" in p.text for p in parts):
        return (), "a '$' that is not a variable kxds knows"
    if at < len(text):
        parts.append(ir.ValuePart(text=text[at:]))
    return tuple(parts), None


def _refuse(parsed: ann.Parsed, why: str,
            reason: Reason = Reason.INVALID_VALUE) -> Diagnostic:
    return parsed.problem(r.AUTH_PROXY_SET_HEADERS, f"{why}: {_OUTCOME}", reason)
