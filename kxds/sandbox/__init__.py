"""The sandbox: kxds, a real Envoy and echo backends as plain local processes.

:mod:`.run` is ``kxds sandbox``, :mod:`.https` its HTTPS host with a generated
certificate, :mod:`.echo` the HTTP/TCP/UDP echo backends (``python -m kxds.sandbox.echo``)
that the sandbox, docker-compose and the end-to-end tests run.
"""
