# METADATA
# title: labelgate.v1 decision
# description: |
#   The entrypoint the gateway queries for every call, once per phase: may the verified
#   subject receive these classified fields, and which must be masked? Precedence, most
#   severe first, and each case stated in full so no case can fall through to another:
#   malformed input (deny) > an opaque method not allowed (deny) > a restricted output
#   requested by name without clearance (deny, asking is the signal) > an approval-gated
#   field without a grant (hold) > allow with masks. Anything else, including broken
#   tables, leaves the default: deny.
package labelgate.decision

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

# Well formed, and its fields are known (or its opaque method is allowed).
classifiable if {
	well_formed
	not opaque_denied
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
masks := [mask_for(path) | some path in sorted(masked_paths)]

masked_paths contains path if {
	some path, label in path_label
	not visible_labels[label]
}

mask_for(path) := {"path": path, "strategy": mask.strategy, "params": mask.params} if {
	mask := label_mask[path_label[path]]
}

label_mask[label] := {"strategy": mask.strategy, "params": object.get(mask, "params", {})} if {
	some label in governing_labels
	not visible_labels[label]
	mask := label_treatment[label].mask
}

# A label without a usable mask (broken tables) is nulled rather than shown.
label_mask[label] := {"strategy": "null", "params": {}} if {
	some label in governing_labels
	not visible_labels[label]
	not label_treatment[label].mask
}

allowed_reason := concat("", ["allowed", grant_note, "; ", mask_note])

default grant_note := ""

grant_note := " under an approval grant" if grant_used

mask_note := "every field is visible" if count(masks) == 0

else := sprintf("%d field(s) masked", [count(masks)])

# Results that depend on a grant must not outlive it.
cache_ttl := tables.cache_ttl_seconds.approval if input.approval.state == "granted"

else := tables.cache_ttl_seconds.plain
