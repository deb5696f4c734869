# METADATA
# title: benchmark allow-all policy
# description: |
#   The pure-proxy scenario of `make bench`: every call is allowed, nothing is masked, and
#   the answer may be cached for a minute. It measures what the gateway costs when the
#   policy has nothing to do. Never deploy it.
package labelgate.decision

# METADATA
# entrypoint: true
# description: The labelgate.v1 result; always allow, never mask.
result := {
	"allow": true,
	"reason": "allowed: benchmark allow-all policy",
	"mask": [],
	"require_approval": null,
	"cache_ttl_seconds": 60,
}
