default allow := false
allow if {
	"k" = x
	input.user.mfa
} else if {
	count([1 | input.blocked[x]]) == 0
}
result := {"allow": allow, "reason": "r", "mask": [], "require_approval": null, "cache_ttl_seconds": 0}
