"""Ingress routing through the real Envoy, configured by kxds from a watched directory."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from e2e.harness import EchoBackend, Gateway, Traffic, free_port, http_get, write_manifests

pytestmark = pytest.mark.e2e


def service(name: str, port: int = 80) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: http, port: {port}, targetPort: 8080}}]
"""


def endpoints(name: str, backend: EchoBackend) -> str:
    return f"""
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {backend.port}, protocol: TCP}}]
endpoints: [{{addresses: ["{backend.host}"]}}]
"""


def backends_yaml(backends: dict[str, EchoBackend]) -> str:
    return "---".join(service(n) + "---" + endpoints(n, b) for n, b in sorted(backends.items()))


def _backend(svc: str) -> str:
    """``web`` -> port 80 by number; ``web:http`` -> the port named ``http``."""
    name, _, port_name = svc.partition(":")
    port = f"{{name: {port_name}}}" if port_name else "{number: 80}"
    return f"{{service: {{name: {name}, port: {port}}}}}"


def ingress(name: str, host: str | None, paths: list[tuple[str, str, str]],
            class_name: str = "kxds", default: str | None = None) -> str:
    """An Ingress with one rule; paths are (path, pathType, service[:port name])."""
    lines = [f"""
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: default}}
spec:
  ingressClassName: {class_name}"""]
    if default:
        lines.append(f"  defaultBackend: {_backend(default)}")
    if paths:
        lines.append("  rules:")
        lines.append(f"  - host: \"{host}\"" if host else "  -")
        lines.append("    http:\n      paths:")
        for path, kind, svc in paths:
            lines.append(f"      - {{path: {path}, pathType: {kind}, backend: {_backend(svc)}}}")
    return "\n".join(lines) + "\n"


ROUTES = "---".join([
    ingress("a", "a.test", [("/", "Prefix", "a"), ("/exact", "Exact", "b"),
                            ("/pre", "Prefix", "b"), ("/pre/deeper", "Prefix", "c"),
                            ("/missing", "Prefix", "nope"),
                            ("/both", "Exact", "b"), ("/both", "Prefix", "c"),
                            ("/slash/", "Prefix", "b"), ("/impl", "ImplementationSpecific", "b"),
                            ("/named", "Prefix", "b:http")]),
    ingress("wild", "*.wild.test", [("/", "Prefix", "c")]),
    ingress("api", "*.api.test", [("/v1", "Prefix", "c")]),
    ingress("hostless", None, [("/hostless", "Prefix", "b")]),
    # Rules of several Ingresses on one host merge.
    ingress("a-more", "a.test", [("/more", "Prefix", "c")]),
    ingress("other-class", "other.test", [("/", "Prefix", "a")], class_name="nginx"),
])


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, EchoBackend]]:
    tmp = tmp_path_factory.mktemp("backends")
    started: dict[str, EchoBackend] = {}
    try:
        for name in ("a", "b", "c"):
            started[name] = EchoBackend(name, tmp)
        yield started
    finally:
        for b in started.values():
            b.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory,
            backends: dict[str, EchoBackend]) -> Iterator[Gateway]:
    """One gateway for the read-only routing checks (tests must not edit its files)."""
    tmp = tmp_path_factory.mktemp("routing")
    manifests = tmp / "manifests"
    write_manifests(manifests, "backends.yaml", backends_yaml(backends))
    write_manifests(manifests, "routes.yaml", ROUTES)
    gw = Gateway(tmp, manifests)
    try:
        yield gw
    finally:
        gw.stop()


CASES = [
    ("a.test", "/", (200, "a")),
    ("a.test", "/anything/else", (200, "a")),
    ("A.Test", "/", (200, "a")),                        # hosts are case-insensitive
    ("a.test:8080", "/", (200, "a")),                   # a port in Host is ignored
    ("a.test", "/exact", (200, "b")),                   # Exact
    ("a.test", "/exact/", (200, "a")),                  # Exact does not match a sub-path
    ("a.test", "/pre", (200, "b")),                     # Prefix, the element itself
    ("a.test", "/pre/", (200, "b")),
    ("a.test", "/pre/x", (200, "b")),
    ("a.test", "/prefix", (200, "a")),                  # not a whole path element
    ("a.test", "/pre/deeper/x", (200, "c")),            # longest prefix wins
    ("a.test", "/more/x", (200, "c")),                  # merged from another Ingress
    ("x.wild.test", "/", (200, "c")),                   # wildcard: one label
    ("wild.test", "/", (404, None)),                    # ... not the bare domain
    ("x.y.wild.test", "/", (404, None)),                # ... nor two labels
    ("nobody.test", "/", (404, None)),                  # no rule, no default backend
    ("other.test", "/", (404, None)),                   # another controller's Ingress
    ("a.test", "/missing", (503, None)),                # unresolvable backend: 503 ...
    ("a.test", "/missing/x", (503, None)),              # ... never falls through to /
    ("a.test", "/more", (200, "c")),
    ("a.test", "/both", (200, "b")),                    # Exact beats Prefix of the same path
    ("a.test", "/both/x", (200, "c")),
    ("a.test", "/slash", (200, "b")),                   # a trailing slash in the rule is ignored
    ("a.test", "/slash/x", (200, "b")),
    ("a.test", "/slashes", (200, "a")),
    ("a.test", "/impl/x", (200, "b")),                  # ImplementationSpecific is Prefix
    ("a.test", "/implx", (200, "a")),
    ("a.test", "/named", (200, "b")),                   # backend port by name
    ("a.test", "/hostless", (200, "a")),                # a named host never takes host-less rules
    ("X.Wild.Test:8080", "/x", (200, "c")),             # wildcard: any case, port ignored
    ("x.api.test", "/v1/users", (200, "c")),
    ("x.api.test", "/hostless", (404, None)),           # one label is the wildcard's host ...
    ("x.y.api.test", "/hostless", (200, "b")),          # ... two labels are not: host-less rules
    ("x.y.api.test", "/v1", (404, None)),
    ("nobody.test", "/hostless", (200, "b")),           # rules without a host: any other host
]
"""(Host, path, (status, backend)): the routing rules of the Kubernetes Ingress docs."""


