# Tests that the decision is monotone in a field's labels: adding a label to a field never
# shows it more, for every group (and combination of groups) the tables name, with and
# without grants, on calls, requests by name and replays. The tables themselves are not
# monotone in rank (break-glass sees restricted after two security approvals, but internal
# and confidential only redacted), so a field must not be decided by its top-ranked label
# alone. Then the three ways an extra label reached a field in review (2026-12-06).
package labelgate.decision_test

unknown := "not-in-the-tables"

table_groups contains group if {
	some spec in data.labelgate.tables.labels
	some group, _ in spec.groups
}

# No group, each group, and all of them. (A caller's labels are each treated as its most
# permissive group allows, before the field combines them, so pairs of groups add nothing
# the whole set does not; they also cost OPA's traced tests too much time.)
group_sets contains []

group_sets contains [group] if some group in table_groups

group_sets contains sort(table_groups)

labels_under_test := object.keys(data.labelgate.tables.labels) | {unknown}

# No grant, a grant every requirement counts (two security approvers) and one only the
# one-approval requirements count (a single owner). A grant without approved_by counts like
# the second, a self-approval like none (approval_test.rego).
approval_states := [
	{"state": "none"},
	approved_by(["sec-1", "sec-2"]),
	approved_by(["owner-1"]),
]

# The ways a field reaches the policy: in a response, asked for by name (every output of
# the call is), in a replay (by an auditor in the same groups).
modes := ["response", "requested", "replay"]

# A decision costs OPA's tests about a millisecond, so rather than one call per field, one
# call per mode, groups and approval carries every label alone and every pair of labels,
# each as its own field (the path spells its labels), and each field's fate is read from the
# rules the result is made of: held when any of its labels waits for an approval (not on a
# replay, which masks those), denied when asked for and refused, else masked or in clear.
# Labels decide fields independently of each other, so this is the same as one call each.
single_fields := [field(concat("+", ["outputs.one", label]), [label]) | some label in labels_under_test]

pair_fields := [field(pair_path(base, added), [base, added]) |
	some base in labels_under_test
	some added in labels_under_test
	base < added
]

# The same pairs as a path listed twice, one label each.
twice_fields := [field(pair_path(base, added), [label]) |
	some base in labels_under_test
	some added in labels_under_test
	base < added
	some label in [base, added]
]

pair_path(base, added) := concat("+", ["outputs.two", base, added])

everything(mode, groups, approval, fields) := with_approval(
	case_of(mode, call(viewers(mode, groups), fields), [substring(item.path, 8, -1) | some item in fields]),
	approval,
)

case_of(mode, call_input, names) := requesting(call_input, names) if {
	mode == "requested"
} else := with_phase(call_input, "replay") if {
	mode == "replay"
} else := call_input

viewers(mode, groups) := array.concat(groups, ["auditors"]) if mode == "replay"

else := groups

# path -> how much of the field the call releases now: nothing (held or denied) -1, a mask
# its permissiveness, in clear 1000.
fates(mode, groups, approval, fields) := {item.path: fate(mode, item, parts) | some item in fields} if {
	parts := parts_of(mode, groups, approval, fields)
}

# The rules the result is made of, for the call with these fields.
parts_of(mode, groups, approval, fields) := parts_of_call(everything(mode, groups, approval, fields))

# Regal takes the policy's rules for references outside the function, as they are; each
# is read under the call's input.
parts_of_call(c) := {"masked": masked, "pending": pending, "denied": denied} if {
	# regal ignore:external-reference
	masked := data.labelgate.decision._masked_fields with input as c

	# regal ignore:external-reference
	pending := data.labelgate.decision._pending_labels with input as c

	# regal ignore:external-reference
	denied := data.labelgate.decision._denied_outputs with input as c
}

fate(mode, item, parts) := -1 if {
	mode != "replay"
	some label in item.labels
	label in parts.pending
} else := -1 if {
	substring(item.path, 8, -1) in parts.denied
} else := permissiveness(parts.masked[item.path]) if {
	parts.masked[item.path]
} else := 1000

# An unknown strategy (which tables_test rules out) counts as revealing the most.
permissiveness(mask) := score if {
	score := data.labelgate.tables.mask_permissiveness[mask.strategy]
} else := 9999

# The calls are well formed (the fates read rules that only a well-formed call reaches).
test_the_combined_calls_are_well_formed if {
	every mode in modes {
		c := everything(mode, sort(table_groups), {"state": "none"}, array.concat(single_fields, pair_fields))
		not startswith(decide(c).reason, "denied: malformed")
	}
}

