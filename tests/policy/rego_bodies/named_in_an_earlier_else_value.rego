banned := input.user.id
default allow := false
allow := [banned] if {
	input.never
} else := true if {
	not input.allowlist[banned]
}
result := {"allow": allow, "reason": "r", "mask": [], "require_approval": null, "cache_ttl_seconds": 0}
