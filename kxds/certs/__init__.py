"""X.509 certificates: checking those users give (:mod:`.check`), making our own (:mod:`.make`)."""
