# Clearances: part of package labelgate.decision (see decision.rego).
#
# Decides how the subject may see each label in the input, from data.labelgate.tables:
# in clear ("see"), in clear once an approval is granted ("see" + "approval"), or through a
# mask. A caller in several groups gets the most permissive treatment its groups offer; a
# field with several labels is governed by its most sensitive one. A label that is not in
# the tables outranks every known label and gets tables.unknown_label (fail closed).
# Behaviour lives in the tables, so changing who sees what is a data edit.
#
# Performance: decisions are on the data path of every call, twice, and rego-cpp (the
# embedded engine) is slow at exactly the things Rego makes easy: it spends ~50 µs per
# call of a user-defined function and ~20 µs per element of a partial rule, but only a few
# microseconds per comprehension element. So the rules that run per field or per label
# are complete rules built from comprehensions, with no helper functions; each field is
# visited once to find its governing label, and each label once to find its treatment.
# OPA gains from the same shape. That is why Regal's prefer-set-or-object-rule is silenced
# on such rules, and prefer-some-in-iteration where a comprehension iterates an object:
# rego-cpp 1.5.2 cannot parse `some key, value in` inside a comprehension. Measure with
# `python -m bench.profile_policy` (from the repository root).
package labelgate.decision

# The tables are JSON data, which Regal cannot resolve (see .regal/config.yaml).
import data.labelgate.tables

# Both engines (OPA and rego-cpp) must produce identical JSON, and rego-cpp 1.5.2 differs
# in two places: sort() of a set returns the set itself (unsorted; concat() then follows
# insertion order), and sprintf's %s quotes some strings. So sets are sorted as arrays, and
# strings are joined with concat(); sprintf is used for %d only.
sorted(values) := sort([value | some value in values])

# The subject's groups in a fixed order, so ties between equal offers break by group name.
sorted_groups := sort(input.subject.groups)

# Every distinct field path with the label that governs it, as [path, label] pairs: the
# one pass over the fields that the rest of the policy builds on. Most fields carry one
# label, which needs no ranking; fields with several are only looked for when the first
# pass left some field out.
# regal ignore:messy-rule
path_entries := single_label_entries if {
	unique_paths
	count(single_label_entries) == count(input.fields)
}

# regal ignore:messy-rule
path_entries := array.concat(single_label_entries, multi_label_entries) if {
	unique_paths
	count(single_label_entries) != count(input.fields)
}

# A path listed twice is governed by the union of its labels, so a duplicate can never
# weaken a field. The union costs a pass over all fields per path, so it is only built
# when some path repeats.
path_entries := [[path, candidates[0]] |
	some path in {field_path | some field_path in field_path_list}
	labels := {label | some field in input.fields; field.path == path; some label in field.labels}
	top := max([rank | some label in labels; rank := label_rank(label)])
	candidates := sort([candidate | some candidate in labels; label_rank(candidate) == top])
] if {
	not unique_paths
}

# regal ignore:prefer-set-or-object-rule
single_label_entries := [[field.path, field.labels[0]] | some field in input.fields; not field.labels[1]]

# The most sensitive label governs a field with several; ties (two unknown labels) break
# by name, so every engine picks the same one.
# regal ignore:prefer-set-or-object-rule
multi_label_entries := [[field.path, candidates[0]] |
	some field in input.fields
	field.labels[1]
	top := max([rank | some label in field.labels; rank := multi_label_ranks[label]])
	candidates := sort([candidate | some candidate in field.labels; multi_label_ranks[candidate] == top])
]

# label_rank() of every label of a field with several labels, looked up rather than called
# per label (a call costs rego-cpp ~50-100 µs).
# regal ignore:prefer-set-or-object-rule
multi_label_ranks := object.union(
	{label: unknown_rank | some label in multi_labels; not tables.labels[label]},
	{label: rank | some label in multi_labels; rank := known_ranks[label]},
)

# regal ignore:prefer-set-or-object-rule
multi_labels := {label | some field in input.fields; field.labels[1]; some label in field.labels}

unique_paths if count({field_path | some field_path in field_path_list}) == count(field_path_list)

# path -> governing label, for lookups by path (outputs requested by name).
# regal ignore:prefer-set-or-object-rule
path_label := {entry[0]: entry[1] | some entry in path_entries}

# The labels that decide some field: only these need a treatment.
# regal ignore:prefer-set-or-object-rule
governing_labels := {entry[1] | some entry in path_entries}

# Sensitivity of a label; unknown labels rank above the most sensitive known label. (A
# label of the tables without a rank has none, and never governs a field that has another
# label.) Only fields with several labels and held calls need ranks, which keeps the cost
# of a function call off the common path.
label_rank(label) := known_ranks[label]

label_rank(label) := unknown_rank if not tables.labels[label]

# regal ignore:prefer-set-or-object-rule
known_ranks := {label: rank | rank := tables.labels[label].rank}

unknown_rank := max([rank | some rank in known_ranks]) + 1

# What each governing label offers the subject: one offer per group of the subject that
# the label names, in group order, then the label's default; a label the tables do not
# know offers what tables.unknown_label does. (Offers are looked up in the tables: copying
# whole table entries into a rule value costs rego-cpp more than the lookups.)
# regal ignore:prefer-set-or-object-rule
label_offers := object.union(
	{label: offers |
		some label in governing_labels
		not tables.labels[label]
		group_offers := [offer | some group in sorted_groups; offer := tables.unknown_label.groups[group]]
		offers := array.concat(group_offers, [tables.unknown_label.default])
	},
	{label: offers |
		some label in governing_labels
		group_offers := [offer | some group in sorted_groups; offer := tables.labels[label].groups[group]]
		offers := array.concat(group_offers, [tables.labels[label].default])
	},
)

# The treatment of every governing label: the most permissive offer among the subject's
# groups that the label names (in group order), then the label's default; among equals the
# first one, so a group's offer beats an equal default. Permissiveness: seeing in clear
# (3000) beats seeing after approval (2000 - required approvals), which beats every mask
# (1000 + tables.mask_permissiveness: a partial mask reveals more than null). An offer that
# names a missing approval or strategy has no score and is ignored; a label left without
# any scored offer (broken tables) has no treatment, and is masked with null.
# regal ignore:prefer-set-or-object-rule
label_treatment := {label: offers[best] |
	some label in governing_labels
	offers := label_offers[label]

	# [score, position] of every offer with a score; the three kinds exclude each other.
	scored := [scored_offer |
		some kind in [
			[[3000, i] | see := offers[i]; see.see == true; not see.approval],
			[[gated_score, j] |
				gated := offers[j]
				gated.see == true
				gated_score := 2000 - tables.approvals[gated.approval].min_approvals
			],
			[[mask_score, k] |
				mask := offers[k]
				not mask.see
				mask_score := 1000 + tables.mask_permissiveness[mask.mask.strategy]
			],
		]
		some scored_offer in kind
	]
	top := max([pair[0] | some pair in scored])
	best := min([pair[1] | some pair in scored; pair[0] == top])
}
