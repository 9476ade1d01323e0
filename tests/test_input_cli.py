"""Input handling seen from the command line and the admin page: skipped classes, old
API versions, limit flags, and /readyz while the manifest source holds a removal."""

from __future__ import annotations

from pathlib import Path

import pytest

from kxds import cli
from kxds.diagnostics import Reason
from kxds.kube import models as m
from kxds.kube.loader import load_text
from kxds.kube.parse import parse_object
from kxds.xds.admin import AdminServer
from kxds.xds.cache import SnapshotCache
from kxds.xds.metrics import XdsMetrics

SERVICE = ("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
           "spec: {ports: [{name: http, port: 80}]}\n")


def ingress(name: str, cls: str) -> str:
    return (f"---\napiVersion: networking.k8s.io/v1\nkind: Ingress\n"
            f"metadata: {{name: {name}}}\nspec:\n  ingressClassName: {cls}\n"
            "  defaultBackend: {service: {name: web, port: {number: 80}}}\n")


def test_validate_summarises_ingresses_of_other_classes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.yaml").write_text(SERVICE + ingress("a", "kxds") + ingress("b", "nginx")
                                     + ingress("c", "nginx") + ingress("d", "nginx")
                                     + ingress("e", "traefik"))
    assert cli.main(["validate", "-f", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["Skipped: 3 Ingresses of class nginx: not ours (--ingress-class kxds)",
                       "Skipped: 1 Ingress of class traefik: not ours (--ingress-class kxds)"]
    assert out[2].startswith("OK: 6 objects")


LEGACY = """apiVersion: {api}
kind: Ingress
metadata: {{name: old}}
spec:
  ingressClassName: kxds
  backend: {{serviceName: web, servicePort: 80}}
  rules:
  - host: old.example.com
    http:
      paths:
      - path: /api
        backend: {{serviceName: web, servicePort: http}}
"""


@pytest.mark.parametrize("api", ["extensions/v1beta1", "networking.k8s.io/v1beta1"])
def test_old_ingress_versions_are_converted_and_reported(api: str) -> None:
    state = load_text(SERVICE + "---\n" + LEGACY.format(api=api))
    ing = state.ingresses[("default", "old")]
    assert ing.default_backend == m.IngressBackend(service="web", port_number=80)
    (path,) = ing.rules[0].paths
    assert path.path_type == "ImplementationSpecific"
    assert path.backend == m.IngressBackend(service="web", port_name="http")
    (note,) = state.problems
    assert (note.ref.name, note.field, note.reason) == ("old", "apiVersion",
                                                        Reason.DEPRECATED_API)
    assert api in note.message


def test_an_old_ingress_with_a_bad_field_names_its_v1_field() -> None:
    doc = {"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "x"},
           "spec": {"backend": {"serviceName": "web", "servicePort": [1]}}}
    model, problem = parse_object(doc)
    assert model is None and problem is not None
    assert problem.field == "spec.defaultBackend.service.port.number"


@pytest.mark.parametrize("argv", [["--max-service-ports", "0"], ["--max-manifest-bytes", "²"],
                                  ["--max-delete-fraction", "1.5"]])
def test_limit_flags_refuse_nonsense(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--manifests", ".", *argv])


def test_limit_flags_reach_the_loader(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    ports = ", ".join(f"{{name: p{i}, port: {i + 1}}}" for i in range(5))
    (tmp_path / "a.yaml").write_text(f"apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\n"
                                     f"spec: {{ports: [{ports}]}}\n")
    assert cli.main(["validate", "-f", str(tmp_path), "--max-service-ports", "4"]) == 1
    assert "spec.ports: TooMany: has 5 items, more than 4" in capsys.readouterr().out
    assert cli.main(["validate", "-f", str(tmp_path), "--max-service-ports", "5"]) == 0


def test_readyz_reports_a_held_source() -> None:
    cache = SnapshotCache()
    held: list[str | None] = [None]
    admin = AdminServer(cache, XdsMetrics(), ready=lambda: True, held=lambda: held[0])
    assert admin.route("GET", "/readyz")[0] == 200
    held[0] = "every object is gone (3 before)"
    status, _, body = admin.route("GET", "/readyz")
    assert status == 503 and body == b"held: every object is gone (3 before)\n"


def test_limit_hits_are_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from prometheus_client import CollectorRegistry, generate_latest

    from kxds.kube.limits import LimitCounter

    registry = CollectorRegistry()
    counter = LimitCounter(registry)
    caplog.set_level(logging.DEBUG, logger="kxds.kube.limits")
    for name in ("a.yaml", "b\nforged.yaml"):
        counter.hit("max_manifest_bytes", name, "99 bytes")
    text = generate_latest(registry).decode()
    assert 'kxds_input_limit_hits_total{limit="max_manifest_bytes"} 2.0' in text
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.WARNING, logging.DEBUG]
    assert all("\n" not in r.getMessage() for r in caplog.records)


def broken_ingress(name: str, cls: str | None, annotation: str | None = None) -> str:
    """An Ingress kxds cannot read (``pathType: prefix``), asking for ``cls``."""
    meta = f"{{name: {name}" + (f", annotations: {{kubernetes.io/ingress.class: {annotation}}}"
                                if annotation else "") + "}"
    spec = f"  ingressClassName: {cls}\n" if cls else ""
    return (f"---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {meta}\n"
            f"spec:\n{spec}  rules:\n  - http:\n      paths:\n      - path: /\n"
            "        pathType: prefix\n"
            "        backend: {service: {name: web, port: {number: 80}}}\n")


def test_an_unreadable_ingress_of_another_class_is_not_ours_to_report(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Another controller's Ingress with a schema error gets no kxds diagnostic (and so
    no Event); ours, by name, by annotation or by a default class of ours, does."""
    from kxds.kube.ingress_class import problems_of_ours
    from kxds.translators.config import TranslateConfig
    from kxds.translators.edge import translate

    foreign = (broken_ingress("nginx-one", "nginx")
               + broken_ingress("legacy", None, annotation="nginx")
               + broken_ingress("classless", None))
    state = load_text(SERVICE + foreign)
    assert len(state.problems) == 3  # the loader reports what it read...
    problems, skipped = problems_of_ours(state, "kxds")
    assert problems == [] and len(skipped) == 3  # ...but none of them is ours
    translation = translate(state, TranslateConfig())
    assert translation.diagnostics == ()
    assert {r.name for r in translation.skipped} == {"nginx-one", "legacy", "classless"}
    (tmp_path / "a.yaml").write_text(SERVICE + foreign)
    assert cli.main(["validate", "-f", str(tmp_path)]) == 0
    assert "OK:" in capsys.readouterr().out

    default_class = ("---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\n"
                     "metadata: {name: edge, annotations: "
                     "{ingressclass.kubernetes.io/is-default-class: 'true'}}\n"
                     "spec: {controller: kxds.io/ingress-controller}\n")
    ours = load_text(SERVICE + broken_ingress("mine", "kxds")
                     + broken_ingress("by-annotation", None, annotation="kxds")
                     + broken_ingress("classless", None) + default_class)
    reported = {d.ref.name for d in translate(ours, TranslateConfig()).diagnostics}
    assert reported == {"mine", "by-annotation", "classless"}
    (tmp_path / "a.yaml").write_text(SERVICE + broken_ingress("mine", "kxds"))
    assert cli.main(["validate", "-f", str(tmp_path)]) == 1
    assert "pathType" in capsys.readouterr().out
