prefixed(_, _) := true
is_staff if startswith(input.user.email, "staff@")
default allow := false
allow if is_staff with startswith as prefixed
result := {"allow": allow, "reason": "r", "mask": [], "require_approval": null, "cache_ttl_seconds": 0}
