default allow := false
n := 0 if {
	x := "nobody"
	input.never
} else := count([1 | input.blocked[x]]) if {
	true
}
allow if n == 0
result := {"allow": allow, "reason": "r", "mask": [], "require_approval": null, "cache_ttl_seconds": 0}
