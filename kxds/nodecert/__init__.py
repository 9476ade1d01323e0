"""Short-lived certificates for per-node proxies, proven by ServiceAccount tokens.

:mod:`kxds.nodecert.review` checks a token with the TokenReview API,
:mod:`kxds.nodecert.issuer` is the HTTPS endpoint on kxds that signs a CSR
for the node the token proves, and :mod:`kxds.nodecert.client` is the
``kxds node-cert`` side that obtains and renews the node's certificate files.
"""
