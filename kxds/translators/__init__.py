"""Pure translation: ClusterState -> IR, plus the problems found on the way.

:func:`kxds.translators.edge.translate` builds the edge gateway's IR and
:func:`kxds.translators.node.translate_node` one per-node proxy's IR; both
return a :class:`~kxds.translators.translation.Translation`. Neither does I/O,
reads a clock or keeps globals; each concern (services, ingress,
network_policy, tls, node) lives in its own module.
"""
