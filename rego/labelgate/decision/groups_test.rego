# Tests for callers in several groups: each label gets the most permissive treatment any of
# the caller's groups offers, and ties break the same way every time.
package labelgate.decision_test

ssn := field("outputs.ssn", ["confidential"])

secret := field("outputs.account_secret", ["restricted"])

name := field("outputs.name", ["internal"])

test_analyst_and_steward_is_held_rather_than_partially_masked if {
	# Seeing after approval beats a partial mask: the steward route is the most permissive.
	outcome(call(["analysts", "data-stewards"], [ssn])) == held(owners_hold)
}

test_analyst_and_steward_with_grant_sees_confidential if {
	outcome(with_approval(call(["analysts", "data-stewards"], [ssn]), granted)) == allowed([], 0)
}

test_group_order_does_not_matter if {
	outcome(call(["data-stewards", "analysts"], [ssn])) == outcome(call(["analysts", "data-stewards"], [ssn]))
}

test_unknown_group_adds_nothing if {
	outcome(call(["sales", "analysts"], [ssn, name])) == allowed([at("outputs.ssn", partial_last4)], 60)
}

test_break_glass_analyst_sees_internal_and_is_held_for_restricted if {
	outcome(call(["analysts", "break-glass"], [name, secret])) == held(security_hold)
}

test_break_glass_analyst_with_grant_sees_restricted_and_partial_confidential if {
	c := with_approval(call(["analysts", "break-glass"], [name, ssn, secret]), granted)
	outcome(c) == allowed([at("outputs.ssn", partial_last4)], 0)
}

# Tables with two groups whose offers tie or differ, to pin down the choice.
competing_tables := object.union(data.labelgate.tables, {"labels": {"confidential": {"groups": {
	"auditors": {"mask": {"strategy": "partial", "params": {"keep_last": 2}}},
	"billing": {"mask": {"strategy": "hash", "params": {}}},
	"support": {"mask": {"strategy": "partial", "params": {"keep_last": 6}}},
}}}})

partial_last2 := {"strategy": "partial", "params": {"keep_last": 2}}

decide_competing(groups) := result if {
	result := outcome(call(groups, [ssn])) with data.labelgate.tables as competing_tables
}

test_more_revealing_mask_wins if {
	decide_competing(["billing", "auditors"]) == allowed([at("outputs.ssn", partial_last2)], 60)
}

test_hash_beats_redact if {
	decide_competing(["billing"]) == allowed([at("outputs.ssn", {"strategy": "hash", "params": {}})], 60)
}

test_equal_offers_break_ties_by_group_name if {
	decide_competing(["support", "auditors"]) == allowed([at("outputs.ssn", partial_last2)], 60)
}

test_group_offer_beats_an_equal_default if {
	tables := object.union(data.labelgate.tables, {"labels": {"internal": {"groups": {
		"interns": {"mask": {"strategy": "redact", "params": {"replacement": "***"}}},
	}}}})
	c := call(["interns"], [name])
	stars := {"strategy": "redact", "params": {"replacement": "***"}}
	outcome(c) == allowed([at("outputs.name", stars)], 60) with data.labelgate.tables as tables
}

test_fewer_approvals_win_between_two_approval_routes if {
	tables := object.union(data.labelgate.tables, {"labels": {"restricted": {"groups": {
		"incident-leads": {"see": true, "approval": "data_owner_grant"},
	}}}})
	c := call(["break-glass", "incident-leads"], [secret])
	owners_for_restricted := object.union(owners_hold, {"reason": "restricted data needs 1 approval(s) from data-owners"})
	outcome(c) == held(owners_for_restricted) with data.labelgate.tables as tables
}
