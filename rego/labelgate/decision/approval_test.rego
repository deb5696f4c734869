# Tests for approvals: what a grant unlocks, the second-line checks on approved_by and on
# the approvers' groups, and the requirements a call needing two approvals is held for in turn.
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

# approvers: [person, groups] pairs, as the gateway lists the approvers of a call's grants.
approved_in(pairs) := {
	"state": "granted",
	"grant_id": "grant-1",
	"approved_by": sort({pair[0] | some pair in pairs}),
	"approvers": [{"id": pair[0], "groups": pair[1]} | some pair in pairs],
}

security_pair := [["sec-1", ["security"]], ["sec-2", ["security"]]]

owners_only_hold := object.union(owners_hold, {"reason": "confidential data needs 1 approval(s) from data-owners"})

# Review finding (t5): two security approvals met the security rule, and being two people
# they were counted for the data-owners rule too, releasing the SSN with no data owner's say.
test_the_stricter_grant_does_not_unlock_the_other_requirement if {
	outcome(with_approval(both_call, approved_in(security_pair))) == held(owners_only_hold)
	reason := decide(with_approval(both_call, approved_in(security_pair))).reason
	reason == "held for approval: confidential data needs 1 approval(s) from data-owners"
}

test_each_requirement_met_by_its_own_groups_unlocks_both if {
	approvers := array.concat(security_pair, [["owner-1", ["data-owners"]]])
	outcome(with_approval(both_call, approved_in(approvers))) == allowed([], 0)
}

test_a_weaker_grant_never_unlocks_restricted if {
	# One approver meets the data-owners rule but not the security one: held for it.
	outcome(with_approval(both_call, approved_in([["owner-1", ["data-owners"]]]))) == held(security_hold)
	owners := [["owner-1", ["data-owners"]], ["owner-2", ["data-owners"]]]
	outcome(with_approval(both_call, approved_in(owners))) == held(security_hold)
}

test_one_person_in_both_groups_counts_for_each_requirement if {
	approvers := [["sec-1", ["data-owners", "security"]], ["sec-2", ["security"]]]
	outcome(with_approval(both_call, approved_in(approvers))) == allowed([], 0)
}

test_a_person_named_by_two_grants_counts_once if {
	approvers := [["sec-1", ["security"]], ["sec-1", ["security"]], ["owner-1", ["data-owners"]]]
	outcome(with_approval(both_call, approved_in(approvers))) == held(security_hold)
}

test_the_subject_never_counts_among_the_approvers if {
	approvers := array.concat(security_pair, [["caller-1", ["data-owners"]]])
	outcome(with_approval(both_call, approved_in(approvers))) == held(owners_only_hold)
	outcome(with_approval(steward_call, approved_in([["caller-1", ["data-owners"]]]))) == held(owners_hold)
}

test_approvers_outside_the_groups_do_not_count if {
	outcome(with_approval(steward_call, approved_in([["sec-1", ["security"]]]))) == held(owners_hold)
	outcome(with_approval(steward_call, approved_in([]))) == held(owners_hold)
	outcome(with_approval(steward_call, approved_in([["owner-1", ["data-owners"]]]))) == allowed([], 0)
	one_in_security := [["sec-1", ["security"]], ["eve", ["analysts"]]]
	outcome(with_approval(break_glass_call, approved_in(one_in_security))) == held(security_hold)
	outcome(with_approval(break_glass_call, approved_in(security_pair))) == allowed([], 0)
}

# Without the approvers' groups the policy cannot tell which requirement a grant met: it
# counts only for a call one requirement gates.
test_without_approver_groups_a_grant_does_not_count_for_two_requirements if {
	outcome(with_approval(both_call, approved_by(["sec-1", "sec-2"]))) == held(both_hold)
	outcome(with_approval(both_call, approved_by(["owner-1"]))) == held(both_hold)
	outcome(with_approval(both_call, granted)) == held(both_hold)
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
