# Input validation: part of package labelgate.decision (see decision.rego).
#
# Lists what is wrong with a policy input before anything is decided. Any problem turns
# the result into a deny (fail closed): a call whose input does not follow the
# labelgate.v1 contract must never reach the clearance rules, because a missing subject,
# group list or label could otherwise read as "no restriction".
# Only what the policy relies on is checked; every message names a place in the input,
# never a value from it.
package labelgate.decision

_contract_version := "labelgate.v1"

_phases := {"request", "response", "replay"}

_approval_states := {"none", "granted"}

# The fast path: the whole contract the policy relies on, checked in one rule, so a
# well-formed input costs little. Only a malformed input evaluates `problems` below, which
# names each defect; the tests pin every check to its problem. Folded into a few builtins
# for the engines' sake (engines.rego, 2.).
_well_formed if {
	input.version == _contract_version
	input.phase in _phases
	is_string(input.subject.id)
	input.subject.id != ""
	_string_list(input.subject.groups)
	is_object(input.request)
	_string_list(input.request.requested_outputs)
	is_boolean(object.get(input.request, "opaque", false))
	_string_list(input.labels)
	is_object(input.context)
	is_object(input.approval)
	input.approval.state in _approval_states
	_string_list(object.get(input.approval, "approved_by", []))
	_approver_list(object.get(input.approval, "approvers", []))
	_fields_well_formed
}

# Every field has a non-empty string path and a non-empty array of string labels.
_fields_well_formed if {
	is_array(input.fields)
	count(_field_path_list) == count(input.fields)
	_string_list(_field_path_list)
	not "" in _field_path_list
	label_lists := [field.labels | some field in input.fields]
	count(label_lists) == count(input.fields)

	# A JSON value has an element [0] only when it is a non-empty array.
	count([labels | some labels in label_lists; is_array(labels); labels[0]]) == count(label_lists)
	_string_list([label | some labels in label_lists; some label in labels])
}

# An array of strings, checked without calling a builtin on what may be another type
# (engines.rego, 3.).
_string_list(value) if {
	is_array(value)
	count([item | some item in value; not is_string(item)]) == 0
}

# An array of approvers: each an object with a string id and an array of string groups.
_approver_list(value) if {
	is_array(value)
	approvers := [approver |
		some approver in value
		is_object(approver)
		is_string(approver.id)
		_string_list(approver.groups)
	]
	count(approvers) == count(value)
}

# The path of every field that has one, in input order.
_field_path_list := [field.path | some field in input.fields]

# _problems: one short sentence per defect in the input; each matches a check above.
# Each check is a rule that is negated as a whole: `not f(input.x)` is undefined (not true)
# in OPA when input.x is missing, so a missing key must never reach a negated call.
_problems contains "input must be a JSON object" if not _input_is_object

_problems contains concat("", [`version must be "`, _contract_version, `"`]) if not _version_ok

_problems contains `phase must be "request", "response" or "replay"` if not _phase_ok

_problems contains "subject is missing: the caller is not authenticated" if not _subject_present

_problems contains "subject.id must be a non-empty string" if {
	_subject_present
	not _subject_id_ok
}

_problems contains "subject.groups must be an array of strings" if {
	_subject_present
	not _subject_groups_ok
}

_problems contains "request.requested_outputs must be an array of strings" if not _requested_outputs_ok

_problems contains "request.opaque must be a boolean" if {
	_requested_outputs_ok
	not _opaque_ok
}

_problems contains "labels must be an array of strings" if not _labels_ok

_problems contains "context must be an object" if not _context_ok

_problems contains "fields must be an array" if not _fields_ok

_problems contains concat("", [
	"fields[", json.marshal(i),
	"] needs a non-empty path and a non-empty array of labels",
]) if {
	_fields_ok
	some i, field in input.fields
	not _valid_field(field)
}

_problems contains `approval.state must be "none" or "granted"` if not _approval_state_ok

_problems contains "approval.approved_by must be an array of strings" if {
	_approval_state_ok
	not _approved_by_ok
}

_problems contains "approval.approvers must be an array of {id: string, groups: [string]}" if {
	_approval_state_ok
	not _approvers_ok
}

_input_is_object if is_object(input)

_version_ok if input.version == _contract_version

_phase_ok if input.phase in _phases

_subject_present if is_object(input.subject)

_subject_id_ok if _non_empty_string(input.subject.id)

_subject_groups_ok if _string_list(input.subject.groups)

_requested_outputs_ok if _string_list(input.request.requested_outputs)

_opaque_ok if {
	is_object(input.request)
	is_boolean(object.get(input.request, "opaque", false))
}

_labels_ok if _string_list(input.labels)

_context_ok if is_object(input.context)

_fields_ok if is_array(input.fields)

_approval_state_ok if input.approval.state in _approval_states

_approved_by_ok if {
	is_object(input.approval)
	_string_list(object.get(input.approval, "approved_by", []))
}

_approvers_ok if {
	is_object(input.approval)
	_approver_list(object.get(input.approval, "approvers", []))
}

_valid_field(field) if {
	_non_empty_string(field.path)
	_string_list(field.labels)
	count(field.labels) > 0
}

_non_empty_string(value) if {
	is_string(value)
	value != ""
}
