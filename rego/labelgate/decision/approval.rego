# Approvals: part of package labelgate.decision (see decision.rego).
#
# Decides which approval-gated fields a granted approval unlocks and, when some stay locked,
# the one approval requirement the call is held for.
# input.approval.state == "granted" means the gateway verified a grant for exactly this
# call's subject, method, model and label set. Each requirement of the tables counts for
# itself: with input.approval.approvers (every approver with the groups they approved in),
# a requirement is met only by enough distinct people other than the subject from ITS
# approver groups, so security approvals never unlock what needs a data owner. Without
# approvers the policy cannot tell whose approval met which requirement, so a grant counts
# only for a call that one requirement gates (the one the gateway held it for and checked).
# A call that needs several approvals (e.g. confidential for data-stewards and restricted
# for break-glass) is held for one requirement at a time: the one of its most sensitive
# label still pending. Once that is granted, the policy asks for the next one, and the
# gateway holds the call again, deciding it under all of its grants' approvers together.
package labelgate.decision

# The tables are JSON data, which Regal cannot resolve (see .regal/config.yaml).
import data.labelgate.tables

# The approvals (keys of tables.approvals) that the grant in the input satisfies. With
# approvers, by their groups (below). Without: the gateway's word (for requirements of at
# least one approval), or with approved_by, enough distinct approvers other than the
# subject; either only when a single requirement gates the call. A replay never uses a
# grant: grants are for calls, not for viewing recordings of them.
# Counts are compared by their difference (`count(people) - min >= 0`), a number or nothing
# in every engine: a string in the tables orders above every number in OPA and compares false
# with any in rego-cpp, so the embedded engine refuses an ordering it cannot show to be
# between numbers (docs/EMBEDDED_COMPLIANCE.md).
# regal ignore:prefer-set-or-object-rule
_satisfied_approvals := ({key |
	input.approval.state == "granted"
	input.phase != "replay"
	not input.approval.approvers
	not input.approval.approved_by
	count(_gating_approvals) == 1

	# regal ignore:prefer-some-in-iteration
	requirement := tables.approvals[key]
	requirement.min_approvals - 1 >= 0
} | {key |
	input.approval.state == "granted"
	input.phase != "replay"
	not input.approval.approvers
	count(_gating_approvals) == 1

	# regal ignore:prefer-some-in-iteration
	requirement := tables.approvals[key]
	count(_independent_approvers) - requirement.min_approvals >= 0
}) | {key |
	input.approval.state == "granted"
	input.phase != "replay"

	# regal ignore:prefer-some-in-iteration
	requirement := tables.approvals[key]
	people := {membership[0] |
		some membership in _approver_memberships
		membership[1] in requirement.approver_groups
	}
	count(people) - requirement.min_approvals >= 0
}

# Every requirement some label of the call could be seen under once it is granted.
# regal ignore:prefer-set-or-object-rule
_gating_approvals := {treatment.approval |
	some treatment in _label_treatment
	treatment.see == true
	treatment.approval
}

# [person, group] for every group each approver other than the subject approved in. A
# person named by two grants counts once per requirement (people are counted, not pairs).
# regal ignore:prefer-set-or-object-rule
_approver_memberships := {[person, group] |
	some approver in input.approval.approvers
	person := approver.id
	not person in _requester_ids
	some group in approver.groups
}

# regal ignore:prefer-set-or-object-rule
_independent_approvers := {person |
	some person in input.approval.approved_by
	not person in _requester_ids
}

# Every identity the call proved: a user token on a workload certificate is the user too.
_requester_ids contains input.subject.id

_requester_ids contains id if {
	some id in object.get(input.subject, ["attributes", "also_verified"], {})
}

# Labels the subject sees in clear now: without approval, or with a satisfied one.
# regal ignore:prefer-set-or-object-rule
_visible_labels := {label |
	# regal ignore:prefer-some-in-iteration
	treatment := _label_treatment[label]
	treatment.see == true
	not treatment.approval
} | {label |
	# regal ignore:prefer-some-in-iteration
	treatment := _label_treatment[label]
	treatment.see == true
	treatment.approval in _satisfied_approvals
}

# Labels the subject could see once an approval is granted, but not yet. Every label of
# every field counts, so a field is held for the approval any of its labels needs, even
# when another of its labels masks it anyway (the grant then releases the field masked).
# regal ignore:prefer-set-or-object-rule
_pending_labels := {label |
	# regal ignore:prefer-some-in-iteration
	treatment := _label_treatment[label]
	treatment.see == true
	treatment.approval
	not label in _visible_labels
}

# The mask of every label that is not visible now. A label without a usable treatment
# (broken tables) or one still waiting for its approval (shown on a replay) is nulled
# rather than shown.
# regal ignore:prefer-set-or-object-rule
_label_mask := {label: mask |
	some label in _field_labels
	not label in _visible_labels
	mask := object.get(_treatment_masks, label, _null_mask)
}

# regal ignore:prefer-set-or-object-rule
_treatment_masks := {label: {"strategy": mask.strategy, "params": object.get(mask, "params", {})} |
	mask := _label_treatment[label].mask
}

# Some field is visible only because a grant was counted.
_grant_used if {
	some label in _visible_labels
	_label_treatment[label].approval
}

_top_pending_rank := max([rank | some label in _pending_labels; rank := _label_rank(label)])

_held_approval_key := keys[0] if {
	keys := sort([key |
		some label in _pending_labels
		_label_rank(label) == _top_pending_rank
		key := _label_treatment[label].approval
	])
}

_held_requirement := tables.approvals[_held_approval_key]

# The held requirement and the grant options the table sets: no key in common, so they
# merge with no conflict; undefined when the requirement is (not object.union: engines.rego
# says why).
_requirement := {name: value |
	some part in [_held_summary, _grant_options]
	value := part[name]
} if {
	_held_summary
}

_held_summary := {
	"approver_groups": _held_requirement.approver_groups,
	"min_approvals": _held_requirement.min_approvals,
	"grant_ttl_seconds": _held_requirement.grant_ttl_seconds,
	"reason": concat("", [
		concat(", ", sort([label | some label in _pending_labels])),
		" data needs ",
		json.marshal(_held_requirement.min_approvals),
		" approval(s) from ",
		concat(", ", _held_requirement.approver_groups),
	]),
}

# What the grant releases, when the approvals table says (result.json documents both):
# grant_scope "query" (the gateway's default: only the held call's query, by request
# digest) or "model" (any query to the model), single_use (one call), and hold_seconds (how
# long a held call waits; result.json), row_budget (rows the grant releases in total). Left out when
# the table does not set them, so the default pack's decisions stay as they were.
_grant_option_names := {"grant_scope", "single_use", "hold_seconds", "row_budget"}

# regal ignore:prefer-set-or-object-rule
_grant_options := {name: value |
	some name in _grant_option_names
	value := _held_requirement[name]
}
