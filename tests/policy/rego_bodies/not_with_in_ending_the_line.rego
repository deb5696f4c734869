default allow := false
allow if {
	role := "guest"
	not role in
		input.user.blocked_roles
}
result := {"allow": allow, "reason": "r", "mask": [], "require_approval": null, "cache_ttl_seconds": 0}
