default allow := false
banned := input.user.id
tags contains banned if some banned in input.in
allow if not input.allowlist[banned]
result := {"allow": allow, "reason": "r", "mask": [], "require_approval": null, "cache_ttl_seconds": 0}
