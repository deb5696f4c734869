admin := input.user.admin
default allow := false
allow if admin = true
result := {"allow": allow, "reason": "r", "mask": [], "require_approval": null, "cache_ttl_seconds": 0}
