"""The relay of external authentication checks: a static internal listener of the edge
bootstrap, and the cluster that reaches it (see :mod:`kxds.envoy.ext_authz`).

Bootstrap data only (plain dicts): the bootstrap renderer imports it, and it
knows nothing of the IR.
"""

from __future__ import annotations

from typing import Any

RELAY = "kxds/ext-authz"
"""The relay's internal listener and the cluster that reaches it."""
HEADER = "x-kxds-auth-"
"""The prefix of the headers a route's check tells the relay what to do with."""

_LUA = """
local H = "x-kxds-auth-"
local M = "kxds.ext_authz"

-- nginx's $escaped_request_uri: space, # % & + ; ? and bytes outside printable ASCII.
local function escape(s)
  return (s:gsub(".", function(c)
    local b = c:byte()
    if b <= 32 or b >= 127 or c:find("[#%%&%+;%?]") then
      return string.format("%%%02X", b)
    end
  end))
end

local function replace(s, var, value)
  local out, at = "", 1
  while true do
    local i, j = s:find(var, at, true)
    if i == nil then return out .. s:sub(at) end
    out, at = out .. s:sub(at, i - 1) .. value, j + 1
  end
end

function envoy_on_request(handle)
  local hs = handle:headers()
  hs:replace(":path", hs:get(H .. "path"))
  hs:replace(":authority", hs:get(H .. "host"))
  local method = hs:get(H .. "method")
  if method ~= nil then hs:replace(":method", method) end
  local signin = hs:get(H .. "signin")
  if signin ~= nil then
    local meta = handle:streamInfo():dynamicMetadata()
    meta:set(M, "signin", signin)
    meta:set(M, "param", hs:get(H .. "signin-param") or "rd")
    meta:set(M, "url", hs:get("x-original-url") or "")
  end
  for _, name in ipairs({"path", "host", "method", "signin", "signin-param"}) do
    hs:remove(H .. name)
  end
end

local function signin_url(m)
  local scheme, host, uri = m.url:match("^([^:/]*)://([^/]*)(.*)$")
  scheme, host, uri = scheme or "http", host or "", uri or "/"
  local s = replace(m.signin, "$escaped_request_uri", escape(uri))
  s = replace(replace(replace(s, "$request_uri", uri), "$scheme", scheme), "$host", host)
  if not (s:find("?" .. m.param .. "=", 1, true) or s:find("&" .. m.param .. "=", 1, true)) then
    local sep = "?"
    if s:find("?", 1, true) then sep = "&" end
    s = s .. sep .. m.param .. "=" .. scheme .. "://" .. host .. escape(uri)
  end
  return s
end

function envoy_on_response(handle)
  local hs = handle:headers()
  local status = tonumber(hs:get(":status")) or 500
  if status >= 200 and status < 300 then
    hs:replace(":status", "200")
  elseif status == 401 then
    local m = handle:streamInfo():dynamicMetadata():get(M)
    if m ~= nil and m.signin ~= nil then
      hs:replace(":status", "302")
      hs:replace("location", signin_url(m))
    end
  elseif status ~= 403 then
    hs:replace(":status", "500")
  end
end
"""


def relay_listener() -> dict[str, Any]:
    """The relay's internal listener, as bootstrap data (see the module's docstring)."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                 "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ext_authz_relay",
        "route_config": {"name": RELAY, "virtual_hosts": [{
            "name": RELAY, "domains": ["*"], "routes": [{
                "match": {"prefix": "/"},
                "route": {"cluster_header": f"{HEADER}cluster", "timeout": "0s"},
                "request_headers_to_remove": [f"{HEADER}cluster"]}]}]},
        "http_filters": [
            {"name": "envoy.filters.http.lua", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": _LUA.lstrip()}}},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                "suppress_envoy_headers": True}}],
    }
    return {"name": RELAY, "internal_listener": {}, "filter_chains": [{"filters": [{
        "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}


def relay_cluster() -> dict[str, Any]:
    """The cluster ext_authz sends checks to: the relay listener, inside Envoy."""
    return {"name": RELAY, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
        "cluster_name": RELAY, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "envoy_internal_address": {"server_listener_name": RELAY}}}}]}]}}


INTERNAL_LISTENER_EXTENSION = {
    "name": "envoy.bootstrap.internal_listener",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.bootstrap."
                              "internal_listener.v3.InternalListener"}}
"""The bootstrap extension internal listeners need."""
