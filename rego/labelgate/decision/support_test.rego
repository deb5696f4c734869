# Test support for package labelgate.decision: builders for labelgate.v1 inputs and for the
# results the default tables should produce. Only helpers live here; the tests are in the
# other *_test.rego files of this package.
package labelgate.decision_test

base_input := {
	"version": "labelgate.v1",
	"phase": "response",
	"subject": {"id": "caller-1", "groups": [], "auth": "jwt"},
	"request": {
		"service": "inference.GRPCInferenceService",
		"method": "/inference.GRPCInferenceService/ModelInfer",
		"model": "customer-profile",
		"requested_outputs": [],
	},
	"fields": [],
	"labels": [],
	"approval": {"state": "none"},
	"context": {"time_ns": 1700000000000000000},
}

field(path, labels) := {"path": path, "labels": labels, "sources": {label: ["catalog"] | some label in labels}}

# A well-formed call by a subject in `groups` that returns `fields`.
call(groups, fields) := object.union(base_input, {
	"subject": {"id": "caller-1", "groups": groups, "auth": "jwt"},
	"fields": fields,
	"labels": sort({label | some item in fields; some label in item.labels}),
})

with_phase(call_input, phase) := object.union(call_input, {"phase": phase})

with_approval(call_input, approval) := object.union(call_input, {"approval": approval})

requesting(call_input, names) := object.union(call_input, {"request": {"requested_outputs": names}})

granted := {"state": "granted", "grant_id": "grant-1"}

decide(call_input) := result if {
	result := data.labelgate.decision.result with input as call_input
}

# The result without its reason, for comparisons where the wording is tested elsewhere.
outcome(call_input) := object.remove(decide(call_input), ["reason"])

redact := {"strategy": "redact", "params": {}}

partial_last4 := {"strategy": "partial", "params": {"keep_last": 4}}

nulled := {"strategy": "null", "params": {}}

owners_hold := {
	"approver_groups": ["data-owners"],
	"min_approvals": 1,
	"grant_ttl_seconds": 900,
	"reason": "confidential data needs 1 approval(s) from data-owners",
}

security_hold := {
	"approver_groups": ["security"],
	"min_approvals": 2,
	"grant_ttl_seconds": 900,
	"reason": "restricted data needs 2 approval(s) from security",
}

allowed(masks, ttl) := {"allow": true, "mask": masks, "require_approval": null, "cache_ttl_seconds": ttl}

held(requirement) := {"allow": false, "mask": [], "require_approval": requirement, "cache_ttl_seconds": 0}

denied(ttl) := {"allow": false, "mask": [], "require_approval": null, "cache_ttl_seconds": ttl}

at(path, mask) := object.union({"path": path}, mask)
