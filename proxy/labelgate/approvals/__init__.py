"""Just-in-time approvals: hold a call the policy gates, ask the right people, grant for a while.

- ``ApprovalService`` (``service.py``): requests, votes, grants, expiry; SQLite or PostgreSQL.
- ``HoldForApproval`` (``stage.py``): the gateway's hold stage on top of it.
- ``api.py`` (REST), ``web.py`` (inbox), ``notify.py`` (webhooks), ``cli.py`` (terminal).
- ``events.record`` / ``events.add_sink``: every state change as one structured event.
"""
