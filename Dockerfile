# kxds as a container: the control plane, and (with `python -m kxds.sandbox.echo`) the
# sandbox's echo backends. Envoy runs from the official envoyproxy/envoy image.
#
# The image holds kxds the way users install it: the wheel, with only its
# declared dependencies. `make test` builds the same wheel from the same files
# (this stage's COPY lines) and runs it from a fresh virtualenv (e2e/test_wheel.py).

# Build stage: the wheel, from the files that make the package.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kxds ./kxds
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
# The wheel (~200 KB) stays in a layer; a BuildKit-only bind mount would avoid
# that, but this builds with the classic builder too.
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/kxds-*.whl && rm -rf /wheels
# `kxds node-routing apply` (the per-node init container of deploy/transparent/)
# sets nodes up for transparent source addresses with ip and iptables.
RUN apt-get update && apt-get install -y --no-install-recommends iproute2 iptables \
    && rm -rf /var/lib/apt/lists/*
COPY examples /examples

# Not root: kxds needs no privilege (it binds only unprivileged ports).
USER 65532:65532
EXPOSE 18000 19100
ENTRYPOINT ["kxds"]
CMD ["serve", "--manifests", "/examples", "--xds-address", "0.0.0.0:18000", \
     "--admin-address", "0.0.0.0:19100"]
