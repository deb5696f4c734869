# Clearances: part of package labelgate.decision (see decision.rego).
#
# Decides how the subject may see each label in the input, from data.labelgate.tables:
# in clear ("see"), in clear once an approval is granted ("see" + "approval"), or through a
# mask. A caller in several groups gets the most permissive treatment its groups offer. A
# field with several labels gets the least permissive treatment over ALL of them: it is in
# clear only when every one of its labels is, it waits for an approval when any of its
# labels does, and when some label masks it, the strongest of those masks applies
# (tables.mask_permissiveness orders them). So adding a label to a field can never show it
# more than before, whatever the tables say about each label (they need not be monotone in
# rank: break-glass sees restricted after approval but never confidential). A label that is
# not in the tables outranks every known label and gets tables.unknown_label (fail closed).
# Behaviour lives in the tables, so changing who sees what is a data edit. The rules here are
# shaped for the engines' costs (complete rules from comprehensions, no per-field helper
# calls, silenced Regal hints): engines.rego says why.
package labelgate.decision

# The tables are JSON data, which Regal cannot resolve (see .regal/config.yaml).
import data.labelgate.tables

# The subject's groups in a fixed order, so ties between equal offers break by group name.
_sorted_groups := sort(input.subject.groups)

# Every label some field carries: each gets one treatment, and every one of a field's
# labels has its say on that field.
# regal ignore:prefer-set-or-object-rule
_field_labels := {label | some field in input.fields; some label in field.labels}

# path -> every label of the fields at that path: the one pass over the fields that the
# rest of the policy builds on. A path listed twice gets the union of its labels, so a
# duplicate can never weaken a field; the union costs a pass over all fields per path, so
# it is only built when some path repeats.
# regal ignore:prefer-set-or-object-rule
_path_labels := {field.path: field.labels | some field in input.fields} if _unique_paths

# regal ignore:prefer-set-or-object-rule
_path_labels := {path: labels |
	some path in {field_path | some field_path in _field_path_list}
	labels := [label | some field in input.fields; field.path == path; some label in field.labels]
} if {
	not _unique_paths
}

_unique_paths if count({field_path | some field_path in _field_path_list}) == count(_field_path_list)

# Sensitivity of a label; unknown labels rank above the most sensitive known label. (A
# label of the tables without a rank has none.) Only held calls need it (approval.rego:
# which requirement a call is held for), which keeps the cost of a function call off the
# common path.
_label_rank(label) := _known_ranks[label]

_label_rank(label) := _unknown_rank if not tables.labels[label]

# regal ignore:prefer-set-or-object-rule
_known_ranks := {label: rank | rank := tables.labels[label].rank}

_unknown_rank := max([rank | some rank in _known_ranks]) + 1

# What each label offers the subject: one offer per group of the subject that
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
	some label in _field_labels
	not tables.labels[label]
	group_offers := [offer | some group in _sorted_groups; offer := tables.unknown_label.groups[group]]
	offers := array.concat(group_offers, [tables.unknown_label.default])
}

# regal ignore:prefer-set-or-object-rule
_known_label_offers := {label: offers |
	some label in _field_labels
	group_offers := [offer | some group in _sorted_groups; offer := tables.labels[label].groups[group]]
	offers := array.concat(group_offers, [tables.labels[label].default])
}

# The treatment of every label: the most permissive offer among the subject's
# groups that the label names (in group order), then the label's default; among equals the
# first one, so a group's offer beats an equal default. Permissiveness (the scores are
# tables.offer_scores): seeing in clear beats seeing after approval (less the required
# approvals), which beats every mask (plus tables.mask_permissiveness: a partial mask
# reveals more than null). An offer that
# names a missing approval or strategy has no score and is ignored; a label left without
# any scored offer (broken tables) has no treatment, and is masked with null.
# regal ignore:prefer-set-or-object-rule
_label_treatment := {label: offers[best] |
	some label in _field_labels
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

# path -> mask of every field some label of which the subject may not see now
# (approval.rego: _label_mask): the strongest mask among those labels. Most fields carry one
# label, whose mask is the field's; fields with several look at every label's mask. The
# three parts share no path, so they merge with no conflict.
# regal ignore:prefer-set-or-object-rule
_masked_fields := {path: mask |
	some masks in [_single_label_masks, _agreed_masks, _disputed_masks]
	mask := masks[path]
}

# regal ignore:prefer-set-or-object-rule
_single_label_masks := {path: mask |
	# regal ignore:prefer-some-in-iteration
	labels := _path_labels[path]
	not labels[1]
	mask := _label_mask[labels[0]]
}

# path -> the strongest masks among the labels of a field with several, as a set: the least
# permissive strategy by tables.mask_permissiveness (null, then redact, hash, partial), with
# every params its labels give it.
# regal ignore:prefer-set-or-object-rule
_strongest_masks := {path: masks |
	# regal ignore:prefer-some-in-iteration
	labels := _path_labels[path]
	labels[1]
	scores := [score | some label in labels; score := _mask_scores[label]]
	count(scores) > 0
	strongest := min(scores)
	masks := {_label_mask[label] | some label in labels; _mask_scores[label] == strongest}
}

# One strongest mask is the field's.
# regal ignore:prefer-set-or-object-rule
_agreed_masks := {path: mask |
	# regal ignore:prefer-some-in-iteration
	masks := _strongest_masks[path]
	count(masks) == 1
	some mask in masks
}

# Two of the same strategy with different params (two partial masks keeping different
# lengths) are not ranked against each other, so the field is nulled: nothing reveals less.
# regal ignore:prefer-set-or-object-rule
_disputed_masks := {path: _null_mask |
	# regal ignore:prefer-some-in-iteration
	masks := _strongest_masks[path]
	count(masks) > 1
}

_null_mask := {"strategy": "null", "params": {}}

# How much the mask of each label the subject may not see now reveals. A strategy the
# table does not score (only the fallback null, in broken tables) counts as revealing the
# least, so it wins: failing closed.
# regal ignore:prefer-set-or-object-rule
_mask_scores := {label: score |
	# regal ignore:prefer-some-in-iteration
	mask := _label_mask[label]
	score := object.get(tables.mask_permissiveness, mask.strategy, -1)
}
