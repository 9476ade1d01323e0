# kxds as a container: the control plane, and (with `python -m kxds.sandbox.echo`) the
# sandbox's echo backends. Envoy runs from the official envoyproxy/envoy image.
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY kxds ./kxds
RUN pip install --no-cache-dir .
COPY examples /examples
WORKDIR /

# Not root: kxds needs no privilege (it binds only unprivileged ports).
USER 65532:65532
EXPOSE 18000 19100
ENTRYPOINT ["kxds"]
CMD ["serve", "--manifests", "/examples", "--xds-address", "0.0.0.0:18000", \
     "--admin-address", "0.0.0.0:19100"]
