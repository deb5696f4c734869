# Tests for malformed inputs: each is denied (fail closed) with a reason naming the defect,
# no masks, no approval offered, and no caching.
package labelgate.decision_test

good := call(["analysts"], [field("outputs.name", ["internal"])])

malformed(problem) := {
	"allow": false,
	"reason": concat("", ["denied: malformed policy input: ", problem]),
	"mask": [],
	"require_approval": null,
	"cache_ttl_seconds": 0,
}

without(key) := object.remove(good, [key])

replacing(patch) := object.union(good, patch)

with_approvers(approvers) := replacing({"approval": {"approvers": approvers}})

subject_problem := "subject is missing: the caller is not authenticated"

groups_problem := "subject.groups must be an array of strings"

requested_problem := "request.requested_outputs must be an array of strings"

state_problem := `approval.state must be "none" or "granted"`

approvers_problem := "approval.approved_by must be an array of strings"

approvers_shape := "approval.approvers must be an array of {id: string, groups: [string]}"

field_problem := "fields[0] needs a non-empty path and a non-empty array of labels"

# [name, input, the one problem it must report]
one_problem_cases := [
	["no subject", without("subject"), subject_problem],
	["null subject", replacing({"subject": null}), subject_problem],
	["subject not an object", replacing({"subject": "caller-1"}), subject_problem],
	["empty subject id", replacing({"subject": {"id": ""}}), "subject.id must be a non-empty string"],
	["missing subject id", replacing({"subject": {"id": null}}), "subject.id must be a non-empty string"],
	["numeric subject id", replacing({"subject": {"id": 7}}), "subject.id must be a non-empty string"],
	["groups not an array", replacing({"subject": {"groups": "analysts"}}), groups_problem],
	["group not a string", replacing({"subject": {"groups": ["analysts", 1]}}), groups_problem],
	["wrong version", replacing({"version": "labelgate.v2"}), `version must be "labelgate.v1"`],
	["no version", without("version"), `version must be "labelgate.v1"`],
	["wrong phase", replacing({"phase": "later"}), `phase must be "request", "response" or "replay"`],
	["no phase", without("phase"), `phase must be "request", "response" or "replay"`],
	["fields not an array", replacing({"fields": {"path": "outputs.name"}}), "fields must be an array"],
	["no fields", without("fields"), "fields must be an array"],
	["field not an object", replacing({"fields": ["outputs.name"]}), field_problem],
	["field with empty path", replacing({"fields": [{"path": "", "labels": ["public"]}]}), field_problem],
	["field without labels", replacing({"fields": [{"path": "outputs.name", "labels": []}]}), field_problem],
	["field labels not an array", replacing({"fields": [{"path": "outputs.name", "labels": "public"}]}), field_problem],
	["no request", without("request"), requested_problem],
	["requested outputs not strings", replacing({"request": {"requested_outputs": [1]}}), requested_problem],
	["opaque not a boolean", replacing({"request": {"opaque": "yes"}}), "request.opaque must be a boolean"],
	["no approval", without("approval"), state_problem],
	["unknown approval state", replacing({"approval": {"state": "approved"}}), state_problem],
	["approved_by not an array", replacing({"approval": {"approved_by": "owner-1"}}), approvers_problem],
	["approvers not an array", replacing({"approval": {"approvers": "owner-1"}}), approvers_shape],
	["approver not an object", replacing({"approval": {"approvers": ["owner-1"]}}), approvers_shape],
	["approver without groups", replacing({"approval": {"approvers": [{"id": "owner-1"}]}}), approvers_shape],
	["approver id not a string", with_approvers([{"id": 7, "groups": []}]), approvers_shape],
	["approver groups not strings", with_approvers([{"id": "o", "groups": [1]}]), approvers_shape],
	["labels not an array", replacing({"labels": "internal"}), "labels must be an array of strings"],
	["no context", without("context"), "context must be an object"],
]

malformed_failures contains case[0] if {
	some case in one_problem_cases
	not reports(case[1], case[2])
}

reports(bad_input, problem) if decide(bad_input) == malformed(problem)

test_each_malformed_input_is_denied_with_its_reason if {
	count(malformed_failures) == 0
}

test_the_well_formed_base_is_allowed if {
	outcome(good) == allowed([], 60)
}

test_malformed_is_denied_in_both_phases_even_for_stewards if {
	every phase in ["request", "response"] {
		steward := with_phase(call(["data-stewards"], [field("outputs.ssn", ["confidential"])]), phase)
		c := object.union(steward, {"version": "v0"})
		decide(c) == malformed(`version must be "labelgate.v1"`)
	}
}

test_several_problems_are_listed_in_order if {
	c := object.union(without("subject"), {"version": 1, "fields": [{"path": "outputs.a", "labels": ["public"]}, {}]})
	decide(c) == malformed(concat("; ", [
		"fields[1] needs a non-empty path and a non-empty array of labels",
		subject_problem,
		`version must be "labelgate.v1"`,
	]))
}

test_an_input_that_is_not_an_object_is_denied if {
	result := data.labelgate.decision.result with input as "allow me"
	result.allow == false
	startswith(result.reason, "denied: malformed policy input: ")
	contains(result.reason, "input must be a JSON object")
	contains(result.reason, subject_problem)
}

test_no_input_at_all_is_denied if {
	data.labelgate.decision.result.allow == false
	data.labelgate.decision.result.require_approval == null
}
