"""Every annotation kxds knows: ingress-nginx's documented ones and kxds's own.

One entry per short name, with its parser, its status and the Envoy feature
it maps to. :mod:`kxds.translators.annotations` parses an Ingress's
annotations through this table, and ``docs/ingress-nginx.md`` is generated
from it (a test checks they agree). An annotation under
``nginx.ingress.kubernetes.io/`` that is not here, or is here as unsupported,
gets an ``Unsupported`` diagnostic: nothing is ignored silently.

Timeouts: ingress-nginx's ``proxy-read-timeout`` and ``proxy-send-timeout`` are
the longest pause between two reads from, and two writes to, the backend.
Envoy's closest per-route setting is the stream idle timeout (no bytes either
way for that long), set from ``proxy-read-timeout``; it also keeps WebSockets
and long polls open while they are active, and the route's total timeout is
turned off so a long-lived stream is never cut while it moves data.
"""

from __future__ import annotations

from typing import Any

from kxds.translators.annotations import values as v
from kxds.translators.annotations.spec import Annotation, Family, Status

S, P, U = Status.SUPPORTED, Status.PARTIAL, Status.UNSUPPORTED
F = Family

_SECURITY = ("it may restrict who reaches the routes, and kxds cannot honour it yet: every "
             "route of the Ingress answers 503 (fail closed)")


def _unsupported(name: str, family: Family, why: str, *, narrows: bool = False,
                 documented: bool = True) -> Annotation[Any]:
    return Annotation(name, family, U, "", why, narrows=narrows, documented=documented)


# --- protocols and timeouts -------------------------------------------------------

BACKEND_PROTOCOL = Annotation(
    "backend-protocol", F.PROTOCOLS, P,
    "cluster transport socket (TLS) and HttpProtocolOptions (HTTP/2)",
    "HTTP, HTTPS, GRPC, GRPCS, H2C and AUTO_HTTP (the Service port's appProtocol); "
    "FCGI and AJP are reported and the backend is reached over HTTP/1.1",
    v.choice("HTTP", "HTTPS", "GRPC", "GRPCS", "H2C", "AUTO_HTTP", "FCGI", "AJP"),
    reported_elsewhere=True)
CONNECT_TIMEOUT = Annotation(
    "proxy-connect-timeout", F.PROTOCOLS, S,
    "cluster connect_timeout (a twin of the Service's cluster for the Ingress's routes)",
    "default 5 s, as nginx", v.seconds(1, 3600))
READ_TIMEOUT = Annotation(
    "proxy-read-timeout", F.PROTOCOLS, P, "route idle_timeout, route timeout 0",
    "Envoy's stream idle timeout (default 60 s) counts silence both ways; a backend "
    "silent that long is answered 408 before its headers (nginx: 504), reset after; no "
    "total timeout, so long-lived streams stay up while they move data",
    v.seconds(1, 31_536_000))
SEND_TIMEOUT = Annotation(
    "proxy-send-timeout", F.PROTOCOLS, P, "route idle_timeout, route timeout 0",
    "accepted; Envoy has one idle timeout for both directions, set by "
    "proxy-read-timeout",
    v.seconds(1, 31_536_000))
BODY_SIZE = Annotation(
    "proxy-body-size", F.PROTOCOLS, S, "buffer filter per route (max_request_bytes) -> 413",
    "no limit unless set (ingress-nginx's global default is 1m)", v.size)
WEBSOCKET_SERVICES = Annotation(
    "websocket-services", F.PROTOCOLS, S, "upgrade_configs: websocket on every listener",
    "WebSockets work on every route; the annotation is accepted and needs nothing",
    v.text, documented=False)
PROXY_HTTP_VERSION = _unsupported(
    "proxy-http-version", F.PROTOCOLS,
    "Envoy speaks HTTP/1.1 (or HTTP/2 with backend-protocol) to backends, never 1.0")
CONNECTION_PROXY_HEADER = _unsupported(
    "connection-proxy-header", F.PROTOCOLS,
    "Envoy manages upstream connections itself (keep-alive); the header is not sent")
NEXT_UPSTREAM = Annotation(
    "proxy-next-upstream", F.PROTOCOLS, P,
    "route retry_policy (previous_hosts: another endpoint each time)",
    "applied only when set (nginx's default 'error timeout' is not); a failure before "
    "the request was sent is always tried again; 'timeout' and 'invalid_header' add "
    "nothing more, 'non_idempotent' adds resets after sending, http_NNN retry on those "
    "statuses also for non-idempotent requests (Envoy cannot tell them apart); 'off' "
    "turns retries off",
    v.words("error", "timeout", "invalid_header", "http_500", "http_502", "http_503",
            "http_504", "http_403", "http_404", "http_429", "non_idempotent", "off"))
