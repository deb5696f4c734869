default allow := false
allow if {
	every x in {"a"} - {"c"} { count([1 | x == "a"]) == 0 }
}
result := {"allow": allow, "reason": "r", "mask": [], "require_approval": null, "cache_ttl_seconds": 0}
