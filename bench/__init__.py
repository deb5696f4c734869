"""``make bench``: the gateway measured against direct calls, in numbers and charts.

Measurement code, never shipped: it lives beside ``tests/``, outside the ``labelgate``
package, and runs from the repository root (``python -m bench``). Processes, PostgreSQL
and the ``opa`` binary come from ``tests.support``, which the tests use too.

Every scenario starts real processes on loopback (demo backend, gateway, OPA), drives
them with ghz, and reports each figure next to a baseline from the same run, because the
machines are shared and noisy. Modules: ``plan`` (durations), ``stack`` (the processes
under test; ``procs`` for what the harness adds to ``tests.support.procs``), ``load``
(ghz), ``context`` (what scenarios share), one module per scenario group (``datapath``,
``engines`` over ``policy_engines``, ``detectors``, ``audit``, ``approvals``), ``figures``
and ``targets`` (what is reported), ``report``, ``charts``, ``profile``, ``machine``,
``runner``.

Run by hand, outside ``make bench``: ``profile_policy`` (where a decision's time goes, per
engine), ``profile_response`` (CPU per stage of the response path), ``profile_pipeline``
(CPU per call of the whole pipeline in process, without gRPC), ``detector_throughput``,
``audit_writer_modes`` (group commit against fsync per record), ``audit_delay_ab`` (the audit
commit delay against none, same run) and ``measure_latency`` (added latency with an
in-process client).
"""
