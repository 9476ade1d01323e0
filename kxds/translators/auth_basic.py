"""Basic authentication from Ingress annotations -> :class:`~kxds.ir.RouteAuth`.

Semantics follow ingress-nginx's ``auth-*`` annotations
(https://kubernetes.github.io/ingress-nginx/examples/auth/basic/):

* ``auth-type: basic`` turns it on; ``digest`` (or anything else) cannot be
  honoured, so the Ingress's routes answer 503 (fail closed);
* ``auth-secret``: ``name`` (the Ingress's namespace) or ``namespace/name``;
* ``auth-secret-type``: ``auth-file`` (the default: htpasswd lines under the key
  ``auth``) or ``auth-map`` (each key a user, its value the password hash);
* ``auth-realm``: Envoy's basic auth filter always sends the request's URL as
  its realm, so the annotation is accepted and reported;
* ``satisfy: any``: a client in the Ingress's allow list (``whitelist-source-range``
  / ``allowlist-source-range``) is admitted without authenticating; ``all`` (the
  default) requires both.

Envoy checks only ``{SHA}`` entries (``htpasswd -s``). A user whose hash uses
another scheme (apr1, bcrypt, crypt, plain text) is left out and reported by
name; a Secret that is missing, lacks its key, is not text, or admits no
usable user makes every route of the Ingress answer 503. No message ever
carries a hash.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from kxds import ir, names
from kxds.diagnostics import Diagnostic, ObjectRef, Reason, show
from kxds.kube.fields import DNS1123_LABEL, DNS1123_SUBDOMAIN
from kxds.kube.models import Ingress, Key, Secret
from kxds.translators import annotations as ann
from kxds.translators.access import ALLOW_ANNOTATIONS, annotation_sets
from kxds.translators.annotations import registry as r

AUTH_FILE_KEY = "auth"
"""The key of an ``auth-file`` Secret holding the htpasswd lines."""
SHA_PREFIX = "{SHA}"
SHA1_BYTES = 20
MAX_USERS = 10_000
"""Users kept from one Secret; more are reported (a route config carries them all)."""

_FIX = "regenerate it with 'htpasswd -s' (SHA-1), the only scheme Envoy checks"
_REFUSE = "every route of this Ingress answers 503 (fail closed)"


@dataclass(frozen=True, slots=True)
class AuthResult:
    """What an Ingress's authentication annotations ask for."""

    auth: ir.RouteAuth | None
    """None: no authentication (or the Ingress refuses, see ``refused``)."""
    refused: Diagnostic | None
    """Set when the annotations ask for authentication kxds cannot honour."""
    diagnostics: tuple[Diagnostic, ...]


NONE = AuthResult(None, None, ())

_ANNOTATIONS = (r.AUTH_TYPE, r.AUTH_SECRET, r.AUTH_SECRET_TYPE, r.AUTH_REALM)


def basic_auth(ing: Ingress, parsed: ann.Parsed,
               secrets: Mapping[Key, Secret] | None) -> AuthResult:
    """The basic authentication ``ing``'s annotations ask for.

    ``secrets`` None: the caller has no Secrets (TLS planning); a Secret is then
    never found.
    """
    present = [a for a in _ANNOTATIONS if a.name in parsed.keys]
    if not present:
        if r.AUTH_URL.name in parsed.keys:
            return NONE  # external authentication reads satisfy (auth_external)
        if parsed.get(r.SATISFY) is not None or r.SATISFY.name in parsed.keys:
            return AuthResult(None, None, (parsed.problem(
                r.SATISFY, "has no effect without authentication (auth-type or auth-url)",
                Reason.UNSUPPORTED),))
        return NONE
    diags: list[Diagnostic] = []
    kind = parsed.get(r.AUTH_TYPE)
    if kind is None:
        return _refuse(parsed, r.AUTH_TYPE if r.AUTH_TYPE.name in parsed.keys else present[0],
                       "authentication is asked for without a usable auth-type (basic)", diags)
    if kind.lower() != "basic":
        return _refuse(parsed, r.AUTH_TYPE, f"{show(kind)}: only 'basic' is supported", diags)
    secret_ref = _secret_key(ing, parsed, diags)
    if secret_ref is None:
        return AuthResult(None, diags[-1], tuple(diags[:-1]))
    users = _users(parsed, secret_ref, secrets, diags)
    if users is None:
        return AuthResult(None, diags[-1], tuple(diags[:-1]))
    realm = parsed.get(r.AUTH_REALM) or ""
    if r.AUTH_REALM.name in parsed.keys:
        diags.append(parsed.problem(
            r.AUTH_REALM, "not sent: Envoy's basic auth filter always uses the request's URL "
            "as the realm", Reason.UNSUPPORTED))
    basic = ir.BasicAuth(ref=ObjectRef("Secret", *secret_ref), users=users, realm=realm)
    satisfy_any = satisfy_any_set(ing, parsed, diags)
    return AuthResult(ir.RouteAuth(basic=basic, satisfy_any=satisfy_any), None, tuple(diags))


