"""CORS and rate limit annotations -> :class:`~kxds.ir.CorsPolicy`, :class:`~kxds.ir.RateLimit`.

CORS follows ingress-nginx's ``enable-cors`` defaults: any origin, methods
``GET, PUT, POST, DELETE, PATCH, OPTIONS``, its list of allowed headers,
credentials allowed, preflights cached 1728000 s. An origin of the form
``https://*.example.com[:port]`` allows exactly one label in place of ``*``.

Rate limits follow ``limit-rps`` / ``limit-rpm`` with ``limit-burst-multiplier``
(default 5): a client address may send ``rate x multiplier`` requests at once,
and the bucket refills at the rate. The status is ``--limit-status-code``.
Clients in ``limit-allowlist`` (or ``limit-whitelist``) CIDRs are not limited.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

from kxds import ir
from kxds.diagnostics import Diagnostic, Reason, show
from kxds.translators import annotations as ann
from kxds.translators.annotations import registry as r
from kxds.translators.annotations.values import too_large

DEFAULT_METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS")
DEFAULT_HEADERS = ("dnt", "x-customheader", "keep-alive", "user-agent", "x-requested-with",
                   "if-modified-since", "cache-control", "content-type", "authorization")
DEFAULT_MAX_AGE = 1_728_000
DEFAULT_BURST_MULTIPLIER = 5
_METHOD = re.compile(r"^[A-Za-z]+$")
_HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$")


def _origin(raw: str) -> tuple[str | None, str | None]:
    """(exact origin, or RE2 pattern for a ``*.`` one); (None, None) when malformed."""
    if raw == "*":
        return "*", None
    u = urllib.parse.urlsplit(raw)
    host = u.hostname or ""
    try:
        port = u.port
    except ValueError:
        return None, None
    if u.scheme not in ("http", "https") or u.path not in ("", "/") or u.query or not host:
        return None, None
    wild = host.startswith("*.")
    labels = host[2:].split(".") if wild else host.split(".")
    if not all(_HOST_LABEL.match(label) for label in labels):
        return None, None
    suffix = f":{port}" if port is not None else ""
    if not wild:
        return f"{u.scheme}://{host}{suffix}", None
    escaped = re.escape(host[2:] + suffix)
    return None, f"{u.scheme}://[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\\.{escaped}"


def cors_policy(parsed: ann.Parsed, diags: list[Diagnostic]) -> ir.CorsPolicy | None:
    """The CORS policy ``enable-cors`` asks for, or None."""
    if not parsed.get(r.ENABLE_CORS):
        return None
    exact: list[str] = []
    patterns: list[str] = []
    for raw in parsed.get(r.CORS_ALLOW_ORIGIN) or ("*",):
        one, pattern = _origin(raw)
        if one is None and pattern is None:
            diags.append(parsed.problem(r.CORS_ALLOW_ORIGIN, f"{show(raw)} is not an origin "
                                        "(http(s)://host[:port], *.host allowed); left out"))
        elif too_large(pattern):
            diags.append(parsed.problem(r.CORS_ALLOW_ORIGIN, f"{show(raw)} is too long for "
                                        "Envoy's regex engine as a wildcard origin; left out: "
                                        "it gets no CORS headers"))
            pattern = None
        exact += [one] if one else []
        patterns += [pattern] if pattern else []
    methods = parsed.get(r.CORS_ALLOW_METHODS) or DEFAULT_METHODS
    if not all(_METHOD.match(m) for m in methods):
        diags.append(parsed.problem(r.CORS_ALLOW_METHODS, f"{show(', '.join(methods))} may "
                                    "hold only letters; the defaults are used"))
        methods = DEFAULT_METHODS
    credentials = parsed.get(r.CORS_ALLOW_CREDENTIALS)
    max_age = parsed.get(r.CORS_MAX_AGE)
    return ir.CorsPolicy(
        origins=tuple(exact), origin_patterns=tuple(patterns),
        methods=tuple(m.upper() for m in methods),
        headers=parsed.get(r.CORS_ALLOW_HEADERS) or DEFAULT_HEADERS,
        expose_headers=parsed.get(r.CORS_EXPOSE_HEADERS) or (),
        credentials=credentials is not False,
        max_age_s=DEFAULT_MAX_AGE if max_age is None else max_age)


def rate_limit(parsed: ann.Parsed, diags: list[Diagnostic]) -> ir.RateLimit | None:
    """The per-client request limit ``limit-rps`` / ``limit-rpm`` ask for, or None.

    The refusal status is filled in by the caller from ``--limit-status-code``.
    """
    rps, rpm = parsed.get(r.LIMIT_RPS), parsed.get(r.LIMIT_RPM)
    if rps is None and rpm is None:
        diags.extend(parsed.problem(a, "no effect without limit-rps or limit-rpm",
                                    Reason.UNSUPPORTED)
                     for a in (r.LIMIT_ALLOWLIST, r.LIMIT_WHITELIST) if parsed.has(a))
        return None
    multiplier = parsed.get(r.LIMIT_BURST_MULTIPLIER) or DEFAULT_BURST_MULTIPLIER
    rate, interval = (rps, 1000) if rps is not None else (rpm or 0, 60_000)
    return ir.RateLimit(tokens_per_fill=rate, fill_interval_ms=interval,
                        burst=rate * multiplier, exempt=exempt_ranges(parsed, diags))


def exempt_ranges(parsed: ann.Parsed, diags: list[Diagnostic]) -> tuple[str, ...]:
    """``limit-allowlist`` (or ``limit-whitelist``): the CIDRs never limited, normalized.

    An entry that is not a CIDR, or an IPv6 range wider than one address (which
    the Envoy match cannot express), is reported and left out: those clients
    stay limited, the safe side."""
    which = r.LIMIT_ALLOWLIST if parsed.has(r.LIMIT_ALLOWLIST) else r.LIMIT_WHITELIST
    out: list[str] = []
    for raw in parsed.get(which) or ():
        try:
            net = ipaddress.ip_network(raw, strict=False)
        except ValueError:
            diags.append(parsed.problem(which, f"{show(raw)} is not an address or CIDR; "
                                        "left out (those clients stay limited)"))
            continue
        if net.version == 6 and net.prefixlen != 128:
            diags.append(parsed.problem(which, f"{show(raw)}: IPv6 ranges other than one "
                                        "address are not supported; left out (those "
                                        "clients stay limited)", Reason.UNSUPPORTED))
            continue
        if str(net) not in out:
            out.append(str(net))
    return tuple(sorted(out))
