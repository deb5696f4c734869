# Approvals: part of package labelgate.decision (see decision.rego).
#
# Decides which approval-gated fields a granted approval unlocks and, when some stay locked,
# the one approval requirement the call is held for.
# input.approval.state == "granted" means the gateway verified a grant for exactly this
# call's subject, method, model and label set. As a second line of defence, when the
# gateway lists approved_by, the grant only counts for a requirement if enough distinct
# people other than the subject approved it (no self-approval, and a one-person grant can
# never satisfy a two-person rule).
# A call that needs several approvals (e.g. confidential for data-stewards and restricted
# for break-glass) is held for ONE requirement: the one of its most sensitive pending
# label. A weaker approver group therefore never unlocks a more sensitive label.
package labelgate.decision

# The tables are JSON data, which Regal cannot resolve (see .regal/config.yaml).
import data.labelgate.tables

# The approvals (keys of tables.approvals) that the grant in the input satisfies: without
# approved_by the policy trusts the state (for requirements of at least one approval);
# with it, only distinct approvers other than the subject count.
# regal ignore:prefer-set-or-object-rule
satisfied_approvals := {key |
	input.approval.state == "granted"

	# regal ignore:prefer-some-in-iteration
	requirement := tables.approvals[key]
	not input.approval.approved_by
	requirement.min_approvals >= 1
} | {key |
	input.approval.state == "granted"

	# regal ignore:prefer-some-in-iteration
	requirement := tables.approvals[key]
	count(independent_approvers) >= requirement.min_approvals
}

# regal ignore:prefer-set-or-object-rule
independent_approvers := {person | some person in input.approval.approved_by; person != input.subject.id}

# Governing labels the subject sees in clear now: without approval, or with a satisfied one.
# regal ignore:prefer-set-or-object-rule
visible_labels := {label |
	# regal ignore:prefer-some-in-iteration
	treatment := label_treatment[label]
	treatment.see == true
	not treatment.approval
} | {label |
	# regal ignore:prefer-some-in-iteration
	treatment := label_treatment[label]
	treatment.see == true
	treatment.approval in satisfied_approvals
}

# Governing labels the subject could see once an approval is granted, but not yet.
# regal ignore:prefer-set-or-object-rule
pending_labels := {label |
	# regal ignore:prefer-some-in-iteration
	treatment := label_treatment[label]
	treatment.see == true
	treatment.approval
	not label in visible_labels
}

# The mask of every governing label that is not visible. A label without a usable
# treatment (broken tables, or an unknown label) is nulled rather than shown.
# regal ignore:prefer-set-or-object-rule
label_mask := {label: mask |
	some label in governing_labels
	not label in visible_labels
	mask := object.get(treatment_masks, label, {"strategy": "null", "params": {}})
}

# regal ignore:prefer-set-or-object-rule
treatment_masks := {label: {"strategy": mask.strategy, "params": object.get(mask, "params", {})} |
	mask := label_treatment[label].mask
}

# Some field is visible only because a grant was counted.
grant_used if {
	some label in visible_labels
	label_treatment[label].approval
}

top_pending_rank := max([rank | some label in pending_labels; rank := label_rank(label)])

held_approval_key := keys[0] if {
	keys := sort([key |
		some label in pending_labels
		label_rank(label) == top_pending_rank
		key := label_treatment[label].approval
	])
}

held_requirement := tables.approvals[held_approval_key]

require_approval := object.union(
	{
		"approver_groups": held_requirement.approver_groups,
		"min_approvals": held_requirement.min_approvals,
		"grant_ttl_seconds": held_requirement.grant_ttl_seconds,
		"reason": concat("", [
			concat(", ", sort([label | some label in pending_labels])),
			sprintf(" data needs %d approval(s) from ", [held_requirement.min_approvals]),
			concat(", ", held_requirement.approver_groups),
		]),
	},
	grant_options,
)

# What the grant releases, when the approvals table says (result.json documents both):
# grant_scope "query" (the gateway's default: only the held call's query, by request
# digest) or "model" (any query to the model), and single_use (one call). Left out when
# the table does not set them, so the default pack's decisions stay as they were.
grant_option_names := {"grant_scope", "single_use"}

# regal ignore:prefer-set-or-object-rule
grant_options := {name: value |
	some name in grant_option_names
	value := held_requirement[name]
}