# [mode, groups, approval, path, alone, both] for every pair field that the call releases
# more of than the field with one of its labels alone.
monotonicity_failures(mode, labels, groups_sets, approvals) := {[mode, groups, approval, path, alone, both] |
	some groups in groups_sets
	some approval in approvals
	fate_of := fates(mode, groups, approval, array.concat(single_fields, pair_fields))
	some base in labels
	some added in labels
	base < added
	path := pair_path(base, added)
	both := fate_of[path]
	some label in [base, added]
	alone := fate_of[concat("+", ["outputs.one", label])]
	both > alone
}

# One test per mode, to keep each well inside `opa test`'s per-test timeout when tracing.
test_adding_a_label_never_shows_a_field_more_in_a_response if {
	count(group_sets) == 5
	count(labels_under_test) == 5
	monotonicity_failures("response", labels_under_test, group_sets, approval_states) == set()
}

test_adding_a_label_never_shows_a_field_more_asked_for_by_name if {
	monotonicity_failures("requested", labels_under_test, group_sets, approval_states) == set()
}

test_adding_a_label_never_shows_a_field_more_in_a_replay if {
	monotonicity_failures("replay", labels_under_test, group_sets, approval_states) == set()
}

# A path listed twice with one label each is decided as one field with both.
duplicate_failures contains [groups, approval] if {
	some groups in group_sets
	some approval in [{"state": "none"}, approved_by(["sec-1", "sec-2"])]
	parts_of("response", groups, approval, pair_fields) != parts_of("response", groups, approval, twice_fields)
}

test_a_path_listed_twice_is_decided_like_one_field_with_both_labels if {
	count(duplicate_failures) == 0
}

# The case in the brief, with whole decisions: [confidential, restricted] never beats
# [confidential], and a field that waits for an approval with one label still does with two.
released(result) := -1 if {
	not result.allow
} else := 1000 if {
	count(result.mask) == 0
} else := permissiveness(result.mask[0])

test_confidential_plus_restricted_never_beats_confidential if {
	every mode in modes {
		every groups in group_sets {
			every approval in approval_states {
				released(decide(one_field(mode, groups, ["confidential", "restricted"], approval))) <= released(decide(one_field(
					mode, groups, ["confidential"],
					approval,
				)))
			}
		}
	}
}

one_field(mode, groups, labels, approval) := with_approval(
	case_of(mode, call(viewers(mode, groups), [field("outputs.x", labels)]), ["x"]),
	approval,
)

security_grant := approved_by(["sec-1", "sec-2"])

# Review case 1 (t5): an upstream tags its whole reply restricted; every output carries its
# catalog label and restricted. The grant releases what each catalog label allows
# break-glass, not everything.
tagged_reply := call(["break-glass"], [
	field("outputs.customer_id", ["public", "restricted"]),
	field("outputs.name", ["internal", "restricted"]),
	field("outputs.email", ["internal", "restricted"]),
	field("outputs.ssn", ["confidential", "restricted"]),
	field("outputs.card_number", ["confidential", "restricted"]),
	field("outputs.notes", ["internal", "restricted"]),
	field("outputs.account_secret", ["restricted"]),
])

test_review_a_reply_tagged_restricted_releases_no_more_than_its_catalog_labels if {
	outcome(tagged_reply) == held(security_hold)
	outcome(with_approval(tagged_reply, security_grant)) == allowed(
		[
			at("outputs.card_number", redact),
			at("outputs.email", redact),
			at("outputs.name", redact),
			at("outputs.notes", redact),
			at("outputs.ssn", redact),
		],
		0,
	)
}

# Review case 2 (t3): the upstream tags one output (ssn) restricted.
test_review_an_output_tagged_restricted_stays_masked_after_the_grant if {
	ssn := call(["break-glass"], [field("outputs.ssn", ["confidential", "restricted"])])
	outcome(ssn) == held(security_hold)
	outcome(with_approval(ssn, security_grant)) == allowed([at("outputs.ssn", redact)], 0)
	analyst := call(["analysts", "break-glass"], [field("outputs.ssn", ["confidential", "restricted"])])
	outcome(with_approval(analyst, security_grant)) == allowed([at("outputs.ssn", partial_last4)], 0)
}

# Review case 3 (t6): one JSON string leaf of a public output holds an SSN (confidential)
# and an AWS key id (restricted); the leaf's field carries both.
test_review_a_json_leaf_with_two_detector_labels_stays_masked_after_the_grant if {
	leaf := object.union(
		call(["break-glass"], [
			field("outputs.label", ["public"]),
			field("outputs.label[].<key:abed008d>", ["confidential", "public", "restricted"]),
		]),
		{"request": {"model": "sentiment"}},
	)
	outcome(leaf) == held(security_hold)
	outcome(with_approval(leaf, security_grant)) == allowed([at("outputs.label[].<key:abed008d>", redact)], 0)
}