def test_routing(gateway: Gateway) -> None:
    """Every case of CASES, the request as the backend saw it, and the diagnostic.

    One test over one gateway (a module fixture would start one per xdist
    worker); every mismatch is reported, not just the first.
    """
    wrong = [(host, path, expected, got) for host, path, expected in CASES
             if (got := gateway.backend(path, host=host)) != expected]
    assert not wrong, "\n".join(f"{h}{p}: expected {e}, got {g}" for h, p, e, g in wrong)

    status, _, body = gateway.get("/pre/x?q=1", host="a.test", headers={"X-Test": "yes"})
    assert status == 200
    echoed = json.loads(body)
    assert echoed["path"] == "/pre/x?q=1"
    assert echoed["host"] == "a.test"
    assert echoed["headers"]["x-test"] == "yes"

    # The unresolvable backend is reported, naming the Ingress and the Service.
    log = gateway.kxds.log_tail(400)
    assert any("event=diagnostic Ingress default/a" in line and "nope" in line
               for line in log.splitlines()), log


# --- live changes --------------------------------------------------------------

LIVE_DEADLINE = 10.0
"""Seconds a manifest change may take to reach Envoy: typically a fraction of one,
but the suite runs on a loaded 2-core machine."""


def test_edit_while_traffic_flows(tmp_path: Path, manifests_dir: Path,
                                  backends: dict[str, EchoBackend],
                                  kxds_envoy: Callable[..., Gateway]) -> None:
    write_manifests(manifests_dir, "backends.yaml", backends_yaml(backends))
    write_manifests(manifests_dir, "a.yaml", ingress("a", "a.test", [("/", "Prefix", "a")]))
    gw = kxds_envoy(manifests_dir)
    assert gw.backend("/", host="a.test") == (200, "a")
    with Traffic(lambda: gw.backend("/", host="a.test")) as traffic:
        traffic.wait_more()
        # A new file: its host answers within the deadline.
        gw.write("b.yaml", ingress("b", "b.test", [("/", "Prefix", "b")]))
        gw.wait_backend("/", "b.test", (200, "b"), timeout=LIVE_DEADLINE)
        # An edited file: the path moves to another backend.
        gw.write("b.yaml", ingress("b", "b.test", [("/", "Prefix", "c")]))
        gw.wait_backend("/", "b.test", (200, "c"), timeout=LIVE_DEADLINE)
        # A removed file: its host is gone.
        (manifests_dir / "b.yaml").unlink()
        gw.wait_backend("/", "b.test", (404, None), timeout=LIVE_DEADLINE)
        traffic.wait_more()
    # Traffic to the untouched host never failed during the changes.
    assert set(traffic.results) == {(200, "a")}, sorted(set(traffic.results))


def test_default_backend_added_live(manifests_dir: Path, backends: dict[str, EchoBackend],
                                    kxds_envoy: Callable[..., Gateway]) -> None:
    write_manifests(manifests_dir, "backends.yaml", backends_yaml(backends))
    write_manifests(manifests_dir, "a.yaml", ingress("a", "a.test", [("/x", "Exact", "a")]))
    gw = kxds_envoy(manifests_dir)
    assert gw.backend("/y", host="a.test") == (404, None)
    gw.write("default.yaml", ingress("fallback", None, [], default="b"))
    gw.wait_backend("/y", "a.test", (200, "b"), timeout=LIVE_DEADLINE)
    assert gw.backend("/anything", host="unknown.test") == (200, "b")
    assert gw.backend("/x", host="a.test") == (200, "a")
    # kxds stops gracefully on SIGTERM; Envoy keeps serving what it was given.
    assert gw.kxds.stop(timeout=10) == 0
    assert "event=stopping" in gw.kxds.log_tail()
    assert gw.backend("/x", host="a.test") == (200, "a")


