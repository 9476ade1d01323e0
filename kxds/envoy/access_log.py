"""The access log of the HTTP connection managers: one JSON line per request on stdout.

Fields (Envoy command operators, https://www.envoyproxy.io/docs/envoy/latest/configuration/observability/access_log/usage):
the start time, the client address as the access rules see it (the
connection manager's derived remote address, without port), method,
authority, path as received, protocol, status, response flags, bytes in and
out, duration, the upstream cluster and address, the request id, the route
and the Ingress (``namespace/name``, from the route's metadata) that routed it.
A route whose metadata holds ``kxds.nolog`` is not logged (a CEL filter).
"""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import substitution_format_string_pb2 as sfs_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from google.protobuf import struct_pb2

from kxds import ir
from kxds.envoy.common import pack
from kxds.envoy.filter_names import CEL_LOG_FILTER, STDOUT_LOG

FIELDS = {
    "time": "%START_TIME%",
    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "method": "%REQ(:METHOD)%",
    "authority": "%REQ(:AUTHORITY)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "bytes_in": "%BYTES_RECEIVED%",
    "bytes_out": "%BYTES_SENT%",
    "duration_ms": "%DURATION%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_address": "%UPSTREAM_HOST%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "route": "%ROUTE_NAME%",
}
"""kxds's JSON access log line: field -> Envoy command operator."""

_LOGGED = "!('kxds.nolog' in xds.route_metadata.filter_metadata)"


def build_access_logs(options: ir.HttpOptions) -> list[accesslog_pb2.AccessLog]:
    """The connection manager's access logs (none when turned off)."""
    if not options.access_log:
        return []
    fmt = sfs_pb2.SubstitutionFormatString()
    if options.access_log_format is None:
        fmt.json_format.CopyFrom(_struct(FIELDS))
    else:
        fmt.text_format_source.inline_string = options.access_log_format
    log = stream_pb2.StdoutAccessLog(log_format=fmt)
    cel = accesslog_pb2.AccessLogFilter(extension_filter=accesslog_pb2.ExtensionFilter(
        name=CEL_LOG_FILTER, typed_config=pack(cel_pb2.ExpressionFilter(expression=_LOGGED))))
    return [accesslog_pb2.AccessLog(name=STDOUT_LOG, filter=cel, typed_config=pack(log))]


def _struct(fields: dict[str, str]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    for k, v in fields.items():
        out.fields[k].string_value = v
    return out
