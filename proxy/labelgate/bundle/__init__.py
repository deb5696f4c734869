"""The policy bundle server: build, sign, validate and serve OPA bundles; watch the fleet.

Modules: ``build`` (deterministic tarball), ``signing`` (``.signatures.json`` as OPA
verifies it), ``source`` (snapshot, change detection, ``opa check``/``opa test``),
``publisher`` (watch loop and the served revision), ``access`` (instance and reader
credentials, the ``Host`` check), ``reports`` (strict reading of what OPA posts), ``fleet``
(status reports and decision logs on disk, retention), ``server`` (FastAPI), ``cli``.
Its threats and their mitigations: ``docs/THREAT-MODEL.md``.
"""