def test_bad_manifest_keeps_envoy_serving(manifests_dir: Path,
                                          backends: dict[str, EchoBackend],
                                          kxds_envoy: Callable[..., Gateway]) -> None:
    write_manifests(manifests_dir, "backends.yaml", backends_yaml(backends))
    write_manifests(manifests_dir, "a.yaml", ingress("a", "a.test", [("/", "Prefix", "a")]))
    gw = kxds_envoy(manifests_dir)
    seq = gw.kxds.rebuild_seq()
    # Malformed YAML beside a good new route, and an object with a bad field.
    gw.write("broken.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: [oops\n")
    gw.write("badpath.yaml", ingress("bad", "bad.test", [("nopath", "Prefix", "a")]))
    gw.write("c.yaml", ingress("c", "c.test", [("/", "Prefix", "c")]))
    gw.wait_backend("/", "c.test", (200, "c"), timeout=LIVE_DEADLINE)
    gw.kxds.wait_rebuild(seq + 1)
    assert gw.backend("/", host="a.test") == (200, "a")
    assert gw.backend("/", host="bad.test") == (404, None)
    log = gw.kxds.log_tail(400)
    assert "broken.yaml: line " in log and "InvalidYAML" in log
    assert "Ingress default/bad" in log
    # A good file broken by an edit keeps its last good objects.
    seq = gw.kxds.rebuild_seq()
    gw.write("a.yaml", "kind: Ingress\n  : : [\n")
    gw.kxds.wait_rebuild(seq + 1)
    assert gw.backend("/", host="a.test") == (200, "a")
    assert gw.envoy is not None and gw.envoy.alive()
    assert http_get(gw.url("/"), host="c.test")[0] == 200


def test_an_annotation_kxds_cannot_honour_fails_closed(
        manifests_dir: Path, backends: dict[str, EchoBackend],
        kxds_envoy: Callable[..., Gateway]) -> None:
    """Authentication kxds does not enforce, or an nginx snippet, on an Ingress: its routes
    answer 503 through Envoy, never serve open; another Ingress's host still serves, and
    a more general route on the same host does not take the refused path's traffic."""
    write_manifests(manifests_dir, "backends.yaml", backends_yaml(backends))
    write_manifests(manifests_dir, "open.yaml", ingress("open", "a.test", [("/", "Prefix", "a")]))
    protected = ingress("admin", "a.test", [("/admin", "Prefix", "b")]).replace(
        "metadata: {name: admin, namespace: default}",
        "metadata: {name: admin, namespace: default, annotations: "
        "{nginx.ingress.kubernetes.io/auth-url: 'http://auth.default.svc/verify'}}")
    write_manifests(manifests_dir, "admin.yaml", protected)
    gw = kxds_envoy(manifests_dir)
    gw.wait_backend("/", "a.test", (200, "a"))
    assert gw.backend("/admin", host="a.test") == (503, None)
    assert gw.backend("/admin/users", host="a.test") == (503, None)  # not a's "/"


def test_proxy_next_upstream_tries_another_endpoint(
        manifests_dir: Path, backends: dict[str, EchoBackend],
        kxds_envoy: Callable[..., Gateway]) -> None:
    """One of two endpoints refuses connections: without retries about half the requests
    fail; with ``proxy-next-upstream: error`` each goes to the other endpoint and succeeds."""
    live = backends["a"]
    dead = free_port()  # nothing listens there
    slice_ = f"""
apiVersion: v1
kind: Service
metadata: {{name: flaky, namespace: default}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: flaky-1, namespace: default, labels: {{kubernetes.io/service-name: flaky}}}}
addressType: IPv4
ports: [{{name: http, port: {live.port}, protocol: TCP}}]
endpoints: [{{addresses: ["{live.host}"]}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: flaky-2, namespace: default, labels: {{kubernetes.io/service-name: flaky}}}}
addressType: IPv4
ports: [{{name: http, port: {dead}, protocol: TCP}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
"""
    plain = ingress("plain", "plain.test", [("/", "Prefix", "flaky")])
    retried = ingress("retried", "retried.test", [("/", "Prefix", "flaky")]).replace(
        "metadata: {name: retried, namespace: default}",
        "metadata: {name: retried, namespace: default, annotations: "
        "{nginx.ingress.kubernetes.io/proxy-next-upstream: error}}")
    write_manifests(manifests_dir, "flaky.yaml", slice_ + "---" + plain + "---" + retried)
    gw = kxds_envoy(manifests_dir)
    gw.wait_backend("/", "retried.test", (200, "a"))
    plain_statuses = [gw.backend("/", host="plain.test")[0] for _ in range(40)]
    assert 503 in plain_statuses  # the dead endpoint is hit without retries
    assert all(gw.backend("/", host="retried.test") == (200, "a") for _ in range(40))
