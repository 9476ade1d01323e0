"""More host names for an Ingress's hosts: ``server-alias`` and ``from-to-www-redirect``.

ingress-nginx semantics
(https://kubernetes.github.io/ingress-nginx/user-guide/nginx-configuration/annotations/):

* ``server-alias: "a.example.com,b.example.com"``: the names are served exactly
  as the Ingress's (first) host is (every Ingress's paths of that host: nginx
  adds them to the host's ``server_name``). In Envoy: more domains on the host's
  virtual host. An alias that is already a host (of any Ingress or HTTPRoute),
  or another's alias, is reported (``Conflict``) and not added: the host keeps
  its own configuration, as ingress-nginx ignores such an alias.
* ``from-to-www-redirect: "true"``: for a host ``x`` a request to ``www.x`` is
  redirected (308) to ``x`` with its path and query; for a host ``www.x``, ``x``
  to ``www.x``. When the other name is served already, it keeps being served
  and the redirect is not added (reported).

Wildcard hosts and rules without a host get neither (reported). The oldest
Ingress claims a name first. This runs on the finished HTTP route table (Ingress
and HTTPRoute hosts merged), so no two virtual hosts ever share a domain, which
Envoy would refuse.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from kxds import ir, names
from kxds.diagnostics import Diagnostic, Reason, show
from kxds.kube.ingress_class import age_order
from kxds.kube.models import Ingress
from kxds.translators import annotations as ann
from kxds.translators.annotations import registry as r
from kxds.translators.annotations.spec import KXDS, NGINX

_KEYS = tuple(p + a.name for p in (KXDS, NGINX) for a in (r.SERVER_ALIAS, r.FROM_TO_WWW))


def asks(ing: Ingress) -> bool:
    """Whether ``ing`` asks for more host names (:func:`apply_host_names` reads no other)."""
    return any(k in ing.meta.annotations for k in _KEYS)


def _hosts(ing: Ingress) -> list[str]:
    """The Ingress's rule hosts, lower case, in order, each once."""
    return list(dict.fromkeys(rule.host.lower() for rule in ing.rules))


class _Names:
    def __init__(self, table: ir.RouteTable) -> None:
        self.vhosts = {vh.name: vh for vh in table.virtual_hosts}
        self.taken = {d.lower(): vh.name for vh in table.virtual_hosts for d in vh.domains}
        self.diagnostics: list[Diagnostic] = []

    def alias(self, parsed: ann.Parsed, hosts: list[str], aliases: tuple[str, ...]) -> None:
        usable = [h for h in hosts if h and not h.startswith("*.")
                  and names.virtual_host(h) in self.vhosts]
        if not usable:
            self.diagnostics.append(parsed.problem(
                r.SERVER_ALIAS, "the Ingress has no served host that is neither a wildcard "
                "nor empty; no alias is added", Reason.UNSUPPORTED))
            return
        target = self.vhosts[names.virtual_host(usable[0])]
        for raw in (part for item in aliases for part in item.split()):
            alias = raw.lower().rstrip(".")
            if not _is_dns_name(alias):
                self.diagnostics.append(parsed.problem(
                    r.SERVER_ALIAS, f"{show(raw)} is not a host name; it is not added"))
                continue
            holder = self.taken.get(alias)
            if holder is not None:
                self.diagnostics.append(parsed.problem(
                    r.SERVER_ALIAS, f"alias {alias!r} is already served (virtual host "
                    f"{holder!r}); it is not added", Reason.CONFLICT))
                continue
            self.taken[alias] = target.name
            target = dataclasses.replace(target, domains=(*target.domains, alias))
        self.vhosts[target.name] = target

    def www(self, parsed: ann.Parsed, hosts: list[str]) -> None:
        for host in hosts:
            if not host or host.startswith("*."):
                self.diagnostics.append(parsed.problem(
                    r.FROM_TO_WWW, f"host {host or '*'!r} is a wildcard or empty: no "
                    "redirect for it", Reason.UNSUPPORTED))
                continue
            other = host[4:] if host.startswith("www.") else f"www.{host}"
            holder = self.taken.get(other)
            if holder is not None:
                self.diagnostics.append(parsed.problem(
                    r.FROM_TO_WWW, f"{other!r} is served already (virtual host {holder!r}); "
                    f"it is not redirected to {host!r}", Reason.CONFLICT))
                continue
            ref = parsed.ref
            route = ir.Route(
                name=names.cap(f"ingress/{ref.namespace}/{ref.name}/www-redirect/{other}"),
                ref=ref, match=ir.PathMatch(kind=ir.MatchKind.PREFIX, path="/"),
                action=ir.Redirect(https=False, host=host, status=308))
            name = names.virtual_host(other)
            self.taken[other] = name
            self.vhosts[name] = ir.VirtualHost(name=name, domains=(other,), routes=(route,),
                                               refs=(ref,))


def _is_dns_name(host: str) -> bool:
    labels = host.split(".")
    return 0 < len(host) <= 253 and all(
        0 < len(x) <= 63 and x.replace("-", "").isalnum() and x.isascii()
        and not x.startswith("-") and not x.endswith("-") for x in labels)


def apply_host_names(table: ir.RouteTable, ingresses: Iterable[Ingress]
                     ) -> tuple[ir.RouteTable, list[Diagnostic]]:
    """``table`` with the aliases and www redirects ``ingresses`` ask for (oldest first)."""
    asking = sorted((i for i in ingresses if asks(i)), key=age_order)
    if not asking:
        return table, []  # the common case
    n = _Names(table)
    for ing in asking:
        parsed = ann.parse(ing)
        hosts = _hosts(ing)
        aliases = parsed.get(r.SERVER_ALIAS)
        if aliases:
            n.alias(parsed, hosts, aliases)
        if parsed.get(r.FROM_TO_WWW) is True:
            n.www(parsed, hosts)
    vhosts = tuple(n.vhosts[k] for k in sorted(n.vhosts))
    return dataclasses.replace(table, virtual_hosts=vhosts), n.diagnostics