NEXT_UPSTREAM_TRIES = Annotation(
    "proxy-next-upstream-tries", F.PROTOCOLS, S, "retry_policy num_retries (tries - 1)",
    "attempts in all; default 3 with proxy-next-upstream", v.integer(1, 100))
NEXT_UPSTREAM_TIMEOUT = Annotation(
    "proxy-next-upstream-timeout", F.PROTOCOLS, P, "retry_policy per_try_timeout",
    "bounds each attempt's wait for its answer to begin (an answer once begun is never "
    "cut), not the whole time spent trying as nginx does; an attempt over it is tried "
    "again on another endpoint (within the tries) only with 'non_idempotent', else "
    "answered 504; 0 is no bound; with proxy-next-upstream only", v.seconds(0, 31_536_000))
SERVICE_UPSTREAM = Annotation(
    "service-upstream", F.PROTOCOLS, P,
    "a twin cluster whose one endpoint is the Service's clusterIP:port",
    "as nginx, kube-proxy then picks the endpoint (no hashing, affinity, retries on "
    "another endpoint, outlier detection or health checks, which need endpoints); "
    "a headless Service, one without a clusterIP in its manifest and an ExternalName "
    "Service are reported and keep their endpoints (or DNS name)", v.boolean)

# --- canary -----------------------------------------------------------------------

CANARY = Annotation("canary", F.CANARY, S, "weighted_clusters and header-matched routes",
                    "", v.boolean)
CANARY_WEIGHT = Annotation("canary-weight", F.CANARY, S, "weighted_clusters", "",
                           v.integer(0))
CANARY_WEIGHT_TOTAL = Annotation("canary-weight-total", F.CANARY, S, "weighted_clusters",
                                 "", v.integer(1, 1_000_000))
CANARY_BY_HEADER = Annotation("canary-by-header", F.CANARY, S,
                              "route header match (always / never)", "", v.header_name)
CANARY_BY_HEADER_VALUE = Annotation("canary-by-header-value", F.CANARY, S,
                                    "route header match (exact)", "", v.text)
CANARY_BY_HEADER_PATTERN = Annotation(
    "canary-by-header-pattern", F.CANARY, P, "route header match (safe_regex)",
    "RE2, not PCRE: a pattern RE2 cannot compile is reported and not applied; the "
    "pattern must match the whole value", v.regex)
CANARY_BY_COOKIE = Annotation("canary-by-cookie", F.CANARY, S,
                              "route match on the cookie header (always / never)", "",
                              v.header_name)
AFFINITY_CANARY_BEHAVIOR = _unsupported(
    "affinity-canary-behavior", F.CANARY,
    "a canary route keeps the main Ingress's session cookie ('sticky' behaviour is not "
    "kept across the split)")

# --- rewrites and redirects --------------------------------------------------------

REWRITE_TARGET = Annotation(
    "rewrite-target", F.REWRITES, S, "route prefix_rewrite / regex_rewrite",
    "", v.text)
USE_REGEX = Annotation(
    "use-regex", F.REWRITES, P, "route safe_regex match (RE2)",
    "applies to this Ingress's paths only (ingress-nginx makes every path of the host a "
    "regex); RE2, not PCRE: what RE2 cannot compile is reported and the path not served",
    v.boolean)
APP_ROOT = Annotation("app-root", F.REWRITES, S, "redirect (302) of the exact path /", "",
                      v.text)
PERMANENT_REDIRECT = Annotation("permanent-redirect", F.REWRITES, S, "route redirect (301)",
                                "", v.text)
PERMANENT_REDIRECT_CODE = Annotation(
    "permanent-redirect-code", F.REWRITES, S, "redirect response_code",
    "", v.choice("301", "302", "303", "307", "308"))
TEMPORAL_REDIRECT = Annotation("temporal-redirect", F.REWRITES, S, "route redirect (302)",
                               "", v.text)
TEMPORAL_REDIRECT_CODE = Annotation(
    "temporal-redirect-code", F.REWRITES, S, "redirect response_code", "",
    v.choice("301", "302", "303", "307", "308"), documented=False)
FROM_TO_WWW = Annotation(
    "from-to-www-redirect", F.REWRITES, P, "a virtual host for the other name, redirect (308)",
    "www.x redirects to x (and x to www.x for a host www.x) unless the other name is "
    "served already (reported); over HTTPS only where a TLS chain serves the other name; "
    "not for wildcard hosts", v.boolean)
X_FORWARDED_PREFIX = Annotation("x-forwarded-prefix", F.REWRITES, S,
                                "request_headers_to_add x-forwarded-prefix", "", v.text)
UPSTREAM_VHOST = Annotation("upstream-vhost", F.REWRITES, S, "route host_rewrite_literal",
                            "", v.text)
SERVER_ALIAS = Annotation(
    "server-alias", F.REWRITES, P, "more domains on the host's virtual host",
    "the names serve the Ingress's first host (every Ingress's paths of it); an alias "
    "already served as a host or alias is reported and not added; over HTTPS only where "
    "a TLS chain serves the alias", v.items)
