"""The policy bundle server: build, sign, validate and serve OPA bundles; watch the fleet.

Modules: ``build`` (deterministic tarball), ``signing`` (``.signatures.json`` as OPA
verifies it), ``source`` (snapshot, change detection, ``opa check``/``opa test``),
``publisher`` (watch loop and the served revision), ``fleet`` (status reports and
decision logs on disk), ``server`` (FastAPI), ``cli``.
"""
