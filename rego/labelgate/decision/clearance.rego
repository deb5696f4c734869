# Clearances: part of package labelgate.decision (see decision.rego).
#
# Decides how the subject may see each label in the input, from data.labelgate.tables:
# in clear ("see"), in clear once an approval is granted ("see" + "approval"), or through a
# mask. A caller in several groups gets the most permissive treatment its groups offer; a
# field with several labels is governed by its most sensitive one. A label that is not in
# the tables outranks every known label and gets tables.unknown_label (fail closed).
# Behaviour lives in the tables, so changing who sees what is a data edit. The rules here are
# shaped for the engines' costs (complete rules from comprehensions, no per-field helper
# calls, silenced Regal hints): engines.rego says why.
package labelgate.decision

# The tables are JSON data, which Regal cannot resolve (see .regal/config.yaml).
import data.labelgate.tables

# The subject's groups in a fixed order, so ties between equal offers break by group name.
_sorted_groups := sort(input.subject.groups)

# Every distinct field path with the label that governs it, as [path, label] pairs: the
# one pass over the fields that the rest of the policy builds on. Most fields carry one
# label, which needs no ranking; fields with several are only looked for when the first
# pass left some field out.
# regal ignore:messy-rule
_path_entries := _single_label_entries if {
	_unique_paths
	count(_single_label_entries) == count(input.fields)
}

# regal ignore:messy-rule
_path_entries := array.concat(_single_label_entries, _multi_label_entries) if {
	_unique_paths
	count(_single_label_entries) != count(input.fields)
}

# A path listed twice is governed by the union of its labels, so a duplicate can never
# weaken a field. The union costs a pass over all fields per path, so it is only built
# when some path repeats.
_path_entries := [[path, candidates[0]] |
	some path in {field_path | some field_path in _field_path_list}
	labels := {label | some field in input.fields; field.path == path; some label in field.labels}
	top := max([rank | some label in labels; rank := _label_rank(label)])
	candidates := sort([candidate | some candidate in labels; _label_rank(candidate) == top])
] if {
	not _unique_paths
}

# regal ignore:prefer-set-or-object-rule
_single_label_entries := [[field.path, field.labels[0]] | some field in input.fields; not field.labels[1]]

# The most sensitive label governs a field with several; ties (two unknown labels) break
# by name, so every engine picks the same one.
# regal ignore:prefer-set-or-object-rule
_multi_label_entries := [[field.path, candidates[0]] |
	some field in input.fields
	field.labels[1]
	top := max([rank | some label in field.labels; rank := _multi_label_ranks[label]])
	candidates := sort([candidate | some candidate in field.labels; _multi_label_ranks[candidate] == top])
]

# _label_rank() of every label of a field with several labels, looked up rather than called
# per label (a call costs rego-cpp ~50-100 µs). Unknown and known labels share no key, so
# the two tables merge with no conflict (not with object.union: engines.rego says why).
# regal ignore:prefer-set-or-object-rule
_multi_label_ranks := {label: rank |
	some ranks in [_unknown_multi_label_ranks, _known_multi_label_ranks]
	rank := ranks[label]
}

# regal ignore:prefer-set-or-object-rule
_unknown_multi_label_ranks := {label: _unknown_rank | some label in _multi_labels; not tables.labels[label]}

# regal ignore:prefer-set-or-object-rule
_known_multi_label_ranks := {label: rank | some label in _multi_labels; rank := _known_ranks[label]}

# regal ignore:prefer-set-or-object-rule
_multi_labels := {label | some field in input.fields; field.labels[1]; some label in field.labels}

_unique_paths if count({field_path | some field_path in _field_path_list}) == count(_field_path_list)

# path -> governing label, for lookups by path (outputs requested by name).
# regal ignore:prefer-set-or-object-rule
_path_label := {entry[0]: entry[1] | some entry in _path_entries}

# The labels that decide some field: only these need a treatment.
# regal ignore:prefer-set-or-object-rule
_governing_labels := {entry[1] | some entry in _path_entries}

# Sensitivity of a label; unknown labels rank above the most sensitive known label. (A
# label of the tables without a rank has none, and never governs a field that has another
# label.) Only fields with several labels and held calls need ranks, which keeps the cost
# of a function call off the common path.
_label_rank(label) := _known_ranks[label]

_label_rank(label) := _unknown_rank if not tables.labels[label]

# regal ignore:prefer-set-or-object-rule
_known_ranks := {label: rank | rank := tables.labels[label].rank}

_unknown_rank := max([rank | some rank in _known_ranks]) + 1

# What each governing label offers the subject: one offer per group of the subject that
# the label names, in group order, then the label's default; a label the tables do not
# know offers what tables.unknown_label does. (Offers are looked up in the tables: copying
# whole table entries into a rule value costs rego-cpp more than the lookups.)
# Unknown and known labels share no key, so the two merge with no conflict.
# regal ignore:prefer-set-or-object-rule
_label_offers := {label: offers |
	some label_offers in [_unknown_label_offers, _known_label_offers]
	offers := label_offers[label]
}

# regal ignore:prefer-set-or-object-rule
_unknown_label_offers := {label: offers |
	some label in _governing_labels
	not tables.labels[label]
	group_offers := [offer | some group in _sorted_groups; offer := tables.unknown_label.groups[group]]
	offers := array.concat(group_offers, [tables.unknown_label.default])
}

# regal ignore:prefer-set-or-object-rule
_known_label_offers := {label: offers |
	some label in _governing_labels
	group_offers := [offer | some group in _sorted_groups; offer := tables.labels[label].groups[group]]
	offers := array.concat(group_offers, [tables.labels[label].default])
}

# The treatment of every governing label: the most permissive offer among the subject's
# groups that the label names (in group order), then the label's default; among equals the
# first one, so a group's offer beats an equal default. Permissiveness (the scores are
# tables.offer_scores): seeing in clear beats seeing after approval (less the required
# approvals), which beats every mask (plus tables.mask_permissiveness: a partial mask
# reveals more than null). An offer that
# names a missing approval or strategy has no score and is ignored; a label left without
# any scored offer (broken tables) has no treatment, and is masked with null.
# regal ignore:prefer-set-or-object-rule
_label_treatment := {label: offers[best] |
	some label in _governing_labels
	offers := _label_offers[label]

	# [score, position] of every offer with a score; the three kinds exclude each other.
	scored := [scored_offer |
		some kind in [
			[[tables.offer_scores.see, i] | see := offers[i]; see.see == true; not see.approval],
			[[gated_score, j] |
				gated := offers[j]
				gated.see == true
				gated_score := tables.offer_scores.see_after_approval - tables.approvals[gated.approval].min_approvals
			],
			[[mask_score, k] |
				mask := offers[k]
				not mask.see
				mask_score := tables.offer_scores.mask + tables.mask_permissiveness[mask.mask.strategy]
			],
		]
		some scored_offer in kind
	]
	top := max([pair[0] | some pair in scored])
	best := min([pair[1] | some pair in scored; pair[0] == top])
}
