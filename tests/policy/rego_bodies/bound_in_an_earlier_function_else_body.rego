banned := input.user.id
ok(x) := 1 if { banned := x; false } else := 2 if { not input.allowlist[banned] }
default allow := false
allow if ok(1) == 2
result := {"allow": allow, "reason": "r", "mask": [], "require_approval": null, "cache_ttl_seconds": 0}