def _refuse(parsed: ann.Parsed, which: ann.Annotation[str], why: str,
            diags: list[Diagnostic]) -> AuthResult:
    problem = parsed.problem(which, f"{why}; {_REFUSE}")
    return AuthResult(None, problem, tuple(diags))


def _secret_key(ing: Ingress, parsed: ann.Parsed, diags: list[Diagnostic]) -> Key | None:
    """(namespace, name) of ``auth-secret``; None (a refusal last in ``diags``) when unusable."""
    raw = parsed.get(r.AUTH_SECRET)
    if raw is None:
        diags.append(parsed.problem(r.AUTH_SECRET if r.AUTH_SECRET.name in parsed.keys
                                    else r.AUTH_TYPE,
                                    f"basic authentication needs auth-secret; {_REFUSE}"))
        return None
    ns, _, name = raw.rpartition("/")
    ns = ns or ing.meta.namespace
    if (len(name) > 253 or not DNS1123_SUBDOMAIN.fullmatch(name) or len(ns) > 63
            or not DNS1123_LABEL.fullmatch(ns)):
        diags.append(parsed.problem(
            r.AUTH_SECRET, f"{show(raw)} is not a Secret name or namespace/name; {_REFUSE}"))
        return None
    return ns, name


def _users(parsed: ann.Parsed, key: Key, secrets: Mapping[Key, Secret] | None,
           diags: list[Diagnostic]) -> tuple[str, ...] | None:
    """The Secret's usable htpasswd lines; None (a refusal last in ``diags``) when none."""
    shown = f"Secret {key[0]}/{key[1]}"
    # .get only: the incremental translation then re-runs this Ingress for this Secret alone.
    secret = secrets.get(key) if secrets is not None else None
    if secret is None:
        diags.append(parsed.problem(r.AUTH_SECRET, f"{shown} not found; {_REFUSE}",
                                    Reason.SECRET_NOT_FOUND))
        return None
    kind = parsed.get(r.AUTH_SECRET_TYPE) or "auth-file"
    if r.AUTH_SECRET_TYPE.name in parsed.keys and kind not in ("auth-file", "auth-map"):
        diags.append(parsed.problem(r.AUTH_SECRET_TYPE, f"{show(kind)} is not auth-file or "
                                    f"auth-map; {_REFUSE}"))
        return None
    entries: list[tuple[str, str]] = []
    problem = (_file_entries(secret, entries) if kind == "auth-file"
               else _map_entries(secret, entries))
    if problem is not None:
        diags.append(parsed.problem(r.AUTH_SECRET, f"{shown}: {problem}; {_REFUSE}",
                                    Reason.INVALID_SECRET))
        return None
    users = _usable(parsed, shown, entries, diags)
    if not users:
        diags.append(parsed.problem(r.AUTH_SECRET, f"{shown} admits no user Envoy can check "
                                    f"({_FIX}); {_REFUSE}", Reason.INVALID_SECRET))
        return None
    return users


