default allow := false
allow if {
	limit := 50
	not limit <
		# compared with the caller's risk score
		input.user.risk
}
result := {"allow": allow, "reason": "r", "mask": [], "require_approval": null, "cache_ttl_seconds": 0}
