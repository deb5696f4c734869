default allow := false
allow if {
	not input.user.role ==
		data.labelgate.decision.roles[input.user.id]
}
roles := {"u1": "admin"}
result := {"allow": allow, "reason": "r", "mask": [], "require_approval": null, "cache_ttl_seconds": 0}
