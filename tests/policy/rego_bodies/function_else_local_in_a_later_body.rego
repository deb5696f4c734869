f(y) := 1 if {
	x := y
	input.never
} else := 2 if {
	count([1 | input.blocked[x]]) == 0
}
default allow := false
allow if f("nobody") == 2
result := {"allow": allow, "reason": "r", "mask": [], "require_approval": null, "cache_ttl_seconds": 0}
