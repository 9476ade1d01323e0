"""``kxds`` with a fault injected from outside: clusters that Envoy will reject.

``python e2e/reject_clusters.py LISTING serve ...`` runs the ``kxds`` command
unchanged, except that each view the controller publishes passes through
:func:`poison` first: while ``LISTING`` names a cluster (one per line), that
cluster is served with ``lb_policy: CLUSTER_PROVIDED``, which Envoy refuses
for an EDS cluster. End-to-end tests use it to watch a real NACK.
"""

from __future__ import annotations

import sys

from kxds.cli import main
from kxds.envoy.resource import CLUSTER, Resource, Resources
from kxds.xds.cache import SnapshotCache

CLUSTER_PROVIDED = b"\x30\x06"
"""Field 6 (``lb_policy``), varint 6 (``CLUSTER_PROVIDED``): appended protobuf fields
override earlier ones, so this needs no message parsing."""


def poison(resources: Resources, listing: str) -> Resources:
    """``resources`` with every cluster named in the file ``listing`` made unacceptable."""
    try:
        with open(listing) as f:
            names = {line.strip() for line in f if line.strip()}
    except OSError:
        return resources
    clusters = dict(resources.get(CLUSTER, {}))
    for name in names & clusters.keys():
        res = clusters[name]
        clusters[name] = Resource.of(CLUSTER, name, res.body + CLUSTER_PROVIDED, res.refs)
    return {**resources, CLUSTER: clusters}


def run(listing: str, argv: list[str]) -> int:
    """Run ``kxds argv`` with :func:`poison` applied to every view it sets."""
    set_view = SnapshotCache.set_view

    def poisoned(self: SnapshotCache, group: str, resources: Resources) -> None:
        set_view(self, group, poison(resources, listing))

    SnapshotCache.set_view = poisoned  # type: ignore[method-assign]
    return main(argv)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], sys.argv[2:]))
