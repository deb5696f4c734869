risk := input.user.risk
default allow := false
allow if {
	not risk = 0
	not risk > 50
}
result := {"allow": allow, "reason": "r", "mask": [], "require_approval": null, "cache_ttl_seconds": 0}
