role := input.user.role
default allow := false
allow if {
	role := "admin"
	input.user.mfa
} else if {
	count([1 | some role in input.roles]) >= 0
	role == "admin"
}
result := {"allow": allow, "reason": "r", "mask": [], "require_approval": null, "cache_ttl_seconds": 0}
