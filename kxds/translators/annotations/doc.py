"""The compatibility table (``docs/ingress-nginx.md``), generated from the registry.

``python -m kxds.translators.annotations.doc > docs/ingress-nginx.md`` writes it;
a test checks the file and the registry agree.
"""

from __future__ import annotations

from kxds.translators.annotations.registry import REGISTRY
from kxds.translators.annotations.spec import KXDS, NGINX, Family

HEAD = """# ingress-nginx annotations in kxds

Every annotation ingress-nginx documents, and kxds's own, with what kxds does.
Each works under `nginx.ingress.kubernetes.io/` and under `kxds.io/` (the `kxds.io/`
spelling wins when both are set); those marked *kxds only* exist only under `kxds.io/`.
An annotation marked unsupported, or one kxds does not know, is reported on its Ingress
(`Unsupported`, also as a Kubernetes Event) and the Ingress is served without it; a value
kxds cannot parse is reported (`InvalidValue`) and that annotation alone is not applied.
Annotations that narrow who may reach a route (authentication, snippets) are reported
today; the security rules will make their routes fail closed.

Generated from `kxds/translators/annotations/registry.py`
(`python -m kxds.translators.annotations.doc`); do not edit by hand.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|") or "—"


def render() -> str:
    """The whole document."""
    out = [HEAD]
    for family in Family:
        rows = sorted((a for a in REGISTRY.values() if a.family is family),
                      key=lambda a: a.name)
        if not rows:
            continue
        out.append(f"\n## {family.value}\n\n| annotation | status | Envoy feature | notes |\n"
                   "| --- | --- | --- | --- |")
        for a in rows:
            name = f"`{KXDS if a.kxds_only else NGINX}{a.name}`"
            extra = " (kxds only)" if a.kxds_only else ""
            out.append(f"| {name}{extra} | {a.status.value} | {_cell(a.envoy)} | "
                       f"{_cell(a.note)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
