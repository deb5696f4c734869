# Tests for fields with several labels, duplicate paths and labels the tables do not know:
# every label of a field has its say (the strongest mask wins), and an unknown label gets
# tables.unknown_label. monotone_test.rego checks the rule over the whole tables.
package labelgate.decision_test

test_multi_label_field_takes_its_least_permissive_label if {
	c := call(["analysts"], [field("outputs.email", ["internal", "confidential"])])
	outcome(c) == allowed([at("outputs.email", partial_last4)], 60)
}

test_public_and_restricted_field_is_restricted if {
	c := call(["analysts", "data-stewards"], [field("outputs.mix", ["public", "restricted"])])
	outcome(c) == allowed([at("outputs.mix", nulled)], 60)
}

test_label_order_inside_a_field_does_not_matter if {
	one := call(["analysts"], [field("outputs.email", ["confidential", "internal"])])
	other := call(["analysts"], [field("outputs.email", ["internal", "confidential"])])
	outcome(one) == outcome(other)
}

test_a_path_listed_twice_is_governed_by_all_its_labels if {
	c := call(["analysts"], [field("outputs.email", ["internal"]), field("outputs.email", ["restricted"])])
	outcome(c) == allowed([at("outputs.email", nulled)], 60)
}

test_unknown_label_is_nulled_for_everyone if {
	every groups in [[], ["analysts"], ["data-stewards", "break-glass"]] {
		outcome(call(groups, [field("outputs.x", ["top-secret"])])) == allowed([at("outputs.x", nulled)], 60)
	}
}

test_unknown_label_cannot_be_unlocked_by_a_grant if {
	c := with_approval(call(["data-stewards", "break-glass"], [field("outputs.x", ["restricted", "top-secret"])]), granted)
	outcome(c) == allowed([at("outputs.x", nulled)], 0)
}

test_unknown_label_outranks_public if {
	outcome(call(["analysts"], [field("outputs.x", ["public", "top-secret"])])) == allowed([at("outputs.x", nulled)], 60)
}

test_unknown_label_requested_by_name_is_denied if {
	c := requesting(call(["analysts"], [field("outputs.x", ["mystery"])]), ["x"])
	outcome(c) == denied(60)
}

test_two_unknown_labels_are_nulled_in_any_order if {
	one := call([], [field("outputs.x", ["zeta", "alpha", "public"])])
	outcome(one) == allowed([at("outputs.x", nulled)], 60)
	other := call([], [field("outputs.x", ["alpha", "zeta", "public"])])
	outcome(other) == outcome(one)
}

test_a_field_takes_the_strongest_mask_of_its_labels if {
	# analysts: internal in clear, confidential partial, restricted null.
	outcome(call(["analysts"], [field("outputs.x", ["internal", "confidential"])])) == allowed(
		[at("outputs.x", partial_last4)],
		60,
	)
	outcome(call(["analysts"], [field("outputs.x", ["confidential", "restricted"])])) == allowed(
		[at("outputs.x", nulled)],
		60,
	)
	outcome(call([], [field("outputs.x", ["internal", "confidential"])])) == allowed([at("outputs.x", redact)], 60)
}

# Two partial masks keeping different lengths: neither is known to reveal less, so null.
test_two_different_masks_of_one_strategy_null_the_field if {
	# object.union merges deeply, so the label is removed before it is replaced.
	keep_two := {"rank": 1, "default": {"mask": redact}, "groups": {"analysts": {"mask": {
		"strategy": "partial",
		"params": {"keep_last": 2},
	}}}}
	labels := object.union(object.remove(data.labelgate.tables.labels, ["internal"]), {"internal": keep_two})
	custom := object.union(object.remove(data.labelgate.tables, ["labels"]), {"labels": labels})
	c := call(["analysts"], [field("outputs.x", ["internal", "confidential"])])
	outcome(c) == allowed([at("outputs.x", nulled)], 60) with data.labelgate.tables as custom
	single := call(["analysts"], [field("outputs.x", ["internal"])])
	outcome(single) == allowed(
		[at("outputs.x", {"strategy": "partial", "params": {"keep_last": 2}})],
		60,
	) with data.labelgate.tables as custom
}

test_an_output_is_denied_when_any_of_its_labels_says_so if {
	# With confidential denied when requested, break-glass may not ask for a field that is
	# also restricted (which break-glass could see after approval).
	strict := object.union(data.labelgate.tables, {"labels": {"confidential": {"deny_when_requested": true}}})
	c := requesting(call(["break-glass"], [field("outputs.x", ["confidential", "restricted"])]), ["x"])
	outcome(c) == denied(60) with data.labelgate.tables as strict
	outcome(c) == held(security_hold)
}

# tables.unknown_label has the shape of a label: its default is what an unknown label gets.
test_the_unknown_label_default_is_read if {
	redacting := object.union(
		object.remove(data.labelgate.tables, ["unknown_label"]),
		{"unknown_label": {"default": {"mask": redact}, "deny_when_requested": true, "groups": {}}},
	)
	c := call(["analysts"], [field("outputs.x", ["top-secret"])])
	outcome(c) == allowed([at("outputs.x", redact)], 60) with data.labelgate.tables as redacting
}

# Tables may let a group see unknown labels after an approval; an unknown label outranks
# every known one, so a call with it pending is held for its requirement.
test_a_pending_unknown_label_decides_the_hold if {
	gated := {"default": {"mask": nulled}, "deny_when_requested": true, "groups": {"break-glass": {
		"see": true,
		"approval": "security_two_person",
	}}}
	custom := object.union(object.remove(data.labelgate.tables, ["unknown_label"]), {"unknown_label": gated})
	fields := [field("outputs.ssn", ["confidential"]), field("outputs.x", ["top-secret"])]
	c := call(["data-stewards", "break-glass"], fields)
	reason := "confidential, top-secret data needs 2 approval(s) from security"
	outcome(c) == held(object.union(security_hold, {"reason": reason})) with data.labelgate.tables as custom
}