def _text(value: bytes) -> str | None:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _file_entries(secret: Secret, out: list[tuple[str, str]]) -> str | None:
    """htpasswd lines under ``auth`` as (user, hash) ("" user: a line without ':');
    a problem with the whole Secret, or None."""
    raw = secret.data.get(AUTH_FILE_KEY)
    if raw is None:
        return f"has no key {AUTH_FILE_KEY!r} (auth-file)"
    content = _text(raw)
    if content is None:
        return f"key {AUTH_FILE_KEY!r} is not UTF-8 text"
    for line in content.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        out.append((user if sep else "", hashed))
    return None


def _map_entries(secret: Secret, out: list[tuple[str, str]]) -> str | None:
    """Each key a user, its value the hash (auth-map)."""
    if not secret.data:
        return "has no keys (auth-map: one key per user)"
    for user in sorted(secret.data):
        hashed = _text(secret.data[user])
        if hashed is None:
            return f"the value of user {show(user)} is not UTF-8 text"
        out.append((user, hashed.strip()))
    return None


def _scheme(hashed: str) -> str:
    """A name for a hash's scheme, for the report (never the hash itself)."""
    for prefix, name in (("$apr1$", "apr1 (MD5)"), ("$2y$", "bcrypt"), ("$2a$", "bcrypt"),
                         ("$2b$", "bcrypt"), ("$5$", "SHA-256 crypt"), ("$6$", "SHA-512 crypt"),
                         ("$1$", "MD5 crypt")):
        if hashed.startswith(prefix):
            return name
    return "crypt or plain text"


