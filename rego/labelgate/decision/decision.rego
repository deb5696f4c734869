# METADATA
# title: labelgate.v1 decision
# description: |
#   The entrypoint the gateway queries for every call, once per phase: may the verified
#   subject receive these classified fields, and which must be masked? Precedence, most
#   severe first, and each case stated in full so no case can fall through to another:
#   malformed input (deny) > an opaque method not allowed (deny) > a model admin method
#   (RepositoryModelLoad/Unload) by a subject outside its groups (deny) > a restricted output
#   requested by name without clearance (deny, asking is the signal) > an approval-gated
#   field without a grant (hold) > allow with masks. Anything else, including broken
#   tables, leaves the default: deny.
package labelgate.decision

# The tables are JSON data, which Regal cannot resolve (see .regal/config.yaml).
import data.labelgate.tables

# METADATA
# entrypoint: true
# description: The labelgate.v1 result; always defined, and valid against result.json.
default result := {
	"allow": false,
	"reason": "denied: the policy could not reach a decision",
	"mask": [],
	"require_approval": null,
	"cache_ttl_seconds": 0,
}

result := deny(malformed_reason, tables.cache_ttl_seconds.malformed) if not well_formed

result := deny(opaque_reason, cache_ttl) if {
	well_formed
	opaque_denied
}

result := deny(model_admin_reason, cache_ttl) if {
	well_formed
	not opaque_denied
	model_admin_denied
}

result := deny(requested_reason, cache_ttl) if {
	classifiable
	count(denied_outputs) > 0
}

result := {
	"allow": false,
	"reason": concat("", ["held for approval: ", require_approval.reason]),
	"mask": [],
	"require_approval": require_approval,
	"cache_ttl_seconds": tables.cache_ttl_seconds.approval,
} if {
	classifiable
	count(denied_outputs) == 0
	count(pending_labels) > 0
}

result := {
	"allow": true,
	"reason": allowed_reason,
	"mask": masks,
	"require_approval": null,
	"cache_ttl_seconds": cache_ttl,
} if {
	classifiable
	count(denied_outputs) == 0
	count(pending_labels) == 0
}

# Well formed, its fields are known (or its opaque method is allowed), and a model admin
# method comes from one of its groups.
classifiable if {
	well_formed
	not opaque_denied
	not model_admin_denied
}

# A denied or held call returns nothing, so it carries no masks.
deny(reason, ttl) := {
	"allow": false,
	"reason": reason,
	"mask": [],
	"require_approval": null,
	"cache_ttl_seconds": ttl,
}

malformed_reason := concat("", ["denied: malformed policy input: ", concat("; ", sorted(problems))])

# Every field not visible in clear gets exactly one mask, in path order.
masks := [{"path": path, "strategy": mask.strategy, "params": mask.params} |
	# regal ignore:prefer-some-in-iteration
	some path in sort([masked_path | masked_fields[masked_path]])
	mask := masked_fields[path]
]

# path -> mask for every field whose governing label is not visible in clear.
# regal ignore:prefer-set-or-object-rule
masked_fields := {entry[0]: mask | some entry in path_entries; mask := label_mask[entry[1]]}

allowed_reason := concat("", ["allowed", grant_note, "; ", mask_note])

default grant_note := ""

grant_note := " under an approval grant" if grant_used

mask_note := "every field is visible" if count(masks) == 0

else := sprintf("%d field(s) masked", [count(masks)])

# Results that depend on a grant must not outlive it.
cache_ttl := tables.cache_ttl_seconds.approval if input.approval.state == "granted"

else := tables.cache_ttl_seconds.plain
