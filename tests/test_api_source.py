"""The API source against the in-test API server, through the real ``kubernetes`` client."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakeapi import FakeApi, SourceRunner, kubeconfig

from kxds.kube.api import ApiOptions, ApiSource, Backoff, Reflector
from kxds.kube.client import KubeClient
from kxds.kube.loader import load_text
from kxds.kube.models import ClusterState

FAST = dict(watch_timeout=2.0, read_timeout=5.0, connect_timeout=1.0,
            backoff_initial=0.05, backoff_max=0.2)

B64 = base64.b64encode(b"not checked here").decode()


def svc(name: str, ns: str = "default", port: int = 80) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port}]}}


def eps(name: str, addresses: list[str], ns: str = "default") -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-abc", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses]}


def secret(name: str, type_: str = "kubernetes.io/tls", ns: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
            "type": type_, "data": {"tls.crt": B64, "tls.key": B64}}


def ingress(name: str, tls_secret: str | None = None, ns: str = "default") -> dict[str, Any]:
    spec: dict[str, Any] = {"ingressClassName": "kxds", "rules": [{"host": "a.example", "http": {
        "paths": [{"path": "/", "pathType": "Prefix",
                   "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
    if tls_secret:
        spec["tls"] = [{"hosts": ["a.example"], "secretName": tls_secret}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


OTHERS: list[dict[str, Any]] = [
    {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "kxds"},
     "spec": {"controller": "kxds.io/ingress-controller"}},
    {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
     "metadata": {"name": "only-office", "namespace": "default"},
     "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
              "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}},
    {"apiVersion": "v1", "kind": "Namespace",
     "metadata": {"name": "default", "labels": {"team": "a"}}},
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"}},
     "spec": {"nodeName": "n1", "containers": [
         {"name": "c", "image": "x", "ports": [{"name": "http", "containerPort": 8080}]}]},
     "status": {"phase": "Running", "podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}]}},
    # Bad input: becomes a problem in the state, like the manifest loader's.
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "broken", "namespace": "default"},
     "spec": {"ports": [{"port": "eighty"}]}},
]


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi(bookmark_interval=0.1).start()
    yield fake
    fake.stop()


def source(api: FakeApi, **options: Any) -> ApiSource:
    return ApiSource(KubeClient.for_url(api.url), ApiOptions(**{**FAST, **options}))


def services(state: ClusterState) -> set[str]:
    return {name for _, name in state.services}


def poll(pred: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def reflector(src: ApiSource, plural: str, variant: str = "") -> Reflector:
    poll(lambda: bool(src.reflectors), "the reflectors to start")
    [r] = [r for r in src.reflectors if r.kind.plural == plural and r.kind.variant == variant]
    return r


def all_failing(src: ApiSource) -> bool:
    """Every kind has tried the API at least once and failed."""
    return bool(src.reflectors) and all(r.failing for r in src.reflectors)


def populate(api: FakeApi) -> None:
    for obj in [svc("web"), eps("web", ["10.1.0.5"]), ingress("shop", tls_secret="shop-tls"),
                secret("shop-tls"), secret("unreferenced"), *OTHERS]:
        api.apply(obj)


def test_first_sync_equals_the_manifest_loader(api: FakeApi) -> None:
    populate(api)
    # Neither TLS nor Opaque: the server filters it out of the watches (field selectors).
    api.apply({**secret("token", "kubernetes.io/service-account-token")})
    # Opaque but referenced by nothing: read, and left out of the state.
    api.apply({**secret("opaque", "Opaque")})
    with SourceRunner(source(api, page_size=1)) as run:
        state = run.wait(lambda s: True)
    # The same objects, as the API stores them, through the manifest loader:
    stored = [o for k, o in sorted(api.objects.items()) if k[0][1] not in ("secrets",)]
    stored.append(api.objects[(("/api/v1", "secrets"), "default", "shop-tls")])
    expected = load_text(yaml.safe_dump_all(stored))
    assert state == expected
    assert all([state.services, state.endpoint_slices, state.ingresses, state.ingress_classes,
                state.network_policies, state.namespaces, state.pods, state.secrets])
    assert {k for k in state.secrets} == {("default", "shop-tls")}
    assert [str(p.ref) for p in state.problems] == ["Service default/broken"]
    # Pagination was used (limit 1), one consistent snapshot per kind.
    assert api.count("GET", "/api/v1/services", "continue=") >= 1


def test_nothing_before_every_kind_listed_then_one_state(api: FakeApi) -> None:
    populate(api)
    api.go_offline("503")
    src = source(api)
    with SourceRunner(src) as run:
        poll(lambda: api.count("GET", "/api/v1/services") >= 3 and all_failing(src),
             "retries against the failing API")
        assert run.count == 0, "published before the first complete sync"
        api.go_online()
        state = run.wait(lambda s: True)
        assert services(state) == {"web"}
        assert len(state.pods) == 1


def test_one_kind_failing_holds_back_the_first_state(api: FakeApi) -> None:
    populate(api)
    api.unavailable = {"secrets"}
    src = source(api)
    with SourceRunner(src) as run:
        others = [k.path(None) for k in src.options.kinds if k.plural != "secrets"]
        # Every other kind is listed and watched; secrets keep failing and are retried.
        poll(lambda: all(api.count("GET", p, "watch=") for p in others)
             and api.count("GET", "/api/v1/secrets") >= 3, "the other kinds to sync")
        assert run.count == 0, "published without the secrets: TLS would be missing"
        api.unavailable = set()
        state = run.wait(lambda s: True)
        assert set(state.secrets) == {("default", "shop-tls")}
        assert services(state) == {"web"}


def test_api_unreachable_at_start(api: FakeApi) -> None:
    populate(api)
    api.go_offline("refuse")
    src = source(api)
    with SourceRunner(src) as run:
        poll(lambda: all_failing(src), "every kind to fail to connect")
        assert run.count == 0
        api.go_online()
        run.wait(lambda s: services(s) == {"web"})


def test_churn_converges_to_the_servers_state(api: FakeApi) -> None:
    populate(api)
    with SourceRunner(source(api)) as run:
        run.wait(lambda s: True)
        for i in range(40):
            api.apply(eps("web", [f"10.1.1.{j}" for j in range(i % 7 + 1)]))
            api.apply(svc(f"s{i}"))
            if i % 3 == 0:
                api.delete("v1", "Service", "default", f"s{i}")
        want = {"web"} | {f"s{i}" for i in range(40) if i % 3}

        def addresses(s: ClusterState) -> int:
            slice_ = s.endpoint_slices[("default", "web-abc")]
            return sum(len(e.addresses) for e in slice_.endpoints)

        # Kinds are watched independently: converge on both.
        run.wait(lambda s: services(s) == want and addresses(s) == 39 % 7 + 1)
    assert api.count("GET", "/api/v1/services", "watch=") >= 1


def renamed(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return {**obj, "metadata": {**obj["metadata"], "name": name}}


def test_every_kind_is_watched_after_its_list(api: FakeApi) -> None:
    populate(api)
    src = source(api)
    with SourceRunner(src) as run:
        run.wait(lambda s: True)
        lists = {k.plural: api.count("GET", k.path(None), "limit=") for k in src.options.kinds}
        # One new object of each kind (the Ingress refers to the new Secret).
        for obj in [svc("web2"), eps("web2", ["10.1.0.6"]), ingress("shop2", "shop2-tls"),
                    secret("shop2-tls"), *(renamed(o, "two") for o in OTHERS[:4])]:
            api.apply(obj)
        state = run.wait(lambda s: all(
            ("default" if ns else "", name) in table for table, ns, name in [
                (s.services, 1, "web2"), (s.endpoint_slices, 1, "web2-abc"),
                (s.ingresses, 1, "shop2"), (s.secrets, 1, "shop2-tls"),
                (s.ingress_classes, 0, "two"), (s.network_policies, 1, "two"),
                (s.namespaces, 0, "two"), (s.pods, 1, "two")]), what="a new object of each kind")
        assert len(state.secrets) == 2
        # Delivered by the watches: no kind was listed again.
        assert {k.plural: api.count("GET", k.path(None), "limit=")
                for k in src.options.kinds} == lists


def test_cut_watch_keeps_state_and_resumes_without_relisting(api: FakeApi) -> None:
    populate(api)
    with SourceRunner(source(api)) as run:
        run.wait(lambda s: True)
        lists = api.count("GET", "/api/v1/services", "limit=")
        seen = int(api.apply(svc("before-cut"))["metadata"]["resourceVersion"])
        run.wait(lambda s: "before-cut" in services(s))
        api.cut_watches()
        api.apply(svc("after-cut"))
        state = run.wait(lambda s: "after-cut" in services(s))
        # Resumed from the last event seen, not from the list's older version.
        assert api.watch_versions("/api/v1/services")[-1] >= seen
        # Nothing was lost in between: no state lacked the known objects.
        assert all("web" in services(s) and s.problems for s in run.states)
        assert state.pods
        # Resumed from its resourceVersion: no new list.
        assert api.count("GET", "/api/v1/services", "limit=") == lists


def test_watch_cut_in_the_middle_of_an_event_resumes_and_gets_that_event(api: FakeApi) -> None:
    """The connection drops halfway through an event's JSON line (a proxy or an API
    server node going away): the half line is not taken for an event, nothing known is
    dropped, and the watch resumes from the last whole event, so the cut one arrives."""
    populate(api)
    with SourceRunner(source(api)) as run:
        run.wait(lambda s: True)
        lists = api.count("GET", "/api/v1/services", "limit=")
        api.cut_mid_event = "services"
        api.apply(svc("cut-in-half"))
        state = run.wait(lambda s: "cut-in-half" in services(s))
        assert api.cut_mid_event is None  # the cut did happen
        assert all("web" in services(s) for s in run.states)
        assert state.pods
        assert api.count("GET", "/api/v1/services", "limit=") == lists  # resumed, no relist
        api.apply(svc("after"))
        run.wait(lambda s: "after" in services(s))


@pytest.mark.parametrize("as_http", [False, True], ids=["error-event", "http-410"])
def test_410_gone_relists_and_sees_what_happened_meanwhile(api: FakeApi, as_http: bool) -> None:
    populate(api)
    api.gone_as_http = as_http
    with SourceRunner(source(api)) as run:
        run.wait(lambda s: True)
        lists = api.count("GET", "/api/v1/services", "limit=")
        api.go_offline("503")
        api.delete("v1", "Service", "default", "web")
        api.apply(svc("new"))
        api.compact()  # the versions the watches hold are now too old
        api.go_online()
        state = run.wait(lambda s: services(s) == {"new"})
        assert api.count("GET", "/api/v1/services", "limit=") > lists
        assert state.pods, "other kinds kept"
        # The relist replaced the old objects in one step: no state in between
        # lacked a kind (a transient empty configuration).
        assert all(services(s) and s.pods and s.ingresses and s.secrets for s in run.states)


def test_outage_midway_publishes_nothing_then_catches_up(api: FakeApi) -> None:
    populate(api)
    src = source(api)
    with SourceRunner(src) as run:
        run.wait(lambda s: True)
        before = run.count
        api.go_offline("refuse")
        api.apply(svc("during-outage"))
        poll(lambda: all_failing(src), "every watch to notice the outage")
        assert run.count == before, "published while the API was unreachable"
        api.go_online()
        run.wait(lambda s: "during-outage" in services(s))


def test_bookmarks_keep_quiet_watches_fresh(api: FakeApi) -> None:
    populate(api)
    src = source(api)
    with SourceRunner(src) as run:
        run.wait(lambda s: True)
        secrets = reflector(src, "secrets")
        listed = int(secrets.rv or 0)
        secret_lists = api.count("GET", "/api/v1/secrets", "limit=")
        for i in range(20):  # changes secrets never see: only bookmarks advance them
            api.apply(svc(f"busy{i}"))
        head = api.rv
        assert listed < head
        # The fake sends BOOKMARKs only when asked (allowWatchBookmarks=true).
        poll(lambda: int(secrets.rv or 0) >= head, "a bookmark on the quiet secrets watch")
        api.compact()  # every version before head is gone now
        api.cut_watches()
        poll(lambda: any(v >= head for v in api.watch_versions("/api/v1/secrets")),
             "the secrets watch resumed from the bookmark's version")
        # A change the resumed watch must deliver; a 410 would have relisted first.
        changed = secret("shop-tls")
        changed["data"]["tls.crt"] = base64.b64encode(b"rotated").decode()
        api.apply(changed)
        run.wait(lambda s: s.secrets[("default", "shop-tls")] !=
                 run.states[0].secrets[("default", "shop-tls")], what="the rotated secret")
        assert api.count("GET", "/api/v1/secrets", "limit=") == secret_lists


def test_secret_referenced_later_appears_without_a_secret_event(api: FakeApi) -> None:
    populate(api)
    api.apply(secret("later-tls"))
    with SourceRunner(source(api)) as run:
        state = run.wait(lambda s: True)
        assert ("default", "later-tls") not in state.secrets
        api.apply(ingress("other", tls_secret="later-tls"))
        run.wait(lambda s: ("default", "later-tls") in s.secrets)
        api.delete("networking.k8s.io/v1", "Ingress", "default", "other")
        run.wait(lambda s: ("default", "later-tls") not in s.secrets)


def test_pods_are_stripped_to_what_policies_need(api: FakeApi) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "default", "labels": {"app": "x"},
                        "annotations": {"big": "x" * 10_000},
                        "managedFields": [{"manager": "kubelet"}]},
           "spec": {"nodeName": "n2", "volumes": [{"name": "v"}], "containers": [
               {"name": "c", "image": "i", "env": [{"name": "A", "value": "1"}],
                "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]},
           "status": {"phase": "Running", "podIPs": [{"ip": "10.1.0.9"}, {"ip": "fd00::9"}],
                      "conditions": [{"type": "Ready", "status": "True"}]}}
    api.apply(pod)
    src = source(api)
    with SourceRunner(src) as run:
        state = run.wait(lambda s: ("default", "p") in s.pods)
        p = state.pods[("default", "p")]
        assert p.meta.labels == {"app": "x"}
        assert p.meta.annotations == {}
        assert p.node_name == "n2"
        assert p.pod_ips == ("10.1.0.9", "fd00::9")
        assert [(c.name, c.port, c.protocol) for c in p.container_ports] == [("dns", 53, "UDP")]
        # A status-only change (conditions) is not a change to kxds: no new state.
        pods = reflector(src, "pods")
        before, generation = run.count, src.store.generation
        pod["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
        applied = api.apply(pod)["metadata"]["resourceVersion"]
        poll(lambda: int(pods.rv or 0) >= int(applied), "the pod change to be seen")
        assert src.store.generation == generation
        api.apply(svc("marker"))
        run.wait(lambda s: "marker" in services(s))
        assert run.count == before + 1


def test_namespace_limit_watches_one_namespace(api: FakeApi) -> None:
    populate(api)
    api.apply(svc("elsewhere", ns="other"))
    src = source(api, namespace="default")
    with SourceRunner(src) as run:
        state = run.wait(lambda s: True)
        assert ("other", "elsewhere") not in state.services
        assert ("default", "web") in state.services
        assert state.namespaces, "cluster-scoped kinds are still watched"
        api.apply(svc("elsewhere2", ns="other"))
        api.apply(svc("here"))
        state = run.wait(lambda s: "here" in services(s))
        assert services(state) == {"web", "here"}
    assert api.count("GET", "/api/v1/namespaces/default/services", "watch=")
    for kind in src.options.kinds:  # no namespaced kind was read cluster-wide
        assert bool(api.count("GET", kind.path(None) + "?")) != kind.namespaced, kind.plural


def test_expired_continue_token_restarts_the_list(api: FakeApi) -> None:
    populate(api)
    for i in range(5):
        api.apply(svc(f"page{i}"))
    compacted: list[str] = []

    def compact_mid_list(method: str, path: str) -> None:
        # History is compacted between two pages of the services list: the
        # continue token is now too old (410 Expired) and the list must restart.
        if "/services?" in path and "continue=" in path and not compacted:
            compacted.append(path)
            api.apply(svc("between-pages"))
            api.compact()

    api.on_request = compact_mid_list
    with SourceRunner(source(api, page_size=2)) as run:
        state = run.wait(lambda s: "between-pages" in services(s))
    assert compacted
    assert services(state) == {"web", "between-pages"} | {f"page{i}" for i in range(5)}


def test_silent_dead_watch_is_detected_by_the_read_timeout(api: FakeApi) -> None:
    populate(api)
    with SourceRunner(source(api, read_timeout=0.5)) as run:
        run.wait(lambda s: True)
        api.bookmark_interval = 60.0  # nothing else would arrive to keep it alive
        api.freeze_watches()
        api.apply(svc("after-freeze"))
        run.wait(lambda s: "after-freeze" in services(s), timeout=3)


def test_backoff_doubles_to_its_cap_with_jitter() -> None:
    b = Backoff(0.5, 4.0)
    for cap in (0.5, 1.0, 2.0, 4.0, 4.0):  # each delay is in [cap/2, cap]
        assert cap / 2 <= b.next() <= cap
    b.reset()
    assert b.next() <= 0.5
    assert len({Backoff(1.0, 1.0).next() for _ in range(20)}) > 1, "no jitter"


def test_serve_flags_make_the_api_source(tmp_path: Path) -> None:
    from kxds.cli import _parser, config_from_args
    from kxds.serve import make_source

    config = kubeconfig("http://127.0.0.1:9", str(tmp_path / "kubeconfig"))
    args = _parser().parse_args(["serve", "--kubeconfig", config, "--namespace", "team-a",
                                 "--default-certificate", "certs/default",
                                 "--watch-namespaces", "team-a, certs"])
    src = make_source(args, config_from_args(args))
    assert isinstance(src, ApiSource)
    assert src.options.namespace == "team-a"
    assert src.options.extra_secrets == (("certs", "default"),), "kept although unreferenced"
    assert src.options.secret_namespaces == ("team-a", "certs")
    assert sorted((k.path(None), k.field_selector) for k in src.options.watched_kinds()
                  if k.plural == "secrets") == [
        ("/api/v1/namespaces/certs/secrets", "type=Opaque"),
        ("/api/v1/namespaces/certs/secrets", "type=kubernetes.io/tls"),
        ("/api/v1/namespaces/team-a/secrets", "type=Opaque"),
        ("/api/v1/namespaces/team-a/secrets", "type=kubernetes.io/tls")]
    assert src.client.api.configuration.host == "http://127.0.0.1:9"


def test_secrets_read_only_in_the_watched_namespaces(api: FakeApi) -> None:
    """``--watch-namespaces``: Secrets are listed and watched in those namespaces alone
    (one reflector each, a Role each is enough); the other kinds everywhere as before."""
    populate(api)
    api.apply(ingress("team", tls_secret="team-tls", ns="team"))
    api.apply(secret("team-tls", ns="team"))
    api.apply(ingress("other", tls_secret="other-tls", ns="other"))
    api.apply(secret("other-tls", ns="other"))
    src = source(api, secret_namespaces=("default", "team"))
    with SourceRunner(src) as run:
        state = run.wait(lambda s: ("team", "team-tls") in s.secrets)
        assert ("default", "shop-tls") in state.secrets
        assert ("other", "other-tls") not in state.secrets  # never read
        assert ("other", "other") in state.ingresses  # the other kinds: everywhere
        api.apply(secret("later", ns="team"))
        api.apply(ingress("later", tls_secret="later", ns="team"))
        run.wait(lambda s: ("team", "later") in s.secrets)
    assert api.count("GET", "/api/v1/namespaces/team/secrets", "watch=")
    assert api.count("GET", "/api/v1/namespaces/team/secrets", "fieldSelector=type%3DOpaque")
    assert api.count("GET", "/api/v1/namespaces/default/secrets", "watch=")
    assert not api.count("GET", "/api/v1/secrets")
    assert not api.count("GET", "/api/v1/namespaces/other/secrets")


def basic_auth_ingress(name: str, secret_ref: str, ns: str = "default") -> dict[str, Any]:
    ing = ingress(name, ns=ns)
    ing["metadata"]["annotations"] = {"nginx.ingress.kubernetes.io/auth-type": "basic",
                                      "nginx.ingress.kubernetes.io/auth-secret": secret_ref}
    return ing


def opaque(name: str, ns: str = "default", **extra: Any) -> dict[str, Any]:
    auth = base64.b64encode(b"alice:{SHA}g2YDYHBhl9R/ddqtGep+ipAO4aU=\n").decode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": ns, **extra}, "data": {"auth": auth}}


def test_opaque_secrets_are_read_for_authentication(api: FakeApi) -> None:
    """Opaque Secrets are watched beside TLS ones (a second field selector): one an
    Ingress names (auth-secret) reaches the state, kept without its annotations;
    other types never leave the server."""
    populate(api)
    applied = "kubectl.kubernetes.io/last-applied-configuration"
    api.apply(opaque("users", annotations={applied: "{...a copy of the data...}"}))
    untyped = opaque("untyped")
    del untyped["type"]  # the API server defaults it to Opaque
    api.apply(untyped)
    api.apply(basic_auth_ingress("untyped-user", "untyped"))
    api.apply(basic_auth_ingress("private", "users"))
    api.apply(secret("token", "kubernetes.io/service-account-token"))
    api.apply(basic_auth_ingress("token-user", "token"))
    with SourceRunner(source(api)) as run:
        state = run.wait(lambda s: ("default", "users") in s.secrets)
        users = state.secrets[("default", "users")]
        assert users.type == "Opaque" and users.data["auth"].startswith(b"alice:")
        assert users.meta.annotations == {}
        assert ("default", "token") not in state.secrets  # filtered by the server
        assert state.secrets[("default", "untyped")].type == "Opaque"
        assert ("default", "shop-tls") in state.secrets
        # A change to the Opaque Secret arrives through its own watch.
        api.apply(opaque("users", labels={"rotated": "yes"}))
        run.wait(lambda s: s.secrets[("default", "users")].meta.labels == {"rotated": "yes"})
        assert reflector(run.source, "secrets", "opaque").kind.field_selector == "type=Opaque"
    assert api.count("GET", "/api/v1/secrets", "fieldSelector=type%3DOpaque")
    assert api.count("GET", "/api/v1/secrets", "fieldSelector=type%3Dkubernetes.io")
