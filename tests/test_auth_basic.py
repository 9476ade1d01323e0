"""Basic authentication annotations: Secret parsing, what is reported, what fails closed."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kxds import ir
from kxds.diagnostics import ObjectRef, Reason
from kxds.envoy.build import build_resources
from kxds.envoy.dump import resources_to_yaml
from kxds.kube.loader import load_text
from kxds.kube.models import ClusterState
from kxds.translators import annotations as ann
from kxds.translators.auth_basic import AuthResult, basic_auth
from kxds.translators.config import TranslateConfig
from kxds.translators.edge import translate

N = "nginx.ingress.kubernetes.io/"


def sha(password: str) -> str:
    return "{SHA}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


ALICE = f"alice:{sha('a')}"
SERVICE = """apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{name: http, port: 80}]}
"""


def secret(name: str, data: dict[str, str], namespace: str = "default") -> str:
    return "---\n" + json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                 "metadata": {"name": name, "namespace": namespace},
                                 "stringData": data}) + "\n"


def ingress(annotations: dict[str, str], name: str = "site", host: str = "site.test") -> str:
    return "---\n" + json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"ingressClassName": "kxds", "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}) + "\n"


BASIC = {N + "auth-type": "basic", N + "auth-secret": "users"}


def auth_of(*docs: str, annotations: dict[str, str] | None = None) -> AuthResult:
    state = load_text(SERVICE + "".join(docs) + ingress(annotations or BASIC))
    ing = state.ingresses[("default", "site")]
    return basic_auth(ing, ann.parse(ing), state.secrets)


def messages(result: AuthResult) -> str:
    found = [*result.diagnostics, *([result.refused] if result.refused else [])]
    return "\n".join(d.message for d in found)


def test_htpasswd_lines_keep_only_sha_users_and_report_the_others() -> None:
    result = auth_of(secret("users", {"auth": "\n".join([
        "# comment", "", ALICE, "bob:$apr1$salt$0123456789abcdefghijkl",
        "carol:$2y$05$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz0123",
        "dave:plaintext", "erin:{SHA}not-base64!", "no colon here", f"alice:{sha('b')}",
        "  " + f"frank:{sha('f')}" + "  \r"])}))
    assert result.refused is None and result.auth is not None and result.auth.basic is not None
    assert result.auth.basic.users == (ALICE, f"frank:{sha('f')}")
    assert result.auth.basic.ref == ObjectRef("Secret", "default", "users")
    text = messages(result)
    for user in ("bob", "carol", "dave", "erin"):
        assert f"user '{user}'" in text
    assert "apr1" in text and "bcrypt" in text and "htpasswd -s" in text
    assert "entry 6" in text and "more than once" in text
    assert all(d.field == f"metadata.annotations[{N}auth-secret]"
               for d in result.diagnostics)
    # Never a hash, nor part of one, in a message.
    for secret_part in ("$apr1$salt", "0123456789abcdef", "plaintext", sha("a")[5:]):
        assert secret_part not in text


def test_auth_map_reads_a_user_per_key_across_namespaces() -> None:
    result = auth_of(secret("users", {"alice": sha("a"), "bob": "$apr1$x$y"}, "auth"),
                     annotations={**BASIC, N + "auth-secret": "auth/users",
                                  N + "auth-secret-type": "auth-map"})
    assert result.auth is not None and result.auth.basic is not None
    assert result.auth.basic.users == (ALICE,)
    assert result.auth.basic.ref == ObjectRef("Secret", "auth", "users")
    assert "user 'bob'" in messages(result)


@pytest.mark.parametrize(("docs", "annotations", "reason", "words"), [
    ((), BASIC, Reason.SECRET_NOT_FOUND, "Secret default/users not found"),
    ((secret("users", {"htpasswd": ALICE}),), BASIC, Reason.INVALID_SECRET, "no key 'auth'"),
    ((secret("users", {"auth": "bob:$apr1$x$y\n"}),), BASIC, Reason.INVALID_SECRET,
     "admits no user"),
    ((secret("users", {"auth": ALICE}),), {**BASIC, N + "auth-secret": "a/b/c"},
     Reason.INVALID_VALUE, "not a Secret name"),
    ((secret("users", {"auth": ALICE}),), {**BASIC, N + "auth-secret": "Bad_Name"},
     Reason.INVALID_VALUE, "not a Secret name"),
    ((secret("users", {"auth": ALICE}),), {**BASIC, N + "auth-type": "digest"},
     Reason.INVALID_VALUE, "only 'basic'"),
    ((secret("users", {"auth": ALICE}),), {N + "auth-secret": "users"},
     Reason.INVALID_VALUE, "without a usable auth-type"),
    ((secret("users", {"auth": ALICE}),), {N + "auth-type": "basic"},
     Reason.INVALID_VALUE, "needs auth-secret"),
    ((secret("users", {"auth": ALICE}),), {**BASIC, N + "auth-secret-type": "auth-json"},
     Reason.INVALID_VALUE, "not auth-file or auth-map"),
], ids=["missing", "no-key", "no-sha-user", "bad-ref", "bad-name", "digest", "no-type",
        "no-secret", "bad-secret-type"])
def test_unusable_authentication_refuses(docs: tuple[str, ...], annotations: dict[str, str],
                                         reason: Reason, words: str) -> None:
    result = auth_of(*docs, annotations=annotations)
    assert result.auth is None and result.refused is not None
    assert result.refused.reason is reason
    assert words in result.refused.message and "503" in result.refused.message


def _routes(state: ClusterState, host: str) -> list[ir.Route]:
    t = translate(state, TranslateConfig())
    return [r for table in t.ir.route_tables for vh in table.virtual_hosts
            if host in vh.domains for r in vh.routes]


def test_refused_ingress_answers_503_and_others_serve() -> None:
    state = load_text(SERVICE + ingress({**BASIC, N + "auth-secret": "nope"})
                      + ingress({}, name="open", host="open.test"))
    assert [r.action for r in _routes(state, "site.test")] == [
        ir.DirectResponse(status=503, body="backend not found")]
    assert all(isinstance(r.action, ir.Forward) for r in _routes(state, "open.test"))


def test_satisfy_any_moves_the_allow_list_into_authentication() -> None:
    state = load_text(SERVICE + secret("users", {"auth": ALICE}) + ingress({
        **BASIC, N + "satisfy": "any", N + "whitelist-source-range": "10.0.0.0/8, 10.1.0.0/16",
        "kxds.io/allowlist-source-range": "10.1.2.0/24, 192.168.0.0/16",
        N + "denylist-source-range": "10.1.2.3"}))
    [route] = _routes(state, "site.test")
    assert route.policy is not None and route.policy.auth is not None
    auth = route.policy.auth
    assert auth.satisfy_any is not None
    # Both allow lists must admit the client: their intersection.
    assert [r.cidr for r in auth.satisfy_any.ranges] == ["10.1.2.0/24"]
    # The deny list stays enforced; the allow lists left the route's RBAC.
    assert route.access is not None
    assert [s.name for s in route.access.all_of] == ["ingress/default/site/nginx-denylist"]


def test_satisfy_all_keeps_both() -> None:
    state = load_text(SERVICE + secret("users", {"auth": ALICE}) + ingress({
        **BASIC, N + "satisfy": "all", N + "whitelist-source-range": "10.0.0.0/8"}))
    [route] = _routes(state, "site.test")
    assert route.policy is not None and route.policy.auth is not None
    assert route.policy.auth.satisfy_any is None
    assert route.access is not None and len(route.access.all_of) == 1


def test_satisfy_without_authentication_is_reported_and_changes_nothing() -> None:
    state = load_text(SERVICE + ingress({N + "satisfy": "any",
                                         N + "whitelist-source-range": "10.0.0.0/8"}))
    t = translate(state, TranslateConfig())
    [route] = _routes(state, "site.test")
    assert route.access is not None and len(route.access.all_of) == 1
    assert any(d.field == f"metadata.annotations[{N}satisfy]" for d in t.diagnostics)


def test_route_dump_redacts_the_hashes() -> None:
    state = load_text(SERVICE + secret("users", {"auth": ALICE}) + ingress(BASIC))
    text = resources_to_yaml(build_resources(translate(state, TranslateConfig()).ir))
    assert "alice:[redacted]" in text and sha("a") not in text
    unredacted = resources_to_yaml(build_resources(translate(state, TranslateConfig()).ir),
                                   redact=False)
    assert sha("a") in unredacted


def test_auth_filters_follow_access_rules_and_cors_and_are_off_by_default() -> None:
    from kxds.envoy.filter_names import BASIC_AUTH, CORS, HTTP_RBAC, ROUTER, SATISFY_ANY
    from kxds.envoy.listeners import build_http_filters

    filters = build_http_filters()
    order = [f.name for f in filters]
    assert order.index(HTTP_RBAC) < order.index(CORS) < order.index(SATISFY_ANY)
    assert order.index(SATISFY_ANY) < order.index(BASIC_AUTH) < order.index(ROUTER)
    by_name = {f.name: f for f in filters}
    assert by_name[BASIC_AUTH].disabled and by_name[SATISFY_ANY].disabled


def test_satisfy_any_marker_per_route_and_none_for_an_empty_set() -> None:
    from kxds.envoy import satisfy_any

    ref = ObjectRef("Ingress", "default", "site")
    basic = ir.BasicAuth(ref=ref, users=(ALICE,))
    assert satisfy_any.per_route(ir.RouteAuth(basic=basic)) == {}
    empty = ir.ClientSet(name="x", refs=(ref,))
    assert satisfy_any.per_route(ir.RouteAuth(basic=basic, satisfy_any=empty)) == {}
    some = ir.ClientSet(name="x", refs=(ref,), ranges=(ir.IPRange(cidr="10.0.0.0/8"),))
    assert list(satisfy_any.per_route(ir.RouteAuth(basic=basic, satisfy_any=some))) == [
        "kxds.filters.http.satisfy_any"]


_SHA_LINE = re.compile(r"[^:\s]+:\{SHA\}[A-Za-z0-9+/]{27}=")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.text(max_size=40),
    st.builds(lambda u, p: f"{u}:{sha(p)}", st.text(min_size=1, max_size=12), st.text()),
    st.builds(lambda u, h: f"{u}:{h}", st.text(max_size=12), st.text(max_size=40))),
    max_size=12))
def test_any_htpasswd_text_gives_only_lines_envoy_accepts(lines: list[str]) -> None:
    """Whatever a Secret holds, only ``user:{SHA}<28 chars>`` lines reach Envoy (a line
    it rejects would NACK the whole route table), each user once."""
    state = load_text(SERVICE + secret("users", {"auth": ""}) + ingress(BASIC))
    ing = state.ingresses[("default", "site")]
    template = state.secrets[("default", "users")]
    # Built directly: the YAML loader has its own rules for what text it reads.
    raw = "\n".join(lines).encode("utf-8", "surrogatepass")
    held = {("default", "users"): dataclasses.replace(template, data={"auth": raw})}
    result = basic_auth(ing, ann.parse(ing), held)
    users = result.auth.basic.users if result.auth and result.auth.basic else ()
    assert all(_SHA_LINE.fullmatch(u) and u.isprintable() for u in users)
    names = [u.partition(":")[0] for u in users]
    assert len(names) == len(set(names))
    assert (result.refused is None) == bool(users)


def test_unusual_user_names_pass_envoy_validation() -> None:
    from kxds.envoy.validate import find_envoy, validate_with_envoy

    if find_envoy() is None:
        pytest.skip("no envoy binary")
    text = "\n".join(f"{u}:{sha(u)}" for u in ("jürgen", "a.b-c_d@example.com", "ÆØÅ", "x!#$%"))
    state = load_text(SERVICE + secret("users", {"auth": text}) + ingress({
        **BASIC, N + "satisfy": "any", N + "whitelist-source-range": "10.0.0.0/8, fd00::/8"}))
    t = translate(state, TranslateConfig())
    [route] = _routes(state, "site.test")
    assert route.policy is not None and route.policy.auth is not None
    assert route.policy.auth.basic is not None and len(route.policy.auth.basic.users) == 4
    ok, output = validate_with_envoy(build_resources(t.ir))
    assert ok, output[-2000:]
