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

# The approvals (keys of tables.approvals) that the grant in the input satisfies.
satisfied_approvals contains key if {
	input.approval.state == "granted"
	some key, requirement in tables.approvals
	grant_satisfies(requirement)
}

grant_satisfies(requirement) if {
	not input.approval.approved_by
	requirement.min_approvals >= 1
}

grant_satisfies(requirement) if count(independent_approvers) >= requirement.min_approvals

independent_approvers contains person if {
	some person in input.approval.approved_by
	person != input.subject.id
}

visible(treatment) if {
	treatment.see == true
	not treatment.approval
}

visible(treatment) if {
	treatment.see == true
	satisfied_approvals[treatment.approval]
}

# Governing labels the subject sees in clear now.
visible_labels contains label if {
	some label, treatment in label_treatment
	visible(treatment)
}

# Governing labels the subject could see once an approval is granted, but not yet.
pending_labels contains label if {
	some label, treatment in label_treatment
	treatment.see == true
	treatment.approval
	not visible_labels[label]
}

# Some field is visible only because a grant was counted.
grant_used if {
	some label in visible_labels
	label_treatment[label].approval
}

top_pending_rank := max({rank[label] | some label in pending_labels})

held_approval_key := keys[0] if {
	keys := sorted({label_treatment[label].approval |
		some label in pending_labels
		rank[label] == top_pending_rank
	})
}

held_requirement := tables.approvals[held_approval_key]

require_approval := {
	"approver_groups": held_requirement.approver_groups,
	"min_approvals": held_requirement.min_approvals,
	"grant_ttl_seconds": held_requirement.grant_ttl_seconds,
	"reason": concat("", [
		concat(", ", sorted(pending_labels)),
		sprintf(" data needs %d approval(s) from ", [held_requirement.min_approvals]),
		concat(", ", held_requirement.approver_groups),
	]),
}