PRESERVE_TRAILING_SLASH = _unsupported(
    "preserve-trailing-slash", F.REWRITES,
    "HTTPS redirects keep the path exactly as requested (the slash is always kept)")
PROXY_REDIRECT_FROM = _unsupported("proxy-redirect-from", F.REWRITES,
                                   "Location headers from the backend are passed unchanged")
PROXY_REDIRECT_TO = _unsupported("proxy-redirect-to", F.REWRITES,
                                 "Location headers from the backend are passed unchanged")
PROXY_COOKIE_DOMAIN = _unsupported("proxy-cookie-domain", F.REWRITES,
                                   "Set-Cookie headers from the backend are passed unchanged")
PROXY_COOKIE_PATH = _unsupported("proxy-cookie-path", F.REWRITES,
                                 "Set-Cookie headers from the backend are passed unchanged")
ENABLE_REWRITE_LOG = _unsupported("enable-rewrite-log", F.REWRITES,
                                  "Envoy has no rewrite log; the access log shows the path")

# --- session affinity and load balancing -----------------------------------------

AFFINITY = Annotation(
    "affinity", F.AFFINITY, P, "stateful session filter (cookie) per route",
    "the cookie holds the chosen endpoint (address, encoded), not a hash; a client "
    "whose endpoint is gone is balanced again and gets a new cookie", v.choice("cookie"))
AFFINITY_MODE = Annotation(
    "affinity-mode", F.AFFINITY, P, "stateful session filter",
    "both modes keep a client on its endpoint until it is gone ('persistent')",
    v.choice("balanced", "persistent"))
SESSION_COOKIE_NAME = Annotation("session-cookie-name", F.AFFINITY, S,
                                 "stateful session cookie name (default INGRESSCOOKIE)",
                                 "", v.text)
SESSION_COOKIE_PATH = Annotation("session-cookie-path", F.AFFINITY, S,
                                 "stateful session cookie path", "", v.text)
SESSION_COOKIE_MAX_AGE = Annotation("session-cookie-max-age", F.AFFINITY, S,
                                    "stateful session cookie ttl", "", v.integer(1))
SESSION_COOKIE_EXPIRES = Annotation(
    "session-cookie-expires", F.AFFINITY, P, "stateful session cookie ttl",
    "sent as Max-Age (with session-cookie-max-age winning), not as Expires",
    v.integer(1))
SESSION_COOKIE_SAMESITE = Annotation("session-cookie-samesite", F.AFFINITY, S,
                                     "stateful session cookie attribute SameSite", "",
                                     v.choice("None", "Lax", "Strict"))
SESSION_COOKIE_SECURE = Annotation("session-cookie-secure", F.AFFINITY, S,
                                   "stateful session cookie attribute Secure", "", v.boolean)
SESSION_COOKIE_DOMAIN = _unsupported(
    "session-cookie-domain", F.AFFINITY, "the cookie is set for the request's host only")
SESSION_COOKIE_CHANGE_ON_FAILURE = Annotation(
    "session-cookie-change-on-failure", F.AFFINITY, P, "stateful session (not strict)",
    "always on: a client whose endpoint is gone is balanced again", v.boolean)
SESSION_COOKIE_CONDITIONAL_SAMESITE_NONE = _unsupported(
    "session-cookie-conditional-samesite-none", F.AFFINITY,
    "SameSite is sent to every browser alike")
UPSTREAM_HASH_BY = Annotation(
    "upstream-hash-by", F.AFFINITY, P,
    "route hash_policy, cluster lb_policy RING_HASH (a twin of the Service's cluster)",
    "variables $remote_addr, $request_uri, $host, $http_<name>, $cookie_<name>, "
    "$arg_<name>, alone or combined (one hash_policy each; text between them is "
    "ignored); others are reported; a request without the header, cookie or parameter "
    "is balanced at random (nginx hashes the empty string)", v.text)
UPSTREAM_HASH_BY_SUBSET = _unsupported(
    "upstream-hash-by-subset", F.AFFINITY,
    "Envoy hashes to one endpoint, not to a subset balanced within; upstream-hash-by "
    "alone applies")
UPSTREAM_HASH_BY_SUBSET_SIZE = _unsupported("upstream-hash-by-subset-size", F.AFFINITY,
                                            "see upstream-hash-by-subset")
LOAD_BALANCE = Annotation(
    "load-balance", F.AFFINITY, P,
    "cluster lb_policy (a twin of the Service's cluster)",
    "round_robin; ewma is Envoy's LEAST_REQUEST (fewer active requests of two hosts "
    "picked at random), the closest Envoy policy; upstream-hash-by wins when both are set",
    v.choice("round_robin", "ewma"))

# --- headers and CORS ---------------------------------------------------------------

