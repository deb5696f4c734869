"""The admin web app (health, metrics, the approvals API and inbox, session pages) and the
standalone approvals server. It sits above ``approvals`` and ``recording``, whose routes and
pages it mounts, and below ``gateway``, which serves it on its admin listener."""
