"""IR load assignments -> Envoy ``ClusterLoadAssignment`` (the EDS resource).

Endpoints are grouped into one locality per (priority, zone): Envoy fails
over between priorities and can prefer the local zone within one. A
serving-but-terminating endpoint is sent with health status DRAINING, which
Envoy counts as unhealthy; the translator sends such endpoints only when no
ready one remains, so every host of the cluster is then unhealthy and Envoy's
panic mode (healthy share below ``healthy_panic_threshold``, 50% by default)
balances over them anyway, as Kubernetes intends for terminating endpoints.
"""

from __future__ import annotations

from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from kxds import ir


def fill_lb_endpoint(lb: ec_pb2.LbEndpoint, endpoint: ir.Endpoint) -> None:
    """Set ``lb`` to one upstream host (an IP, or a DNS name for STRICT_DNS) and port.

    Filled in place: with upb, setting fields of a message already in its parent
    is several times faster than building sub-messages and copying them in.
    """
    address = lb.endpoint.address.socket_address
    address.address = endpoint.address
    address.port_value = endpoint.port
    if endpoint.draining:
        lb.health_status = health_check_pb2.DRAINING


def fill_localities(cla: endpoint_pb2.ClusterLoadAssignment,
                    endpoints: tuple[ir.Endpoint, ...]) -> None:
    """Add ``endpoints`` to ``cla`` grouped by (priority, zone), in that order.

    Within a locality, by address and port (then as given). Sorted as plain
    tuples, which compare in C: a key function per endpoint cost as much as
    filling the messages.
    """
    keyed = sorted((e.priority, e.zone or "", e.address, e.port, i)
                   for i, e in enumerate(endpoints))
    current: tuple[int, str] | None = None
    locality: ec_pb2.LocalityLbEndpoints | None = None
    for priority, zone, _, _, i in keyed:
        if locality is None or current != (priority, zone):
            current = (priority, zone)
            locality = cla.endpoints.add()
            if zone:
                locality.locality.zone = zone
            locality.priority = priority
        fill_lb_endpoint(locality.lb_endpoints.add(), endpoints[i])


def fill_groups(cla: endpoint_pb2.ClusterLoadAssignment,
                groups: tuple[ir.EndpointGroup, ...]) -> None:
    """Add one locality per (priority, group) to ``cla``, weighted by the group's weight.

    The group's name is the locality's ``sub_zone``: localities must differ, and
    the name traces each back to its backend. Zones within a group are not
    separate localities, since each locality would then take the whole weight.
    """
    for group in sorted(groups, key=lambda g: g.name):
        for priority in sorted({e.priority for e in group.endpoints}):
            locality = cla.endpoints.add()
            locality.locality.sub_zone = group.name
            locality.priority = priority
            locality.load_balancing_weight.value = group.weight
            for e in sorted((e for e in group.endpoints if e.priority == priority),
                            key=lambda e: (e.address, e.port)):
                fill_lb_endpoint(locality.lb_endpoints.add(), e)


def build_load_assignment(assignment: ir.LoadAssignment) -> endpoint_pb2.ClusterLoadAssignment:
    """The ``ClusterLoadAssignment`` of one cluster; empty when it has no endpoints."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=assignment.cluster)
    fill_localities(cla, assignment.endpoints)
    fill_groups(cla, assignment.groups)
    return cla
