# Requests: part of package labelgate.decision (see decision.rego).
#
# Decides which calls are denied for what they ask for, whatever their masks would be:
# - Asking for a restricted output by name, with no way to see it, is denied outright and
#   no approval is offered: asking is the signal. Only the whole output counts
#   (input.request.requested_outputs holds "<name>" and a field "outputs.<name>" carries
#   a label whose table entry says deny_when_requested and that the subject may not see
#   even after an approval); the same field merely present in a response is masked instead.
# - An opaque call (the gateway cannot decode the method's messages, so no field is known)
#   is denied unless tables.opaque_methods lists its method with one of the subject's
#   groups, or with "*" for any authenticated subject. Unknown content is never allowed by
#   default.
# - A model admin method (Triton's RepositoryModelLoad and RepositoryModelUnload, which change
#   what an upstream serves) is denied unless tables.model_admin_methods lists the method with
#   one of the subject's groups. The methods are named here, not only in the tables, so tables
#   that lack the entry deny them. Replaying a recorded call of such a method is not calling it.
package labelgate.decision

# The tables are JSON data, which Regal cannot resolve (see .regal/config.yaml).
import data.labelgate.tables

# Any label of the output can deny it, as any label can mask it (clearance.rego).
# regal ignore:prefer-set-or-object-rule
_denied_outputs := {name |
	some name in input.request.requested_outputs
	some label in _path_labels[concat("", ["outputs.", name])]
	_deny_when_requested(label)
	not _may_see(label)
}

_deny_when_requested(label) if tables.labels[label].deny_when_requested == true

_deny_when_requested(label) if {
	not tables.labels[label]
	tables.unknown_label.deny_when_requested == true
}

# The subject can see the label now or after an approval.
_may_see(label) if _label_treatment[label].see == true

_requested_reason := concat("", ["denied: the caller may not request ", concat(", ", _sorted(_denied_outputs))])

_opaque_denied if {
	input.request.opaque == true
	not _opaque_allowed
}

_opaque_allowed if "*" in tables.opaque_methods[input.request.method]

_opaque_allowed if {
	some group in tables.opaque_methods[input.request.method]
	group in input.subject.groups
}

_opaque_reason := concat("", [
	"denied: ", input.request.method,
	" cannot be classified (opaque to the gateway) and is not allowed for this caller",
])

_model_admin_methods := {
	"/inference.GRPCInferenceService/RepositoryModelLoad",
	"/inference.GRPCInferenceService/RepositoryModelUnload",
}

_model_admin_denied if {
	input.phase != "replay" # viewing a recorded call changes no model
	input.request.method in _model_admin_methods
	not _model_admin_allowed
}

_model_admin_allowed if {
	some group in tables.model_admin_methods[input.request.method]
	group in input.subject.groups
}

_model_admin_reason := concat("", [
	"denied: ", input.request.method,
	" changes the models an upstream serves and needs a model admin group",
])
