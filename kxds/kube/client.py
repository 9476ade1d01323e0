"""JSON calls to the Kubernetes API through the official ``kubernetes`` client.

The official client loads the kubeconfig or the in-cluster service account and
handles authentication, TLS and proxies. kxds sends and receives plain JSON
dicts through its ``ApiClient`` instead of the generated model classes: the
objects go straight to :func:`kxds.kube.parse.parse_object` (the parser the
manifest loader uses), unknown fields survive a read-modify-write, and large
lists skip a second, model-based deserialization. Watches are read with the
client's own ``kubernetes.watch.Watch`` stream reader.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

# The kubernetes package takes about half a second to import: it is imported
# when a client is made, so that other commands and ``--help`` stay quick.

log = logging.getLogger(__name__)

Timeout = float | tuple[float, float]

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
"""Where Kubernetes mounts a pod's service-account token and the API's CA."""

__all__ = ["KubeClient", "WatchStream", "describe", "is_gone", "status_code"]


def _api_exception() -> type[Exception]:
    from kubernetes.client.exceptions import ApiException

    return ApiException


def status_code(error: BaseException) -> int | None:
    """The HTTP status of an API error, or None for transport errors."""
    status = getattr(error, "status", None)
    return status if isinstance(error, _api_exception()) and isinstance(status, int) else None


def describe(error: BaseException) -> str:
    """One line about a failed call (the client's own text spans headers and body)."""
    if isinstance(error, _api_exception()):
        return f"HTTP {getattr(error, 'status', '?')} {getattr(error, 'reason', '')}"
    return f"{type(error).__name__}: {error}"


def is_gone(status: Mapping[str, Any]) -> bool:
    """A ``Status`` saying the requested resourceVersion is too old (HTTP 410)."""
    return status.get("code") == 410


class WatchStream:
    """One watch request: iterate ``(type, object)`` pairs; :meth:`stop` from any thread."""

    def __init__(self, watch: Any, events: Iterator[dict[str, Any]]) -> None:
        self._watch = watch
        self._events = events

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        try:
            for event in self._events:
                yield str(event.get("type")), event.get("raw_object") or {}
        except _api_exception() as e:
            # The reader turns an ERROR event into ApiException(status=code):
            # give it back as the Status it was, so 410 is handled in one place.
            if status_code(e) != 410:
                raise
            yield "ERROR", {"kind": "Status", "code": 410, "message": describe(e)}

    def stop(self) -> None:
        self._watch.stop()


def _tuned(configuration: Any) -> Any:
    # One long-lived watch per kind, plus status, lease and event writes.
    configuration.connection_pool_maxsize = 32
    # Failures surface at once: callers retry with their own backoff and
    # jitter, instead of urllib3 retrying three times back to back.
    configuration.retries = False
    return configuration


class KubeClient:
    """Raw-JSON requests with the official client's configuration and connection pool."""

    def __init__(self, api_client: Any, timeout: Timeout = (5.0, 30.0)) -> None:
        self.api = api_client
        self.timeout = timeout

    @classmethod
    def from_config(cls, kubeconfig: str | None = None, in_cluster: bool = False,
                    context: str | None = None,
                    service_account: Path = SERVICE_ACCOUNT) -> KubeClient:
        """A client from a kubeconfig file, or from the pod's service account.

        In cluster: the API's address from ``KUBERNETES_SERVICE_HOST``/``_PORT``,
        its CA and the bearer token from the ``service_account`` directory; the
        token is re-read as the kubelet rotates it (bound tokens expire).
        """
        from kubernetes import client as k8s
        from kubernetes import config as k8s_config
        from kubernetes.config.incluster_config import InClusterConfigLoader

        configuration = k8s.Configuration()
        if in_cluster:
            InClusterConfigLoader(  # type: ignore[no-untyped-call]
                token_filename=str(service_account / "token"),
                cert_filename=str(service_account / "ca.crt"),
            ).load_and_set(configuration)
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration)
        return cls(k8s.ApiClient(_tuned(configuration)))

    @classmethod
    def for_url(cls, url: str) -> KubeClient:
        """A client for an unauthenticated test server."""
        from kubernetes import client as k8s

        return cls(k8s.ApiClient(_tuned(k8s.Configuration(host=url))))

    def _call(self, method: str, path: str, query: Mapping[str, str] | None,
              body: Any, content_type: str, timeout: Timeout | None) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        params = self.api.param_serialize(
            method, path, query_params=list((query or {}).items()), header_params=headers,
            body=body, auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*params, _request_timeout=timeout or self.timeout)
        if not 200 <= response.status <= 299:
            response.read()
            raise _api_exception().from_response(  # type: ignore[attr-defined]
                http_resp=response, body=None, data=None)
        return response

    def request(self, method: str, path: str, *, query: Mapping[str, str] | None = None,
                body: Any = None, content_type: str = "application/json",
                timeout: Timeout | None = None) -> dict[str, Any]:
        """One request; the JSON reply. Non-2xx raises ``ApiException``."""
        response = self._call(method, path, query, body, content_type, timeout)
        data = response.read()
        result = json.loads(data) if data else {}
        assert isinstance(result, dict)
        return result

    def watch(self, path: str, resource_version: str, *, field_selector: str = "",
              timeout_seconds: int = 300, request_timeout: Timeout | None = None) -> WatchStream:
        """Open a watch from ``resource_version`` with bookmarks."""

        # The watch reader calls this with watch=True, _preload_content=False and
        # the keyword arguments below; it needs the raw urllib3 response.
        def open_stream(**kw: Any) -> Any:
            query = {"watch": "true", "allowWatchBookmarks": "true",
                     "resourceVersion": str(kw["resource_version"]),
                     "timeoutSeconds": str(kw["timeout_seconds"])}
            if field_selector:
                query["fieldSelector"] = field_selector
            return self._call("GET", path, query, None, "", kw.get("_request_timeout")).response

        from kubernetes import watch as k8s_watch

        watcher = k8s_watch.Watch()  # type: ignore[no-untyped-call]
        events = watcher.stream(  # type: ignore[no-untyped-call]
            open_stream, resource_version=resource_version, timeout_seconds=timeout_seconds,
            _request_timeout=request_timeout or self.timeout)
        return WatchStream(watcher, events)
