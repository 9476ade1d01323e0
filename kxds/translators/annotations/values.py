"""Parsers of annotation values: text in, a typed value or a :class:`BadValue` out.

Each parser is a plain function ``str -> T`` that raises :class:`BadValue`
with a sentence naming what was expected; the registry turns that into a
diagnostic naming the Ingress and the annotation. Parsers follow how
ingress-nginx reads the same annotation (Go's ``strconv.ParseBool`` for
booleans, nginx sizes such as ``8m``, unitless seconds for timeouts).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

import re2

T = TypeVar("T")

Parser = Callable[[str], T]
"""Text of an annotation -> its typed value; raises :class:`BadValue`."""


class BadValue(ValueError):
    """An annotation value kxds cannot use; the message says what was expected."""


_TRUE = {"true", "1", "t", "yes", "on"}
_FALSE = {"false", "0", "f", "no", "off"}


def boolean(text: str) -> bool:
    """``true``/``false`` as Go's ParseBool reads them (also ``on``/``off``)."""
    raw = text.strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise BadValue("is not a boolean (true or false)")


def integer(low: int, high: int | None = None) -> Parser[int]:
    """A whole number in ``[low, high]``."""
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise BadValue("is not a whole number") from None
        if value < low or (high is not None and value > high):
            bound = f"{low}-{high}" if high is not None else f"{low} or more"
            raise BadValue(f"is outside {bound}")
        return value
    return parse


def seconds(low: int = 0, high: int = 31_536_000) -> Parser[int]:
    """Unitless seconds (as ingress-nginx's timeouts); returned in milliseconds.

    A trailing ``s`` is accepted too, since ``"60s"`` is a common slip.
    """
    whole = integer(low, high)

    def parse(text: str) -> int:
        raw = text.strip()
        return whole(raw[:-1] if raw.endswith("s") else raw) * 1000
    return parse


_SIZE = re.compile(r"^([0-9]+)([kKmMgG]?)$")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def size(text: str) -> int:
    """An nginx size (``1000``, ``8k``, ``8m``, ``1g``) in bytes; ``0`` is no limit."""
    m = _SIZE.match(text.strip())
    if m is None:
        raise BadValue("is not a size (a number with an optional k, m or g)")
    value = int(m.group(1)) * _UNITS[m.group(2).lower()]
    if value >= 2**32:
        raise BadValue("is 4g or more, beyond what Envoy can buffer")
    return value


def choice(*allowed: str, fold: bool = True) -> Parser[str]:
    """One of ``allowed`` (case-insensitive with ``fold``); returned as listed."""
    table = {(a.lower() if fold else a): a for a in allowed}

    def parse(text: str) -> str:
        raw = text.strip()
        found = table.get(raw.lower() if fold else raw)
        if found is None:
            raise BadValue(f"is not one of {', '.join(allowed)}")
        return found
    return parse


def text(text: str) -> str:
    """Any non-empty text, stripped."""
    raw = text.strip()
    if not raw:
        raise BadValue("is empty")
    return raw


def items(text: str) -> tuple[str, ...]:
    """A comma-separated list; blanks dropped; at least one item."""
    out = tuple(p for p in (x.strip() for x in text.split(",")) if p)
    if not out:
        raise BadValue("is an empty list")
    return out


def status_codes(text: str) -> tuple[int, ...]:
    """A comma-separated list of HTTP error statuses (400-599), sorted, no repeats."""
    codes: set[int] = set()
    for item in items(text):
        if not item.isdigit() or not 400 <= int(item) <= 599:
            raise BadValue(f"has {item!r}, not an HTTP error status (400-599)")
        codes.add(int(item))
    return tuple(sorted(codes))


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
"""An HTTP token (RFC 9110 section 5.6.2): what a header name is."""


def header_name(text: str) -> str:
    """An HTTP header name, lower-cased."""
    raw = text.strip()
    if not _TOKEN.match(raw):
        raise BadValue("is not a header name")
    return raw.lower()


def header_names(text: str) -> tuple[str, ...]:
    """A comma-separated list of header names."""
    return tuple(header_name(n) for n in items(text))


def header_lines(text: str) -> tuple[tuple[str, str], ...]:
    """``Name: value`` lines (one header per line), for kxds's header annotations."""
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadValue(f"line {line.strip()!r} is not `Name: value`")
        value = value.strip()
        if any(c in value for c in "\r\n\x00"):
            raise BadValue("a header value may not hold control characters")
        out.append((header_name(name), value))
    if not out:
        raise BadValue("names no header")
    return tuple(out)


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


ENVOY_MAX_PROGRAM_SIZE = 100
"""Envoy refuses a regex whose RE2 program is larger (its runtime
``re2.max_program_size.error_level``, default 100): the whole resource is rejected."""


def too_large(pattern: str | None) -> bool:
    """Whether Envoy would refuse ``pattern`` (which RE2 compiles) as too large."""
    return (pattern is not None
            and re2.compile(pattern, _RE2_OPTIONS).programsize > ENVOY_MAX_PROGRAM_SIZE)


def re2_problem(pattern: str) -> str | None:
    """Why Envoy's regex engine (RE2) refuses ``pattern``, or None when Envoy takes it."""
    try:
        re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as e:
        detail = e.args[0] if e.args else e
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        return f"RE2 cannot compile it: {detail}"
    if too_large(pattern):
        return (f"too long for Envoy's regex engine (RE2 program larger than "
                f"{ENVOY_MAX_PROGRAM_SIZE})")
    return None


def regex(text: str) -> str:
    """A regular expression RE2 accepts (Envoy matches with RE2, not PCRE)."""
    raw = text.strip()
    problem = re2_problem(raw) if raw else "is empty"
    if problem is not None:
        raise BadValue(problem)
    return raw


def words(*allowed: str) -> Parser[tuple[str, ...]]:
    """A space-separated list of ``allowed`` words (nginx's way of listing flags)."""
    def parse(text: str) -> tuple[str, ...]:
        out = tuple(text.split())
        if not out:
            raise BadValue("is empty")
        bad = [w for w in out if w not in allowed]
        if bad:
            raise BadValue(f"has {bad[0]!r}; expected words of: {', '.join(allowed)}")
        return out
    return parse
