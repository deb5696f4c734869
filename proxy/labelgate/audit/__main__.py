"""``python -m labelgate.audit``: the audit writer on its own (``labelgate audit-writer``)."""

from labelgate.audit.cli import writer_cli

writer_cli()
