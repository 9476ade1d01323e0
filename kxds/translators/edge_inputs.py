"""The edge view's queries over whole kinds of the state, patched when objects only
change in place (:mod:`kxds.incremental`).

Sources hand back a state whose mappings keep their keys in their order while
objects only change (:func:`kxds.state_changes.changed_in_place` tells it at C
speed). A query over every object of a kind then need not look at every object
again: its ``update`` looks at the changed ones only, and gives its last value
back when they leave it as it was (the keys of our Ingresses while none changes
age or class; the problems of the input and the Ingresses left to other
controllers; whether a Service port asks for backend TLS).
"""

from __future__ import annotations

from kxds.diagnostics import Diagnostic, ObjectRef
from kxds.incremental import Changes, Context, Query
from kxds.kube.ingress_class import age_order, is_ours, our_ingresses, problems_of_ours
from kxds.kube.models import Key
from kxds.recording import WHOLE
from kxds.state_changes import changed_in_place
from kxds.translators.upstream_tls import has_https_port


def _our_keys(ctx: Context, _: None) -> tuple[Key, ...]:
    return tuple(i.meta.key for i in our_ingresses(ctx.state, ctx.config.ingress_class))


def _same_keys(ctx: Context, _: None, old: tuple[Key, ...],
               changes: Changes) -> tuple[Key, ...] | None:
    """Ingresses changed in place (none added or removed), each of the same age and
    class as before: the same keys in the same order, found without sorting."""
    if changes.before is None or any(field != "ingresses" for field, _ in changes.reads):
        return None
    moved = changed_in_place(changes.before.ingresses, ctx.state.ingresses)
    if moved is None:
        return None
    state, ingress_class = ctx.state, ctx.config.ingress_class
    if any(age_order(was) != age_order(now)
           or is_ours(was, state, ingress_class) != is_ours(now, state, ingress_class)
           for _key, was, now in moved):
        return None
    return old


OUR_KEYS: Query[None, tuple[Key, ...]] = Query("our-ingress-keys", _our_keys, _same_keys)
"""The keys of the Ingresses of our class, oldest first (it wins conflicts). The same
while Ingresses only change in place, so that a query per Ingress, read through
these, stops an Ingress's change where its own value is equal."""


_Problems = tuple[tuple[Diagnostic, ...], tuple[ObjectRef, ...]]


def _parse_problems(ctx: Context, _: None) -> _Problems:
    """The input's problems that are ours to report, and the Ingresses left alone as
    another controller's (valid or not): those get no diagnostic, no Event."""
    state, ingress_class = ctx.state, ctx.config.ingress_class
    problems, rejected = problems_of_ours(state, ingress_class)
    # (Read from the state, not from :data:`OUR_KEYS`: this query's only inputs are
    # reads, so that a change in place is patched, see :func:`_same_problems`.)
    foreign = [i.meta.ref for i in state.ingresses.values()
               if not is_ours(i, state, ingress_class)]
    return tuple(problems), tuple(sorted({*rejected, *foreign}))


def _same_problems(ctx: Context, _: None, old: _Problems, changes: Changes) -> _Problems | None:
    """Ingresses changed in place, none changing class: the same Ingresses are foreign."""
    if changes.queries or changes.before is None or any(
            read != ("ingresses", WHOLE) for read in changes.reads):
        return None
    moved = changed_in_place(changes.before.ingresses, ctx.state.ingresses)
    if moved is None:
        return None
    state, ingress_class = ctx.state, ctx.config.ingress_class
    if any(is_ours(was, state, ingress_class) != is_ours(now, state, ingress_class)
           for _key, was, now in moved):
        return None
    return old


PARSE_PROBLEMS: Query[None, _Problems] = Query("parse-problems", _parse_problems,
                                               _same_problems)


def _https_ports(ctx: Context, _: None) -> bool:
    return any(map(has_https_port, ctx.state.services.values()))


def _same_https_ports(ctx: Context, _: None, old: bool, changes: Changes) -> bool | None:
    """Services changed in place: only they can have gained or lost an https port."""
    if changes.queries or changes.before is None or any(
            field != "services" for field, _ in changes.reads):
        return None
    moved = changed_in_place(changes.before.services, ctx.state.services)
    if moved is None or (old and any(has_https_port(was) for _key, was, _now in moved)):
        return None  # (the port that made it true may have gone)
    return old or any(has_https_port(now) for _key, _was, now in moved)


HTTPS_PORTS: Query[None, bool] = Query("https-ports", _https_ports, _same_https_ports)
"""Whether a Service port has ``appProtocol: https`` (backend TLS wanted by the port)."""
