"""IR -> Envoy resources (pure): one module per resource type or filter.

:mod:`.build` turns a whole IR into serialized resources; :mod:`.bootstrap`
renders Envoy bootstrap files for each role; :mod:`.dump` shows resources as
YAML like a config dump; :mod:`.validate` runs ``envoy --mode validate``.
"""