ENABLE_CORS = Annotation("enable-cors", F.HEADERS, S, "CORS filter, per-route CorsPolicy", "",
                         v.boolean)
CORS_ALLOW_ORIGIN = Annotation(
    "cors-allow-origin", F.HEADERS, S, "CorsPolicy allow_origin_string_match",
    "", v.items)
CORS_ALLOW_METHODS = Annotation("cors-allow-methods", F.HEADERS, S, "CorsPolicy allow_methods",
                                "", v.items)
CORS_ALLOW_HEADERS = Annotation("cors-allow-headers", F.HEADERS, S, "CorsPolicy allow_headers",
                                "", v.header_names)
CORS_EXPOSE_HEADERS = Annotation("cors-expose-headers", F.HEADERS, S,
                                 "CorsPolicy expose_headers", "", v.items)
CORS_ALLOW_CREDENTIALS = Annotation("cors-allow-credentials", F.HEADERS, S,
                                    "CorsPolicy allow_credentials", "", v.boolean)
CORS_MAX_AGE = Annotation("cors-max-age", F.HEADERS, S, "CorsPolicy max_age", "",
                          v.integer(0))
CUSTOM_HEADERS = Annotation(
    "custom-headers", F.HEADERS, P, "route response_headers_to_add (overwrite)",
    "`[namespace/]name` of a ConfigMap whose keys and values are set on every response; "
    "kxds has no controller ConfigMap, so there is no `global-allowed-response-headers` "
    "allow-list: every valid header name of the ConfigMap is set (an invalid one is reported "
    "and skipped, as is a value with an nginx variable `$` or a `%`); a missing ConfigMap is "
    "reported and the routes are served without the headers; `kxds.io/response-headers-set` "
    "wins for a header both set", v.text)
REQUEST_HEADERS_SET = Annotation(
    "request-headers-set", F.HEADERS, S, "route request_headers_to_add (overwrite)",
    "`Name: value` lines", v.header_lines, kxds_only=True, documented=False)
REQUEST_HEADERS_ADD = Annotation(
    "request-headers-add", F.HEADERS, S, "route request_headers_to_add (append)",
    "`Name: value` lines", v.header_lines, kxds_only=True, documented=False)
REQUEST_HEADERS_REMOVE = Annotation(
    "request-headers-remove", F.HEADERS, S, "route request_headers_to_remove",
    "comma-separated names", v.header_names, kxds_only=True, documented=False)
RESPONSE_HEADERS_SET = Annotation(
    "response-headers-set", F.HEADERS, S, "route response_headers_to_add (overwrite)",
    "`Name: value` lines", v.header_lines, kxds_only=True, documented=False)
RESPONSE_HEADERS_ADD = Annotation(
    "response-headers-add", F.HEADERS, S, "route response_headers_to_add (append)",
    "`Name: value` lines", v.header_lines, kxds_only=True, documented=False)
RESPONSE_HEADERS_REMOVE = Annotation(
    "response-headers-remove", F.HEADERS, S, "route response_headers_to_remove",
    "comma-separated names", v.header_names, kxds_only=True, documented=False)

# --- limits -----------------------------------------------------------------------

LIMIT_RPS = Annotation(
    "limit-rps", F.LIMITS, P, "local rate limit filter, a token bucket per client address",
    "refused with --limit-status-code (default 429; ingress-nginx's default is 503); the "
    "bucket holds rps x burst multiplier and refills at the rate", v.integer(1, 1_000_000))
LIMIT_RPM = Annotation("limit-rpm", F.LIMITS, P,
                       "local rate limit filter, a token bucket per client address",
                       "as limit-rps; when both are set, limit-rps is used",
                       v.integer(1, 60_000_000))
LIMIT_BURST_MULTIPLIER = Annotation("limit-burst-multiplier", F.LIMITS, S,
                                    "token bucket max_tokens", "", v.integer(1, 1000))
LIMIT_ALLOWLIST = Annotation(
    "limit-allowlist", F.LIMITS, P,
    "local rate limit descriptor: clients in these CIDRs match no bucket",
    "IPv4 CIDRs and single IPv6 addresses; a wider IPv6 range is reported and those "
    "clients stay limited; limit-allowlist wins over limit-whitelist", v.items,
    documented=False)
LIMIT_WHITELIST = Annotation(
    "limit-whitelist", F.LIMITS, P,
    "local rate limit descriptor: clients in these CIDRs match no bucket",
    "as limit-allowlist", v.items)
LIMIT_CONNECTIONS = _unsupported(
    "limit-connections", F.LIMITS,
    "Envoy has no limit of concurrent connections per client address (its connection "
    "limit filter counts all clients together, which would let one client lock out the "
    "rest): connections are not limited; limit-rps/limit-rpm limit each client's requests")
LIMIT_RATE = _unsupported("limit-rate", F.LIMITS, "response bandwidth is not limited")
LIMIT_RATE_AFTER = _unsupported("limit-rate-after", F.LIMITS,
                                "response bandwidth is not limited")
