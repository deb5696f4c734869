banned := input.user.id
default allow := false
allow if {
	every v in input.list { v != [banned] }
	not input.allowlist[banned]
}
result := {"allow": allow, "reason": "r", "mask": [], "require_approval": null, "cache_ttl_seconds": 0}
