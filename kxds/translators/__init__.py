"""Pure translation: ClusterState -> IR, plus the problems found on the way.

``translate(state, config)`` builds the edge gateway's IR;
``translate_node(state, config, node)`` builds one per-node proxy's IR.
Neither does I/O, reads a clock or keeps globals; each concern (services,
ingress, network_policy, tls, node) lives in its own module.
"""

from __future__ import annotations

from dataclasses import dataclass

from kxds.diagnostics import Diagnostic
from kxds.ir import IR


@dataclass(frozen=True, slots=True, kw_only=True)
class Translation:
    ir: IR
    diagnostics: tuple[Diagnostic, ...] = ()