GLOBAL_RATE_LIMIT = _unsupported(
    "global-rate-limit", F.LIMITS,
    "needs a rate limit service shared by every proxy; not limited")
GLOBAL_RATE_LIMIT_WINDOW = _unsupported("global-rate-limit-window", F.LIMITS,
                                        "see global-rate-limit")
GLOBAL_RATE_LIMIT_KEY = _unsupported("global-rate-limit-key", F.LIMITS,
                                     "see global-rate-limit")
GLOBAL_RATE_LIMIT_IGNORED_CIDRS = _unsupported("global-rate-limit-ignored-cidrs", F.LIMITS,
                                               "see global-rate-limit")

# --- logs and tracing --------------------------------------------------------------

ENABLE_ACCESS_LOG = Annotation(
    "enable-access-log", F.LOGS, S, "access log filter on route metadata",
    "", v.boolean)
ENABLE_OPENTELEMETRY = Annotation(
    "enable-opentelemetry", F.LOGS, P,
    "route tracing (Envoy's OpenTelemetry tracer on the connection managers, OTLP/gRPC)",
    "needs kxds serve --otel-collector (without it reported); off by default as in "
    "ingress-nginx, --otel-trace-all turns it on for every route (false then opts out); "
    "a route not traced sends no span even for a sampled traceparent", v.boolean)
OPENTELEMETRY_TRUST_INCOMING_SPAN = Annotation(
    "opentelemetry-trust-incoming-span", F.LOGS, P, "the tracer's traceparent propagation",
    "true, the default: Envoy continues the incoming trace; false is reported (Envoy "
    "cannot ignore the incoming context per route)", v.boolean)
OPENTELEMETRY_OPERATION_NAME = Annotation(
    "opentelemetry-operation-name", F.LOGS, P, "route decorator operation",
    "literal text; nginx variables ($uri, ...) are reported and the annotation not "
    "applied; unset: Envoy's span name, ingress", v.text)
ENABLE_OPENTRACING = _unsupported("enable-opentracing", F.LOGS,
                                  "OpenTracing is retired; use enable-opentelemetry")
OPENTRACING_TRUST_INCOMING_SPAN = _unsupported("opentracing-trust-incoming-span", F.LOGS,
                                               "see enable-opentracing")
ENABLE_INFLUXDB = _unsupported("enable-influxdb", F.LOGS,
                               "no InfluxDB export; use Envoy's stats")
INFLUXDB_MEASUREMENT = _unsupported("influxdb-measurement", F.LOGS, "see enable-influxdb")
INFLUXDB_PORT = _unsupported("influxdb-port", F.LOGS, "see enable-influxdb")
INFLUXDB_HOST = _unsupported("influxdb-host", F.LOGS, "see enable-influxdb")
INFLUXDB_SERVER_NAME = _unsupported("influxdb-server-name", F.LOGS, "see enable-influxdb")

# --- TLS (read by kxds.translators.tls and upstream_tls) -------------------------------

SSL_REDIRECT = Annotation("ssl-redirect", F.TLS, P, "route redirect to https",
                          "301, not ingress-nginx's 308", v.boolean, reported_elsewhere=True)
FORCE_SSL_REDIRECT = Annotation("force-ssl-redirect", F.TLS, P, "route redirect to https",
                                "301, not ingress-nginx's 308", v.boolean,
                                reported_elsewhere=True)
SSL_PASSTHROUGH = Annotation("ssl-passthrough", F.TLS, S,
                             "filter chain by SNI with tcp_proxy", "", v.boolean,
                             reported_elsewhere=True)
TLS_PASSTHROUGH = Annotation("tls-passthrough", F.TLS, S, "filter chain by SNI with tcp_proxy",
                             "", v.boolean, kxds_only=True, reported_elsewhere=True,
                             documented=False)
BACKEND_SNI = Annotation("backend-sni", F.TLS, S, "UpstreamTlsContext sni", "", v.text,
                         kxds_only=True, reported_elsewhere=True, documented=False)
BACKEND_CA_SECRET = Annotation("backend-ca-secret", F.TLS, S,
                               "UpstreamTlsContext validation context (SDS)", "", v.text,
                               kxds_only=True, reported_elsewhere=True, documented=False)
SSL_CIPHERS = _unsupported("ssl-ciphers", F.TLS,
                           "Envoy's default cipher suites are used for every host")
SSL_PREFER_SERVER_CIPHERS = _unsupported("ssl-prefer-server-ciphers", F.TLS,
                                         "Envoy's defaults are used")
PROXY_SSL_SECRET = _unsupported(
    "proxy-ssl-secret", F.TLS,
    "no client certificate to backends; verify backends with kxds.io/backend-ca-secret",
    narrows=False)
PROXY_SSL_VERIFY = _unsupported("proxy-ssl-verify", F.TLS,
                                "use kxds.io/backend-ca-secret to verify backends")
