default allow := false
or := input.xs
f(banned) := 1 if some x in or
allow if {
	not input.allowlist[banned]
}
banned := input.user.id
result := {"allow": allow, "reason": "r", "mask": [], "require_approval": null, "cache_ttl_seconds": 0}
