# Tests for the tables themselves (rego/labelgate/tables/data.json): an edit that would make
# results invalid against result.json, or reference a missing approval, fails here first.
# Also checks that broken tables fail closed.
package labelgate.decision_test

tables := data.labelgate.tables

strategies := {"redact", "partial", "hash", "null"}

mask_params := {"keep_last", "replacement"}

all_treatments contains spec.default if some spec in tables.labels

all_treatments contains treatment if {
	some spec in tables.labels
	some treatment in spec.groups
}

all_treatments contains tables.unknown_label.default

test_the_contract_labels_are_all_in_the_tables if {
	every label in ["public", "internal", "confidential", "restricted"] {
		is_number(tables.labels[label].rank)
	}
}

test_the_unknown_label_has_the_shape_of_a_label if {
	is_object(tables.unknown_label.default)
	is_object(tables.unknown_label.groups)
	is_boolean(tables.unknown_label.deny_when_requested)
	every key, _ in tables.unknown_label {
		key in {"default", "groups", "deny_when_requested"}
	}
}

test_label_ranks_are_distinct if {
	count({spec.rank | some spec in tables.labels}) == count(tables.labels)
}

test_every_treatment_either_shows_or_masks if {
	every treatment in all_treatments {
		object.get(treatment, "see", false) == true != is_object(object.get(treatment, "mask", null))
	}
}

test_every_mask_is_valid_for_result_json if {
	every treatment in all_treatments {
		valid_mask(object.get(treatment, "mask", {"strategy": "null", "params": {}}))
	}
}

valid_mask(mask) if {
	mask.strategy in strategies
	every key, _ in mask.params {
		key in mask_params
	}
	tables.mask_permissiveness[mask.strategy] >= 0
}

test_every_referenced_approval_exists_and_is_valid if {
	every treatment in all_treatments {
		valid_approval(tables.approvals[object.get(treatment, "approval", "data_owner_grant")])
	}
}

valid_approval(requirement) if {
	count(requirement.approver_groups) > 0
	requirement.min_approvals >= 1
	requirement.grant_ttl_seconds >= 1
}

test_cache_ttls_are_non_negative_integers if {
	every ttl in tables.cache_ttl_seconds {
		ttl >= 0
		ttl == floor(ttl)
	}
}

test_missing_tables_deny if {
	c := call(["analysts"], [field("outputs.name", ["internal"])])
	decide(c) == {
		"allow": false,
		"reason": "denied: the policy could not reach a decision",
		"mask": [],
		"require_approval": null,
		"cache_ttl_seconds": 0,
	} with data.labelgate.tables as {}
}

test_a_label_without_a_usable_treatment_is_nulled if {
	# object.union merges deeply, so the label is removed before it is replaced.
	unusable := {"internal": {"rank": 1, "default": {"see": false}}}
	labels := object.union(object.remove(tables.labels, ["internal"]), unusable)
	broken := object.union(object.remove(tables, ["labels"]), {"labels": labels})
	c := call([], [field("outputs.name", ["internal"])])
	outcome(c) == allowed([at("outputs.name", nulled)], 60) with data.labelgate.tables as broken
}

test_an_approval_route_to_a_missing_requirement_is_ignored if {
	dangling := {"data-stewards": {"see": true, "approval": "gone"}}
	broken := object.union(tables, {"labels": {"confidential": {"groups": dangling}}})
	c := call(["data-stewards"], [field("outputs.ssn", ["confidential"])])
	outcome(c) == allowed([at("outputs.ssn", redact)], 60) with data.labelgate.tables as broken
}

test_opaque_methods_map_full_methods_to_group_lists if {
	is_object(tables.opaque_methods)
	every method, groups in tables.opaque_methods {
		startswith(method, "/")
		is_array(groups)
		every group in groups {
			is_string(group)
		}
	}
}

# The offer scores rank every kind of offer above the next whatever its details: seeing in
# clear beats any gated offer, and any gated offer (less its required approvals) beats any mask.
test_offer_scores_keep_the_kinds_apart if {
	scores := tables.offer_scores
	scores.see > scores.see_after_approval
	most_approvals := max([approval.min_approvals | some approval in tables.approvals])
	most_permissive_mask := max([score | some score in tables.mask_permissiveness])
	scores.see_after_approval - most_approvals > scores.mask + most_permissive_mask
}