PROXY_SSL_VERIFY_DEPTH = _unsupported("proxy-ssl-verify-depth", F.TLS,
                                      "the whole chain is verified")
PROXY_SSL_CIPHERS = _unsupported("proxy-ssl-ciphers", F.TLS, "Envoy's defaults are used")
PROXY_SSL_PROTOCOLS = _unsupported("proxy-ssl-protocols", F.TLS, "Envoy's defaults are used")
PROXY_SSL_NAME = _unsupported("proxy-ssl-name", F.TLS, "use kxds.io/backend-sni")
PROXY_SSL_SERVER_NAME = _unsupported("proxy-ssl-server-name", F.TLS,
                                     "SNI is always sent to TLS backends")

# --- access control and authentication (the security rules) ---------------------------

WHITELIST_SOURCE_RANGE = Annotation(
    "whitelist-source-range", F.ACCESS, S, "RBAC per route (remote_ip)", "", v.items,
    reported_elsewhere=True)
ALLOWLIST_SOURCE_RANGE = Annotation(
    "allowlist-source-range", F.ACCESS, S, "RBAC per route (remote_ip)", "", v.items,
    reported_elsewhere=True, documented=False)
DENYLIST_SOURCE_RANGE = Annotation(
    "denylist-source-range", F.ACCESS, S, "RBAC per route (remote_ip)", "", v.items,
    reported_elsewhere=True, documented=False)
AUTH_TYPE = Annotation(
    "auth-type", F.ACCESS, P, "basic auth filter, per route (BasicAuthPerRoute users)",
    "basic only; digest (or anything else) is reported and every route of the Ingress "
    "answers 503 (fail closed)", v.text, reported_elsewhere=True)
AUTH_SECRET = Annotation(
    "auth-secret", F.ACCESS, P, "basic auth filter, per route (BasicAuthPerRoute users)",
    "name or namespace/name of an Opaque Secret; Envoy checks only {SHA} users "
    "(htpasswd -s): a user with another scheme (apr1, bcrypt, crypt, plain) is left out "
    "and reported; a missing or unusable Secret makes every route of the Ingress answer "
    "503 (fail closed)", v.text, reported_elsewhere=True)
AUTH_SECRET_TYPE = Annotation(
    "auth-secret-type", F.ACCESS, S, "basic auth filter, per route (BasicAuthPerRoute users)",
    "auth-file (htpasswd lines under the key auth, the default) or auth-map (a key per "
    "user, its hash as the value)", v.text, reported_elsewhere=True)
AUTH_REALM = Annotation(
    "auth-realm", F.ACCESS, P, "basic auth filter (WWW-Authenticate)",
    "accepted and reported: Envoy's basic auth filter always sends realm=\"http://HOST/PATH\" "
    "(the request's URL) in WWW-Authenticate and cannot be given another realm",
    v.text, reported_elsewhere=True)
SATISFY = Annotation(
    "satisfy", F.ACCESS, S,
    "RBAC per route (shadow rules) marks clients in the source ranges; the auth filter, "
    "wrapped in a matcher, is skipped for them",
    "any: a client in whitelist-source-range/allowlist-source-range is admitted without "
    "authenticating, any other client must authenticate; all (the default): both are "
    "required; NetworkPolicy and loadBalancerSourceRanges rules and the deny list are "
    "always enforced", v.text, reported_elsewhere=True)
ENABLE_GLOBAL_AUTH = _unsupported(
    "enable-global-auth", F.ACCESS,
    f"kxds has no global external authentication; {_SECURITY}", narrows=True)
_CLIENT_CERT = "read by the TLS translator (kxds.translators.client_cert), which reports problems"
AUTH_TLS_SECRET: Annotation[str] = Annotation(
    "auth-tls-secret", F.ACCESS, P,
    "DownstreamTlsContext: client certificate validated against the CA (SDS "
    "validation_context), an SNI chain and route table per checked host",
    "the check belongs to the host, as in ingress-nginx; a client without a valid "
    "certificate is refused at the TLS handshake (nginx: 400) unless auth-tls-error-page "
    "names a URL; other SNI names answer "
    "the host 421; plain HTTP redirects to HTTPS or answers 403; a missing or malformed "
    "CA, or a ca.crl (revocation lists are not applied), makes the host refuse clients; "
    f"{_CLIENT_CERT}", reported_elsewhere=True)
AUTH_TLS_VERIFY_CLIENT: Annotation[str] = Annotation(
    "auth-tls-verify-client", F.ACCESS, S,
    "require_client_certificate; trust_chain_verification ACCEPT_UNTRUSTED",
    "on (required), optional (an invalid certificate is refused at the handshake), "
    "optional_no_ca, off; another value makes the host refuse clients",
    reported_elsewhere=True)
