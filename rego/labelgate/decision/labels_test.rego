# Tests for fields with several labels, duplicate paths and labels the tables do not know:
# the most sensitive label governs, and an unknown label is more sensitive than any known one.
package labelgate.decision_test

test_multi_label_field_takes_its_most_sensitive_label if {
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

governing_label(labels) := label if {
	label := data.labelgate.decision._path_label["outputs.x"] with input as call([], [field("outputs.x", labels)])
}

test_two_unknown_labels_pick_one_deterministically if {
	governing_label(["zeta", "alpha", "public"]) == "alpha"
	governing_label(["alpha", "zeta", "public"]) == "alpha"
}

test_governing_label_of_known_labels if {
	governing_label(["public", "confidential", "internal"]) == "confidential"
}
