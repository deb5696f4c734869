x := "z"
default allow := false
allow if {
	every x in {"a", "b"} { not x == "a" } with input as {"k": 1}
}
result := {"allow": allow, "reason": "r", "mask": [], "require_approval": null, "cache_ttl_seconds": 0}