AUTH_TLS_VERIFY_DEPTH: Annotation[str] = Annotation(
    "auth-tls-verify-depth", F.ACCESS, S, "CertificateValidationContext max_verify_depth",
    "default 1; an invalid value makes the host refuse clients", reported_elsewhere=True)
AUTH_TLS_ERROR_PAGE: Annotation[str] = Annotation(
    "auth-tls-error-page", F.ACCESS, P,
    "route match tls_context (validated: false) -> redirect 302, first in the host",
    "an absolute http(s) URL only: a request without a valid certificate (verify on) or "
    "with an invalid one (optional) is redirected there; Envoy then lets every client "
    "through the handshake; a path of the host (nginx's internal redirect) is reported "
    "and not applied (refused at the handshake instead)", reported_elsewhere=True)
AUTH_TLS_PASS_CERTIFICATE: Annotation[str] = Annotation(
    "auth-tls-pass-certificate-to-upstream", F.ACCESS, S,
    "virtual host request header ssl-client-cert: %DOWNSTREAM_PEER_CERT%",
    "the URL-encoded PEM, as nginx's $ssl_client_escaped_cert; the checked hosts' "
    "backends also get ssl-client-subject-dn and ssl-client-issuer-dn, and "
    "ssl-client-verify: SUCCESS when the certificate is required; a client's own "
    "ssl-client-* headers are removed there", reported_elsewhere=True)
AUTH_TLS_MATCH_CN: Annotation[str] = Annotation(
    "auth-tls-match-cn", F.ACCESS, P,
    "per-route RBAC DENY policy, CEL condition on connection.subject_peer_certificate",
    "RE2 instead of PCRE, searched within the subject in RFC 2253 form (CN=name,O=org) as "
    "nginx's $ssl_client_s_dn; no match is answered 403 (body 'access denied'), so is "
    "a request without a certificate (verify optional); a pattern RE2 refuses makes the "
    "host refuse clients", reported_elsewhere=True)
# External authentication (read by kxds.translators.auth_external): the check
# goes through the edge Envoy's internal listener, which asks exactly the URL.
_EXT = "ext_authz per route (http_service) via an internal listener"
AUTH_URL = Annotation(
    "auth-url", F.ACCESS, P, _EXT,
    "the service is asked at exactly this URL (path and query) with the request's "
    "headers, X-Original-URL/-Method, X-Real-IP, X-Sent-From and X-Auth-Request-Redirect, "
    "never its body; 2xx admits, 401 and 403 refuse with that status, anything else "
    "(or the service down) refuses with 500; a Service host "
    "(<svc>.<ns>.svc[.cluster.local][:port]) is reached through its cluster (plain http "
    "only), any other host by DNS (https: TLS with SNI, the certificate not verified, as "
    "nginx); nginx variables ($host...) are refused; a URL kxds cannot use makes every "
    "route of the Ingress answer 503", v.text, narrows=True)
