"""``python -m labelgate.audit.export``: the audit forwarder on its own."""

from labelgate.audit.export.cli import forwarder_cli

forwarder_cli()
