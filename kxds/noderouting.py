"""The node set-up for transparent source addresses: replies to Envoy come back to Envoy.

With ``upstream_source: client`` a per-node Envoy opens its upstream TCP
connections, and sends its UDP datagrams, from the client's address, on
sockets with ``IP_TRANSPARENT``. The backend answers that address by its
default route, which for a pod on this node is the node itself; left alone,
the node would forward the answer towards the client (or drop it), never
giving it to Envoy. Three things make it Envoy's:

1. a netfilter rule marks every arriving packet that belongs to a transparent
   socket (``-m socket --transparent --nowildcard``: ``--nowildcard`` because
   udp_proxy's upstream sockets are bound to the wildcard address and send
   with the client's address per datagram);
2. a policy routing rule looks marked packets up in a table of their own;
3. that table routes every address to the local host (``local default dev lo``),
   so the packet is delivered, and the transparent socket takes it.

This is the recipe of the Linux kernel's transparent proxy documentation
(``Documentation/networking/tproxy.rst``) and of Envoy's original-source
filter docs ("Extra Setup"). Envoy itself needs ``CAP_NET_ADMIN`` for
``IP_TRANSPARENT``; applying the rules needs ``CAP_NET_ADMIN`` too (and root
for ``iptables``). The mark is one bit (set with a mask, matched with a
mask) chosen clear of kube-proxy's (0x4000, 0x8000), Calico's (0xffff0000)
and Cilium's (0x0f00) bits; the table and the rule priority are ours alone.

``kxds node-routing`` prints these commands, or applies (or removes) them,
idempotently: a rule already present is replaced, never doubled.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

MARK = 0x2000
"""The packet mark bit of replies to Envoy's transparent sockets."""
TABLE = 2000
"""The routing table that delivers marked packets locally."""
PRIORITY = 100
"""The priority of the policy routing rule (before ``main`` at 32766)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Routing:
    """The values of one node's set-up (the defaults suit every node)."""

    mark: int = MARK
    table: int = TABLE
    priority: int = PRIORITY
    ipv6: bool = True
    """Set up IPv6 as well as IPv4."""


Command = tuple[str, ...]


def _families(routing: Routing) -> list[tuple[str, str, str]]:
    """(iptables command, ``ip`` family flag, the whole address space) per family."""
    out = [("iptables", "-4", "0.0.0.0/0")]
    if routing.ipv6:
        out.append(("ip6tables", "-6", "::/0"))
    return out


def _mark_rule(routing: Routing) -> tuple[str, ...]:
    mark = f"{routing.mark:#x}/{routing.mark:#x}"
    return ("PREROUTING", "-m", "socket", "--transparent", "--nowildcard",
            "-m", "comment", "--comment", "kxds transparent source",
            "-j", "MARK", "--set-mark", mark)


def _policy_rule(routing: Routing) -> tuple[str, ...]:
    return ("pref", str(routing.priority), "fwmark", f"{routing.mark:#x}/{routing.mark:#x}",
            "lookup", str(routing.table))


def setup_commands(routing: Routing = Routing()) -> list[Command]:
    """The commands that set the node up (each one adds; see :func:`apply`)."""
    out: list[Command] = []
    for iptables, family, everything in _families(routing):
        out += [
            (iptables, "-t", "mangle", "-A", *_mark_rule(routing)),
            ("ip", family, "rule", "add", *_policy_rule(routing)),
            ("ip", family, "route", "replace", "local", everything, "dev", "lo",
             "table", str(routing.table)),
        ]
    return out


def removal_commands(routing: Routing = Routing()) -> list[Command]:
    """The commands that undo :func:`setup_commands` (each fails when nothing is left)."""
    out: list[Command] = []
    for iptables, family, everything in _families(routing):
        out += [
            (iptables, "-t", "mangle", "-D", *_mark_rule(routing)),
            ("ip", family, "rule", "del", *_policy_rule(routing)),
            ("ip", family, "route", "del", "local", everything, "dev", "lo",
             "table", str(routing.table)),
        ]
    return out


def script(routing: Routing = Routing()) -> str:
    """The set-up as shell commands, one a line (what the README shows)."""
    return "\n".join(shlex.join(cmd) for cmd in setup_commands(routing)) + "\n"


class RoutingError(RuntimeError):
    """A set-up command failed; the message names it and what it said."""


def _run(cmd: Sequence[str], *, check: bool) -> bool:
    done = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if done.returncode != 0 and check:
        raise RoutingError(f"{shlex.join(cmd)}: exit {done.returncode}: "
                           f"{(done.stderr or done.stdout).strip()}")
    return done.returncode == 0


def remove(routing: Routing = Routing()) -> None:
    """Remove every copy of the set-up's rules (nothing left is fine)."""
    for cmd in removal_commands(routing):
        while _run(cmd, check=False):
            pass


def apply(routing: Routing = Routing()) -> None:
    """Set the node up: remove what an earlier run left, then add each rule once.

    Raises :class:`RoutingError` when a command fails (no ``ip``/``iptables``,
    no ``CAP_NET_ADMIN``, no ``socket`` match in the kernel).
    """
    remove(routing)
    for cmd in setup_commands(routing):
        _run(cmd, check=True)
