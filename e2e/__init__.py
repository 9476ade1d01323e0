"""End-to-end tests: kxds, the real Envoy and echo backends on loopback."""
