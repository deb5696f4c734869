default allow := false
allow if not # the caller's risk score
	input.user.risk > 50
result := {"allow": allow, "reason": "r", "mask": [], "require_approval": null, "cache_ttl_seconds": 0}
