# Requests: part of package labelgate.decision (see decision.rego).
#
# Decides which calls are denied for what they ask for, whatever their masks would be:
# - Asking for a restricted output by name, with no way to see it, is denied outright and
#   no approval is offered: asking is the signal. Only the whole output counts
#   (input.request.requested_outputs holds "<name>" and a field "outputs.<name>" is
#   governed by a label whose table entry says deny_when_requested); the same field merely
#   present in a response is masked instead.
# - An opaque call (the gateway cannot decode the method's messages, so no field is known)
#   is denied unless tables.opaque_methods lists its method with one of the subject's
#   groups, or with "*" for any authenticated subject. Unknown content is never allowed by
#   default.
# - A model admin method (Triton's RepositoryModelLoad and RepositoryModelUnload, which change
#   what an upstream serves) is denied unless tables.model_admin_methods lists the method with
#   one of the subject's groups. The methods are named here, not only in the tables, so tables
#   that lack the entry deny them.
package labelgate.decision

# The tables are JSON data, which Regal cannot resolve (see .regal/config.yaml).
import data.labelgate.tables

# regal ignore:prefer-set-or-object-rule
denied_outputs := {name |
	some name in input.request.requested_outputs
	label := path_label[concat("", ["outputs.", name])]
	deny_when_requested(label)
	not may_see(label)
}

deny_when_requested(label) if tables.labels[label].deny_when_requested == true

deny_when_requested(label) if {
	not tables.labels[label]
	tables.unknown_label.deny_when_requested == true
}

# The subject can see the label now or after an approval.
may_see(label) if label_treatment[label].see == true

requested_reason := concat("", ["denied: the caller may not request ", concat(", ", sorted(denied_outputs))])

opaque_denied if {
	input.request.opaque == true
	not opaque_allowed
}

opaque_allowed if "*" in tables.opaque_methods[input.request.method]

opaque_allowed if {
	some group in tables.opaque_methods[input.request.method]
	group in input.subject.groups
}

opaque_reason := concat("", [
	"denied: ", input.request.method,
	" cannot be classified (opaque to the gateway) and is not allowed for this caller",
])

model_admin_methods := {
	"/inference.GRPCInferenceService/RepositoryModelLoad",
	"/inference.GRPCInferenceService/RepositoryModelUnload",
}

model_admin_denied if {
	input.request.method in model_admin_methods
	not model_admin_allowed
}

model_admin_allowed if {
	some group in tables.model_admin_methods[input.request.method]
	group in input.subject.groups
}

model_admin_reason := concat("", [
	"denied: ", input.request.method,
	" changes the models an upstream serves and needs a model admin group",
])
