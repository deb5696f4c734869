"""``python -m labelgate.audit``: the audit writer on its own (``labelgate audit writer``);
``python -m labelgate.audit verify|keygen ...`` runs that ``labelgate audit`` command."""

from labelgate.audit.cli import writer_cli

writer_cli()
