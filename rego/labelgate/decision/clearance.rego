# Clearances: part of package labelgate.decision (see decision.rego).
#
# Decides how the subject may see each label in the input, from data.labelgate.tables:
# in clear ("see"), in clear once an approval is granted ("see" + "approval"), or through a
# mask. A caller in several groups gets the most permissive treatment its groups offer; a
# field with several labels is governed by its most sensitive one. A label that is not in
# the tables outranks every known label and gets tables.unknown_label (fail closed).
# Behaviour lives in the tables, so changing who sees what is a data edit.
#
# Per-label and per-path results are partial objects, so OPA computes each one once per
# decision however many rules consult it.
package labelgate.decision

tables := data.labelgate.tables

# Both engines (OPA and rego-cpp) must produce identical JSON, and rego-cpp 1.5.2 differs
# in two places: sort() of a set returns the set itself (unsorted; concat() then follows
# insertion order), and sprintf's %s quotes some strings. So sets are sorted as arrays, and
# strings are joined with concat(); sprintf is used for %d only.
sorted(values) := sort([value | some value in values])

# The subject's groups in a fixed order, so ties between equal offers break by group name.
sorted_groups := sorted(input.subject.groups)

field_paths contains field.path if some field in input.fields

input_labels contains label if {
	some field in input.fields
	some label in field.labels
}

# Every distinct field path with the labels given to it. A path listed twice is governed
# by the union of its labels, so a duplicate can never weaken a field; the union costs a
# pass over all fields per path, so it is only built when some path repeats.
unique_paths if count(field_paths) == count(input.fields)

path_labels[field.path] := field.labels if {
	unique_paths
	some field in input.fields
}

path_labels[path] := {label | some field in input.fields; field.path == path; some label in field.labels} if {
	not unique_paths
	some path in field_paths
}

label_spec(label) := tables.labels[label]

label_spec(label) := tables.unknown_label if not tables.labels[label]

# Unknown labels rank above the most sensitive known label.
unknown_rank := max({spec.rank | some spec in tables.labels}) + 1

rank[label] := tables.labels[label].rank if some label in input_labels

rank[label] := unknown_rank if {
	some label in input_labels
	not tables.labels[label]
}

path_label[path] := label if {
	some path, labels in path_labels
	count(labels) == 1
	some label in labels
}

path_label[path] := governing_label(labels) if {
	some path, labels in path_labels
	count(labels) > 1
}

# The most sensitive label of a set; ties (e.g. two unknown labels) break by name, so every
# engine picks the same one.
governing_label(labels) := candidates[0] if {
	top := max({label_rank | some label in labels; label_rank := rank[label]})
	candidates := sorted({label | some label in labels; rank[label] == top})
}

# The labels that decide some field; only these need a treatment.
governing_labels contains label if some label in path_label

# What each label offers the subject: one offer per group of the subject that the label
# names, in group order, then the label's default.
offers[label] := array.concat(group_offers, [spec.default]) if {
	some label in governing_labels
	spec := label_spec(label)
	group_offers := [offer | some group in sorted_groups; offer := spec.groups[group]]
}

# The most permissive offer; among equals the first one (group offers before the default).
label_treatment[label] := best[0] if {
	some label, candidates in offers
	scored := [[treatment_score(offer), offer] | some offer in candidates]
	top := max([pair[0] | some pair in scored])
	best := [pair[1] | some pair in scored; pair[0] == top]
}

# Permissiveness: seeing in clear beats seeing after approval (fewer approvals first), which
# beats every mask; masks rank by tables.mask_permissiveness (a partial mask reveals more
# than null). An offer that names a missing approval or strategy has no score and is
# ignored.
treatment_score(treatment) := 3000 if {
	treatment.see == true
	not treatment.approval
}

treatment_score(treatment) := 2000 - tables.approvals[treatment.approval].min_approvals if {
	treatment.see == true
}

treatment_score(treatment) := 1000 + tables.mask_permissiveness[treatment.mask.strategy] if {
	not treatment.see
}
