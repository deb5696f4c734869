"""The rows MLServer's test model serves (``mlserver_model.py``), and what a caller may see of
them. Pure and free of MLServer: the model runs in MLServer's own virtualenv and imports this
file from its model folder; the tests import it here."""

from __future__ import annotations

MODEL = "mls-profile"
# Tokens the model puts where no caller may see them: a response header, a reply parameter,
# the reply's id and model version. Nothing detects these: only the gateway's building of
# replies from classified parts keeps them out.
HEADER_TOKEN = "PLTheaderzq7wkd"
PARAMETER_TOKEN = "PLTparamvx3mqe"
ID_TOKEN = "PLTidnbr8ksu"
VERSION_TOKEN = "PLTversionj2hd"
# What the gateway's test catalog labels each output (the model's other side channels: none).
LABELS = {
    "customer_id": "public",
    "segment": "public",
    "notes": "internal",
    "ssn": "confidential",
    "account_secret": "restricted",
}


def ssn(customer_id: int) -> str:
    """A valid-looking SSN (area 100-899 except 666, group and serial never zero)."""
    return f"{101 + customer_id % 700:03d}-{11 + customer_id % 80:02d}-{1001 + customer_id:04d}"


def row(customer_id: int) -> dict[str, object]:
    return {
        "customer_id": customer_id,
        "segment": ("retail", "business", "private")[customer_id % 3],
        "ssn": ssn(customer_id),
        "notes": f"called about {ssn(customer_id)} on monday",
        "account_secret": f"sk_live_{customer_id:04d}mlsecret",
    }


def catalog_entries() -> list[dict[str, object]]:
    return [{"model": MODEL, "path": f"outputs.{name}", "labels": [label]} for name, label in LABELS.items()]
