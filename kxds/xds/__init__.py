"""The xDS side of kxds: snapshot cache, gRPC server (SotW and delta), admin endpoint.

- :mod:`kxds.xds.cache`: ``NodeIdentity`` (who a proxy is, from its Envoy node),
  ``SnapshotCache`` (one immutable view per group, versions = content hashes).
- :mod:`kxds.xds.protocol`, :mod:`kxds.xds.sotw`, :mod:`kxds.xds.delta`: the
  per-stream state machines (subscriptions, ACK/NACK, rollback, ordering); no gRPC.
- :mod:`kxds.xds.server`: ``XdsServer``, ADS and the per-type services on ``grpc.aio``.
- :mod:`kxds.xds.limits`, :mod:`kxds.xds.admission`: what one client may cost
  (names, request size, streams, groups); :mod:`kxds.xds.retry`: which NACKs can
  pass, and the backoff before a rejected resource is offered again.
- :mod:`kxds.xds.tracker`, :mod:`kxds.xds.metrics`, :mod:`kxds.xds.admin`: what each
  node holds, Prometheus metrics, and the HTTP admin endpoint.
"""
