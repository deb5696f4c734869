"""``make bench``: the gateway measured against direct calls, in numbers and charts.

Every scenario starts real processes on loopback (demo backend, gateway, OPA), drives
them with ghz, and reports each figure next to a baseline from the same run, because the
machines are shared and noisy. Modules: ``plan`` (durations), ``procs`` and ``stack``
(processes, ``postgres`` for the approvals replicas), ``load`` (ghz), ``context`` (what
scenarios share), one module per scenario group (``datapath``, ``engines``, ``detectors``,
``audit``, ``approvals``), ``figures`` and ``targets`` (what is reported), ``report``,
``charts``, ``profile``, ``machine``, ``runner``.
"""