AUTH_METHOD = Annotation("auth-method", F.ACCESS, S, "check request :method", "",
                         v.choice("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
AUTH_SIGNIN = Annotation(
    "auth-signin", F.ACCESS, P, "the internal listener turns a 401 into a 302",
    "only $host, $scheme, $request_uri and $escaped_request_uri are replaced; an URL "
    "with other nginx variables is reported and not applied (401 stays)", v.text)
AUTH_SIGNIN_REDIRECT_PARAM = Annotation(
    "auth-signin-redirect-param", F.ACCESS, S, "the query parameter of the 302", "",
    v.header_name)
AUTH_RESPONSE_HEADERS = Annotation(
    "auth-response-headers", F.ACCESS, S, "http_service allowed_upstream_headers", "",
    v.header_names)
AUTH_REQUEST_REDIRECT = Annotation(
    "auth-request-redirect", F.ACCESS, S, "X-Auth-Request-Redirect of the check request",
    "", v.text)
AUTH_ALWAYS_SET_COOKIE = Annotation(
    "auth-always-set-cookie", F.ACCESS, P,
    "allowed_client_headers_on_success / allowed_client_headers: set-cookie",
    "the service's Set-Cookie always reaches the client when it admits (nginx: only for "
    "2xx and 3xx answers of the backend, unless this is true); true adds it to refusals",
    v.boolean)
AUTH_CACHE = tuple(_unsupported(
    n, F.ACCESS, "Envoy asks the service about every request, nothing is cached (access is "
    "never wider for it)") for n in ("auth-cache-key", "auth-cache-duration"))
AUTH_PROXY_SET_HEADERS = Annotation(
    "auth-proxy-set-headers", F.ACCESS, P, "http_service authorization_request headers_to_add",
    "`[namespace/]name` of a ConfigMap whose keys and values are added to the check request; "
    "values may use $remote_addr, $remote_port, $host and $http_host (both the Host header, "
    "port included), $request_uri, $request_method, $scheme and $http_<name>; any other "
    "variable, a bad header name, a header kxds sets on the check itself or a missing "
    "ConfigMap makes every route of the Ingress answer 503 (fail closed)", v.text)
AUTH_KEEPALIVE = tuple(Annotation(
    n, F.ACCESS, P, "Envoy's connection pool of the service's cluster",
    "accepted; Envoy keeps connections to the service alive and pools them itself, the "
    "numbers are not applied", v.text) for n in (
        "auth-keepalive", "auth-keepalive-requests", "auth-keepalive-share-vars",
        "auth-keepalive-timeout"))
ENABLE_MODSECURITY = _unsupported("enable-modsecurity", F.ACCESS,
                                  f"no web application firewall; {_SECURITY}", narrows=True)
ENABLE_OWASP_CORE_RULES = _unsupported("enable-owasp-core-rules", F.ACCESS,
                                       f"no web application firewall; {_SECURITY}",
                                       narrows=True)
MODSECURITY_TRANSACTION_ID = _unsupported("modsecurity-transaction-id", F.ACCESS,
                                          "no web application firewall")

# --- snippets (never interpreted) --------------------------------------------------------

SNIPPETS = tuple(
    _unsupported(n, F.SNIPPETS, f"nginx configuration is never interpreted; {_SECURITY}, "
                 "unless kxds runs with --ignore-snippets (then served without it)",
                 narrows=True)
    for n in ("configuration-snippet", "server-snippet", "auth-snippet", "modsecurity-snippet",
              "stream-snippet"))

# --- errors, default backends, mirroring -------------------------------------------------

CUSTOM_HTTP_ERRORS = Annotation(
    "custom-http-errors", F.ERRORS, P,
    "custom response filter per route (internal redirect to the error route)",
    "needs default-backend on the same Ingress (kxds has no global default backend: "
    "without it the codes are reported and the responses passed on); the error Service "
    "gets ingress-nginx's X-Code, X-Format, X-Original-URI, X-Namespace, X-Ingress-Name, "
    "X-Service-Name and X-Service-Port headers; the client gets the original status with "
    "the error Service's body, or the error Service's status when that is an error too; "
    "Envoy's own responses with those codes (503 without endpoints) are replaced too",
    v.status_codes)
DEFAULT_BACKEND = Annotation(
    "default-backend", F.ERRORS, P,
    "custom response filter per route (internal redirect to the error route)",
    "a Service of the Ingress's namespace, reached on its first port; it answers the "
    "custom-http-errors codes and 503, which Envoy answers when the backend has no ready "
    "endpoints (so the backend's own 503 goes there too)",
    v.text)
DISABLE_PROXY_INTERCEPT_ERRORS = _unsupported(
    "disable-proxy-intercept-errors", F.ERRORS, "errors are never intercepted",
    documented=False)
MIRROR_TARGET = Annotation(
    "mirror-target", F.ERRORS, P, "route request_mirror_policies",
    "an in-cluster http://<svc>.<ns>.svc[:port] target goes to that Service's endpoints, "
    "any other host to a DNS cluster (https: TLS with the host as SNI, not verified); the "
    "copy keeps the request's path (a target path other than $request_uri is reported); "
    "loopback, link-local and metadata addresses, and Services admitting only some "
    "clients, are refused", v.text)
MIRROR_REQUEST_BODY = Annotation(
    "mirror-request-body", F.ERRORS, P, "route request_mirror_policies",
    "'on' only: Envoy always mirrors the body ('off' is reported)", v.boolean)
MIRROR_HOST = Annotation("mirror-host", F.ERRORS, S,
                         "request_mirror_policies host_rewrite_literal",
                         "the copy's Host; default the target's host", v.text,
                         documented=False)

# --- buffering and nginx tuning ----------------------------------------------------------

_TUNING = ("an nginx buffer setting with no Envoy equivalent; Envoy streams bodies with "
           "its own flow control")
BUFFERS = tuple(_unsupported(n, F.BUFFERS, _TUNING) for n in (
    "client-body-buffer-size", "proxy-buffering", "proxy-buffers-number", "proxy-buffer-size",
    "proxy-max-temp-file-size", "proxy-request-buffering"))
HTTP2_PUSH_PRELOAD = _unsupported("http2-push-preload", F.OTHER,
                                  "HTTP/2 server push is obsolete and not done")

REGISTRY: dict[str, Annotation[Any]] = {}
"""Short name -> annotation, every one declared above."""


def _register() -> None:
    found: list[Annotation[Any]] = []
    for value in list(globals().values()):
        if isinstance(value, Annotation):
            found.append(value)
        elif isinstance(value, tuple) and value and all(isinstance(x, Annotation)
                                                        for x in value):
            found.extend(value)
    for a in found:
        if a.name in REGISTRY and REGISTRY[a.name] is not a:
            raise AssertionError(f"annotation {a.name} declared twice")
        REGISTRY[a.name] = a


_register()
