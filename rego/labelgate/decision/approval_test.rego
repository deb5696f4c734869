# Tests for approvals: what a grant unlocks, the second-line checks on approved_by, and the
# single requirement a call needing two approvals is held for.
package labelgate.decision_test

steward_call := call(["data-stewards"], [field("outputs.ssn", ["confidential"])])

break_glass_call := call(["break-glass"], [field("outputs.account_secret", ["restricted"])])

both_call := call(
	["data-stewards", "break-glass"],
	[field("outputs.ssn", ["confidential"]), field("outputs.account_secret", ["restricted"])],
)

approved_by(people) := {"state": "granted", "grant_id": "grant-1", "approved_by": people}

test_hold_happens_in_the_request_phase if {
	outcome(with_phase(steward_call, "request")) == held(owners_hold)
}

test_one_owner_approval_unlocks_confidential if {
	outcome(with_approval(steward_call, approved_by(["owner-1"]))) == allowed([], 0)
}

test_self_approval_does_not_count if {
	outcome(with_approval(steward_call, approved_by(["caller-1"]))) == held(owners_hold)
}

test_approval_by_the_user_behind_a_workload_certificate_does_not_count if {
	workload := object.union(steward_call, {"subject": {"attributes": {"also_verified": {"jwt": "olivia"}}}})
	outcome(with_approval(workload, approved_by(["olivia"]))) == held(owners_hold)
	outcome(with_approval(workload, approved_by(["owner-1"]))) == allowed([], 0)
}

test_granted_with_nobody_listed_does_not_count if {
	outcome(with_approval(steward_call, approved_by([]))) == held(owners_hold)
}

test_restricted_needs_two_distinct_approvers if {
	outcome(with_approval(break_glass_call, approved_by(["sec-1"]))) == held(security_hold)
	outcome(with_approval(break_glass_call, approved_by(["sec-1", "sec-1"]))) == held(security_hold)
	outcome(with_approval(break_glass_call, approved_by(["sec-1", "caller-1"]))) == held(security_hold)
	outcome(with_approval(break_glass_call, approved_by(["sec-1", "sec-2"]))) == allowed([], 0)
}

both_hold := object.union(security_hold, {"reason": "confidential, restricted data needs 2 approval(s) from security"})

test_two_approvals_needed_hold_for_the_stricter_one if {
	outcome(both_call) == held(both_hold)
	decide(both_call).reason == "held for approval: confidential, restricted data needs 2 approval(s) from security"
}

test_the_stricter_grant_unlocks_both if {
	outcome(with_approval(both_call, approved_by(["sec-1", "sec-2"]))) == allowed([], 0)
	outcome(with_approval(both_call, granted)) == allowed([], 0)
}

test_a_weaker_grant_never_unlocks_restricted if {
	# One approver satisfies the data-owners rule but not the security one: still held.
	outcome(with_approval(both_call, approved_by(["owner-1"]))) == held(security_hold)
}

test_restricted_hold_without_confidential_clearance if {
	c := call(["break-glass"], [field("outputs.ssn", ["confidential"]), field("outputs.account_secret", ["restricted"])])
	outcome(c) == held(security_hold)
	outcome(with_approval(c, granted)) == allowed([at("outputs.ssn", redact)], 0)
}

test_a_held_call_carries_no_masks if {
	c := call(["data-stewards"], [field("outputs.ssn", ["confidential"]), field("outputs.account_secret", ["restricted"])])
	outcome(c) == held(owners_hold)
}

test_an_unneeded_grant_is_not_mentioned_but_disables_caching if {
	c := with_approval(call(["analysts"], [field("outputs.name", ["internal"])]), granted)
	decide(c) == {
		"allow": true,
		"reason": "allowed; every field is visible",
		"mask": [],
		"require_approval": null,
		"cache_ttl_seconds": 0,
	}
}

# Grant options in the approvals table travel in require_approval; without them nothing changes.
widened_tables := object.union(data.labelgate.tables, {"approvals": object.union(
	data.labelgate.tables.approvals,
	{"data_owner_grant": object.union(
		data.labelgate.tables.approvals.data_owner_grant,
		{"grant_scope": "model", "single_use": true, "hold_seconds": 45},
	)},
)})

test_grant_options_from_the_tables_reach_the_requirement if {
	result := decide(steward_call) with data.labelgate.tables as widened_tables
	options := {"grant_scope": "model", "single_use": true, "hold_seconds": 45}
	result.require_approval == object.union(owners_hold, options)
}

test_without_grant_options_the_requirement_has_none if {
	not "grant_scope" in object.keys(decide(steward_call).require_approval)
	not "single_use" in object.keys(decide(steward_call).require_approval)
	not "hold_seconds" in object.keys(decide(steward_call).require_approval)
}

# A row budget in the approvals table travels in require_approval as it is.
test_a_row_budget_from_the_tables_reaches_the_requirement if {
	budgeted := object.union(data.labelgate.tables, {"approvals": object.union(
		data.labelgate.tables.approvals,
		{"data_owner_grant": object.union(data.labelgate.tables.approvals.data_owner_grant, {"row_budget": 3})},
	)})
	result := decide(steward_call) with data.labelgate.tables as budgeted
	result.require_approval == object.union(owners_hold, {"row_budget": 3})
}

test_without_a_row_budget_the_requirement_has_none if {
	not "row_budget" in object.keys(decide(steward_call).require_approval)
}
