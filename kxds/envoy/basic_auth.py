"""HTTP basic authentication: Envoy's basic auth filter, enabled per route.

Every connection manager carries the filter, disabled, wrapped so that
``satisfy: any`` can skip it (:func:`kxds.envoy.satisfy_any.skippable`); a route
with :class:`~kxds.ir.BasicAuth` enables it with ``BasicAuthPerRoute`` and its
users. Envoy checks only ``{SHA}`` htpasswd entries; the translator keeps only
those. A request without valid credentials is answered 401 with
``WWW-Authenticate: Basic realm="http://HOST/PATH"`` (Envoy's fixed realm).
The users' hashes are redacted from config dumps (:mod:`kxds.envoy.dump`).
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.basic_auth.v3 import basic_auth_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2

from kxds import ir
from kxds.envoy.common import pack
from kxds.envoy.filter_names import BASIC_AUTH
from kxds.envoy.satisfy_any import skippable

NOBODY = "kxds-nobody:{SHA}AAAAAAAAAAAAAAAAAAAAAAAAAAA="
"""The listener-level user (Envoy requires one): a hash no password is known to
have. It never applies: the filter runs only on routes that give their own users."""


def http_filter() -> hcm_pb2.HttpFilter:
    """The basic auth filter of every connection manager, off until a route enables it."""
    config = basic_auth_pb2.BasicAuth(users=base_pb2.DataSource(inline_string=NOBODY))
    return skippable(BASIC_AUTH, pack(config))


def per_route(basic: ir.BasicAuth) -> any_pb2.Any:
    """``BasicAuthPerRoute``: the route's users (htpasswd lines)."""
    users = base_pb2.DataSource(inline_string="\n".join(basic.users))
    return pack(basic_auth_pb2.BasicAuthPerRoute(users=users))
