# Tests for the replay phase: what a viewer of a recorded call is shown. The viewer is the
# subject; the recorded call's caller is in context.recorded_call and does not matter.
package labelgate.decision_test

recorded_call := {
	"subject": {"id": "jwt:labelgate-dev#bea", "groups": ["break-glass"], "auth": "jwt"},
	"request_id": "req-1",
	"session_id": "s~0123",
	"time": "2026-01-01T09:00:00.000Z",
	"outcome": "allow",
	"labels": ["restricted"],
	"requested_outputs": ["account_secret"],
}

profile := [
	field("outputs.account_secret", ["restricted"]),
	field("outputs.customer_id", ["public"]),
	field("outputs.name", ["internal"]),
	field("outputs.ssn", ["confidential"]),
]

# A replay of the profile call by a viewer in `groups`.
replay_by(groups) := object.union(with_phase(call(groups, profile), "replay"), {"context": {
	"time_ns": 1700000000000000000,
	"recorded_call": recorded_call,
}})

replayed(masks, hold) := {"allow": true, "mask": masks, "require_approval": hold, "cache_ttl_seconds": 60}

# One row per viewer: the masks and the approval the replay names.
replay_rows := [
	{
		"viewer": ["auditors"],
		"masks": [at("outputs.account_secret", nulled), at("outputs.name", redact), at("outputs.ssn", redact)],
		"hold": null,
	},
	{
		"viewer": ["analysts", "auditors"],
		"masks": [at("outputs.account_secret", nulled), at("outputs.ssn", partial_last4)],
		"hold": null,
	},
	{
		# Confidential in clear needs an approval: masked (null) until then, and the approval named.
		"viewer": ["auditors", "data-stewards"],
		"masks": [at("outputs.account_secret", nulled), at("outputs.ssn", nulled)],
		"hold": owners_hold,
	},
	{
		"viewer": ["auditors", "break-glass"],
		"masks": [at("outputs.account_secret", nulled), at("outputs.name", redact), at("outputs.ssn", redact)],
		"hold": security_hold,
	},
]

replay_failures contains concat(", ", row.viewer) if {
	some row in replay_rows
	outcome(replay_by(row.viewer)) != replayed(row.masks, row.hold)
}

test_every_replay_row if {
	count(replay_failures) == 0
}

test_a_replay_outside_the_viewer_groups_is_denied if {
	every groups in [[], ["analysts"], ["break-glass", "data-stewards"]] {
		outcome(replay_by(groups)) == denied(60)
	}
	refused := decide(replay_by(["analysts"])).reason
	refused == "denied: caller-1 may not view recorded calls (not in a replay viewer group)"
}

test_replay_reasons if {
	decide(replay_by(["auditors"])).reason == "allowed for replay; 3 field(s) masked"
	held_reason := decide(replay_by(["auditors", "data-stewards"])).reason
	held_reason == concat("", [
		"allowed for replay; 2 field(s) masked; in clear only after approval: ",
		"confidential data needs 1 approval(s) from data-owners",
	])
	public_only := object.union(replay_by(["auditors"]), {
		"fields": [field("outputs.segment", ["public"])],
		"labels": ["public"],
	})
	decide(public_only).reason == "allowed for replay; every field is visible"
}

test_a_replay_never_uses_a_grant if {
	granted_replay := with_approval(replay_by(["auditors", "data-stewards"]), granted)
	outcome(granted_replay).mask == [at("outputs.account_secret", nulled), at("outputs.ssn", nulled)]
	outcome(granted_replay).require_approval == owners_hold
}

test_a_replay_of_a_model_admin_call_is_not_a_model_admin_call if {
	load_method := "/inference.GRPCInferenceService/RepositoryModelLoad"
	load := object.union(replay_by(["auditors"]), {"request": {"method": load_method}})
	outcome(load).allow == true
}

test_a_replay_of_an_opaque_call_needs_the_method_allowed if {
	opaque := object.union(replay_by(["auditors"]), {"request": {"opaque": true}, "fields": [], "labels": []})
	outcome(opaque) == denied(60)
}

test_a_malformed_replay_is_denied if {
	no_subject := object.union(replay_by(["auditors"]), {"subject": null})
	outcome(no_subject) == denied(0)
}
