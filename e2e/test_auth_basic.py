"""Basic authentication through the real Envoy: htpasswd Secrets, fail closed, satisfy.

One gateway, one host per case; clients bind distinct loopback addresses
(127.0.0.2 in the allow lists, 127.0.0.3 outside them) to reach it on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator

import pytest

from e2e.harness import EchoBackend, Gateway, wait_for

pytestmark = pytest.mark.e2e

N = "nginx.ingress.kubernetes.io/"
INSIDE, OUTSIDE = "127.0.0.2", "127.0.0.3"


def _sha(password: str) -> str:
    return "{SHA}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


ALICE = _basic("alice", "alice-pw")
BOB = _basic("bob", "bob-pw")  # an apr1 entry: Envoy cannot check it
CAROL = _basic("carol", "carol-pw")  # added to the Secret during a test

HTPASSWD = (f"alice:{_sha('alice-pw')}\n"
            "bob:$apr1$3Oq8uDmG$Jx9zr2gP2cL0wqOwMTnqG/\n")


def _secret(auth: str) -> str:
    return "---\n" + json.dumps({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "htpasswd", "namespace": "default"},
        "stringData": {"auth": auth}}) + "\n"


def _ingress(name: str, host: str, annotations: dict[str, str]) -> str:
    return "---\n" + json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"ingressClassName": "kxds", "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "main", "port": {"number": 80}}}}]}}]},
    }) + "\n"


def _service(echo: EchoBackend) -> str:
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: main, namespace: default}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: main-1, namespace: default, labels: {{kubernetes.io/service-name: main}}}}
addressType: IPv4
ports: [{{name: http, port: {echo.port}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
"""


BASIC = {N + "auth-type": "basic", N + "auth-secret": "htpasswd"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("auth-basic")
    echo = EchoBackend("main", tmp)
    manifests = tmp / "manifests"
    manifests.mkdir()
    (manifests / "all.yaml").write_text("".join([
        _service(echo),
        _ingress("open", "open.test", {}),
        _ingress("basic", "basic.test", {**BASIC, N + "auth-realm": "Staff"}),
        _ingress("missing", "missing.test", {**BASIC, N + "auth-secret": "no-such-secret"}),
        _ingress("any", "any.test", {**BASIC, N + "satisfy": "any",
                                     N + "whitelist-source-range": f"{INSIDE}/32"}),
        _ingress("all", "all.test", {**BASIC, N + "satisfy": "all",
                                     N + "whitelist-source-range": f"{INSIDE}/32"}),
        _ingress("cors", "cors.test", {**BASIC, N + "enable-cors": "true",
                                       N + "cors-allow-origin": "https://app.example"}),
    ]))
    (manifests / "secret.yaml").write_text(_secret(HTPASSWD))
    g = Gateway(tmp, manifests)
    try:
        g.wait_backend("/", "basic.test", (200, "main"), headers=ALICE)
        yield g
    finally:
        g.stop()
        echo.stop()


def _status(gw: Gateway, host: str, headers: dict[str, str] | None = None,
            source_ip: str | None = None, method: str = "GET") -> int:
    return gw.get("/", host=host, headers=headers, source_ip=source_ip, method=method)[0]


def test_credentials_are_required_and_checked(gw: Gateway) -> None:
    status, headers, _ = gw.get("/", host="basic.test")
    assert status == 401
    # Envoy's realm is the request's URL; auth-realm cannot change it (reported).
    assert headers["www-authenticate"] == 'Basic realm="http://basic.test/"'
    assert _status(gw, "basic.test", _basic("alice", "wrong")) == 401
    assert _status(gw, "basic.test", _basic("mallory", "alice-pw")) == 401
    assert gw.backend("/", host="basic.test", headers=ALICE) == (200, "main")
    # bob's entry is apr1, which Envoy cannot check: left out, so bob cannot sign in.
    assert _status(gw, "basic.test", BOB) == 401
    assert _status(gw, "open.test") == 200


def test_missing_secret_fails_closed_alone(gw: Gateway) -> None:
    assert _status(gw, "missing.test") == 503
    assert _status(gw, "missing.test", ALICE) == 503
    assert gw.backend("/", host="basic.test", headers=ALICE) == (200, "main")
    assert _status(gw, "open.test") == 200


def test_satisfy_any_admits_the_allow_list_without_credentials(gw: Gateway) -> None:
    assert gw.backend("/", host="any.test", source_ip=INSIDE) == (200, "main")
    assert _status(gw, "any.test", source_ip=OUTSIDE) == 401
    assert _status(gw, "any.test", _basic("alice", "wrong"), source_ip=OUTSIDE) == 401
    assert gw.backend("/", host="any.test", headers=ALICE, source_ip=OUTSIDE) == (200, "main")


def test_satisfy_all_requires_both(gw: Gateway) -> None:
    assert _status(gw, "all.test", ALICE, source_ip=OUTSIDE) == 403
    assert _status(gw, "all.test", source_ip=INSIDE) == 401
    assert gw.backend("/", host="all.test", headers=ALICE, source_ip=INSIDE) == (200, "main")


def test_cors_preflight_is_answered_without_credentials(gw: Gateway) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}
    status, headers, _ = gw.get("/", host="cors.test", headers=preflight, method="OPTIONS")
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert _status(gw, "cors.test", {"Origin": "https://app.example"}) == 401


def test_secret_change_takes_effect(gw: Gateway) -> None:
    assert _status(gw, "basic.test", CAROL) == 401
    gw.write("secret.yaml", _secret(HTPASSWD + f"carol:{_sha('carol-pw')}\n"))
    wait_for(lambda: _status(gw, "basic.test", CAROL) == 200, what="carol signs in")
    assert gw.backend("/", host="basic.test", headers=ALICE) == (200, "main")
    gw.write("secret.yaml", _secret(HTPASSWD))
    wait_for(lambda: _status(gw, "basic.test", CAROL) == 401, what="carol refused again")
