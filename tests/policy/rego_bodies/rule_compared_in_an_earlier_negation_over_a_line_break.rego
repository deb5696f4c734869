banned := input.user.id
default allow := false
allow if {
	not
		banned = "nobody"
	not input.denied[banned]
}
result := {"allow": allow, "reason": "r", "mask": [], "require_approval": null, "cache_ttl_seconds": 0}