def _sha_ok(hashed: str) -> bool:
    if not hashed.startswith(SHA_PREFIX):
        return False
    try:
        digest = base64.b64decode(hashed[len(SHA_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(digest) == SHA1_BYTES


def _user_ok(user: str) -> bool:
    return bool(user) and user.isprintable() and ":" not in user and " " not in user


def _usable(parsed: ann.Parsed, shown: str, entries: list[tuple[str, str]],
            diags: list[Diagnostic]) -> tuple[str, ...]:
    """``user:{SHA}...`` lines Envoy accepts; every other entry reported by user name."""
    seen: set[str] = set()
    out: list[str] = []
    for n, (user, hashed) in enumerate(entries, 1):
        who = f"user {show(user)}" if user else f"entry {n}"
        if not _user_ok(user):
            why = "has no 'user:hash' form" if not user else "has an unusable user name"
            diags.append(parsed.problem(r.AUTH_SECRET, f"{shown}: {who} {why}; left out",
                                        Reason.INVALID_SECRET))
        elif user in seen:
            diags.append(parsed.problem(r.AUTH_SECRET, f"{shown}: {who} appears more than "
                                        "once; the first is used", Reason.INVALID_SECRET))
        elif not hashed.startswith(SHA_PREFIX):
            diags.append(parsed.problem(
                r.AUTH_SECRET, f"{shown}: the password hash of {who} is {_scheme(hashed)}, "
                f"which Envoy cannot check; left out (cannot sign in): {_FIX}", Reason.UNSUPPORTED))
        elif not _sha_ok(hashed):
            diags.append(parsed.problem(r.AUTH_SECRET, f"{shown}: {who} has a malformed "
                                        f"{{SHA}} hash; left out: {_FIX}",
                                        Reason.INVALID_SECRET))
        elif len(out) >= MAX_USERS:
            diags.append(parsed.problem(r.AUTH_SECRET, f"{shown}: more than {MAX_USERS} "
                                        f"users; {who} and the rest are left out",
                                        Reason.TOO_MANY))
            break
        else:
            seen.add(user)
            out.append(f"{user}:{hashed}")
    return tuple(out)


def satisfy_any_set(ing: Ingress, parsed: ann.Parsed,
                 diags: list[Diagnostic]) -> ir.ClientSet | None:
    """With ``satisfy: any``, the clients admitted without authenticating: those the
    allow-list annotations admit (every one of them, when several are set). Any
    authentication kind puts it in :attr:`~kxds.ir.RouteAuth.satisfy_any`, and the
    Ingress's routes then drop those allow lists (:func:`relax_access`)."""
    raw = parsed.get(r.SATISFY)
    if raw is None:
        if r.SATISFY.name in parsed.keys:
            diags.append(parsed.problem(r.SATISFY, "is empty; 'all' is used"))
        return None
    if raw.lower() not in ("any", "all"):
        diags.append(parsed.problem(r.SATISFY, f"{show(raw)} is not any or all; 'all' is used "
                                    "(both the source ranges and authentication)"))
        return None
    if raw.lower() == "all":
        return None
    allow = [s for s in annotation_sets(ing, []) if s.name in allow_set_names(ing)]
    if not allow:
        diags.append(parsed.problem(r.SATISFY, "'any' without whitelist-source-range or "
                                    "allowlist-source-range: every client authenticates",
                                    Reason.UNSUPPORTED))
        return None
    ranges = allow[0].ranges
    for other in allow[1:]:
        ranges = _intersect(ranges, other.ranges)
    base = f"ingress/{ing.meta.namespace}/{ing.meta.name}"
    return ir.ClientSet(name=names.cap(f"{base}/satisfy-any"), refs=(ing.meta.ref,),
                        ranges=ranges)


def allow_set_names(ing: Ingress) -> frozenset[str]:
    """The names :func:`~kxds.translators.access.annotation_sets` gives ``ing``'s allow lists."""
    base = f"ingress/{ing.meta.namespace}/{ing.meta.name}"
    return frozenset(names.cap(f"{base}/{short}") for _, short in ALLOW_ANNOTATIONS)


def _within(inner: str, outer: str) -> bool:
    """Whether CIDR ``inner`` lies inside CIDR ``outer``."""
    a, b = ipaddress.ip_network(inner), ipaddress.ip_network(outer)
    if a.version != b.version or a.prefixlen < b.prefixlen:
        return False
    shift = a.max_prefixlen - b.prefixlen
    return int(a.network_address) >> shift == int(b.network_address) >> shift


def _intersect(a: tuple[ir.IPRange, ...], b: tuple[ir.IPRange, ...]) -> tuple[ir.IPRange, ...]:
    """The addresses in both unions of CIDRs (allow lists carry no exceptions): two
    CIDRs either nest, giving the smaller, or are disjoint."""
    out: set[str] = set()
    for x in a:
        for y in b:
            if _within(x.cidr, y.cidr):
                out.add(x.cidr)
            elif _within(y.cidr, x.cidr):
                out.add(y.cidr)
    return tuple(ir.IPRange(cidr=c) for c in sorted(out))


def relax_access(route: ir.Route, allow_names: frozenset[str]) -> ir.Route:
    """``route`` without the allow-list sets (``allow_names``) that ``satisfy: any``
    moves into its authentication: a client in them skips authenticating instead.
    Every other set (NetworkPolicy, loadBalancerSourceRanges, the deny list) stays
    enforced."""
    access = route.access
    if access is None:
        return route
    all_of = tuple(s for s in access.all_of if s.name not in allow_names)
    shadow = tuple(s for s in access.shadow if s.name not in allow_names)
    if not all_of and not shadow:
        return dataclasses.replace(route, access=None)
    if len(all_of) == len(access.all_of) and len(shadow) == len(access.shadow):
        return route
    return dataclasses.replace(route, access=dataclasses.replace(access, all_of=all_of,
                                                                 shadow=shadow))


def passthrough_problem(ing: Ingress) -> Diagnostic | None:
    """A TLS passthrough Ingress cannot authenticate (Envoy never sees its requests):
    the refusal when it asks to."""
    keys = [k for k in sorted(ing.meta.annotations)
            if k.rsplit("/", 1)[-1] in {a.name for a in _ANNOTATIONS}
            and k.split("/", 1)[0] + "/" in (ann.NGINX, ann.KXDS)]
    if not keys:
        return None
    return Diagnostic(ing.meta.ref, ann.field_of(keys[0]), Reason.UNSUPPORTED,
                      "authentication cannot apply to TLS passthrough (the requests are "
                      "encrypted end to end): the Ingress's hosts are refused (fail closed)")
