# Input validation: part of package labelgate.decision (see decision.rego).
#
# Lists what is wrong with a policy input before anything is decided. Any problem turns
# the result into a deny (fail closed): a call whose input does not follow the
# labelgate.v1 contract must never reach the clearance rules, because a missing subject,
# group list or label could otherwise read as "no restriction".
# Only what the policy relies on is checked; every message names a place in the input,
# never a value from it.
package labelgate.decision

contract_version := "labelgate.v1"

phases := {"request", "response"}

approval_states := {"none", "granted"}

# The fast path: the whole contract the policy relies on, checked in one rule, so a
# well-formed input costs little. Only a malformed input evaluates `problems` below, which
# names each defect; the tests pin every check to its problem.
# Performance: rego-cpp spends ~10-20 µs per builtin call and ~50 µs per call of a
# user-defined function (more than on a whole pass over the fields), so checks over many
# values are folded into a few builtins that loop natively, and no helper is called.
# array.concat() is defined only for arrays and concat() only for strings (an argument of
# another type leaves them undefined), so one expression checks every string list.
well_formed if {
	input.version == contract_version
	input.phase in phases
	is_string(input.subject.id)
	input.subject.id != ""

	# Not array.flatten(): it would pass a string list's non-array value through.
	# regal ignore:use-array-flatten
	is_string(concat("", array.concat(
		array.concat(input.subject.groups, input.request.requested_outputs),
		array.concat(input.labels, object.get(input.approval, "approved_by", [])),
	)))
	is_boolean(object.get(input.request, "opaque", false))
	is_object(input.context)
	input.approval.state in approval_states
	fields_well_formed
}

# Every field has a non-empty string path and a non-empty array of string labels.
fields_well_formed if {
	is_array(input.fields)
	count(field_path_list) == count(input.fields)
	is_string(concat("", field_path_list))
	not "" in field_path_list
	label_lists := [field.labels | some field in input.fields]
	count(label_lists) == count(input.fields)

	# A JSON value has an element [0] only when it is a non-empty array.
	count([labels | some labels in label_lists; labels[0]]) == count(label_lists)
	is_string(concat("", [label | some labels in label_lists; some label in labels]))
}

# The path of every field that has one, in input order.
field_path_list := [field.path | some field in input.fields]

# problems: one short sentence per defect in the input; each matches a check above.
# Each check is a rule that is negated as a whole: `not f(input.x)` is undefined (not true)
# in OPA when input.x is missing, so a missing key must never reach a negated call.
problems contains "input must be a JSON object" if not input_is_object

problems contains concat("", [`version must be "`, contract_version, `"`]) if not version_ok

problems contains `phase must be "request" or "response"` if not phase_ok

problems contains "subject is missing: the caller is not authenticated" if not subject_present

problems contains "subject.id must be a non-empty string" if {
	subject_present
	not subject_id_ok
}

problems contains "subject.groups must be an array of strings" if {
	subject_present
	not subject_groups_ok
}

problems contains "request.requested_outputs must be an array of strings" if not requested_outputs_ok

problems contains "request.opaque must be a boolean" if {
	requested_outputs_ok
	not opaque_ok
}

problems contains "labels must be an array of strings" if not labels_ok

problems contains "context must be an object" if not context_ok

problems contains "fields must be an array" if not fields_ok

problems contains sprintf("fields[%d] needs a non-empty path and a non-empty array of labels", [i]) if {
	fields_ok
	some i, field in input.fields
	not valid_field(field)
}

problems contains `approval.state must be "none" or "granted"` if not approval_state_ok

problems contains "approval.approved_by must be an array of strings" if {
	approval_state_ok
	not approved_by_ok
}

input_is_object if is_object(input)

version_ok if input.version == contract_version

phase_ok if input.phase in phases

subject_present if is_object(input.subject)

subject_id_ok if non_empty_string(input.subject.id)

subject_groups_ok if string_array(input.subject.groups)

requested_outputs_ok if string_array(input.request.requested_outputs)

opaque_ok if is_boolean(object.get(input.request, "opaque", false))

labels_ok if string_array(input.labels)

context_ok if is_object(input.context)

fields_ok if is_array(input.fields)

approval_state_ok if input.approval.state in approval_states

approved_by_ok if string_array(object.get(input.approval, "approved_by", []))

valid_field(field) if {
	non_empty_string(field.path)
	string_array(field.labels)
	count(field.labels) > 0
}

non_empty_string(value) if {
	is_string(value)
	value != ""
}

string_array(value) if {
	is_array(value)
	every item in value {
		is_string(item)
	}
}
