# Tests for opaque calls (methods whose messages the gateway cannot decode): denied unless
# tables.opaque_methods allows the method for one of the subject's groups, or for "*".
package labelgate.decision_test

audit_method := "/acme.audit.v1.Audit/Export"

opaque_call(groups) := object.union(call(groups, []), {"request": {
	"service": "acme.audit.v1.Audit",
	"method": audit_method,
	"model": "",
	"opaque": true,
}})

opaque_tables(groups) := object.union(data.labelgate.tables, {"opaque_methods": {audit_method: groups}})

test_opaque_calls_are_denied_by_default if {
	every groups in [[], ["analysts"], ["data-stewards", "break-glass"]] {
		every phase in ["request", "response"] {
			outcome(with_phase(opaque_call(groups), phase)) == denied(60)
		}
	}
}

test_the_opaque_denial_names_the_method if {
	decide(opaque_call(["analysts"])).reason == concat("", [
		"denied: /acme.audit.v1.Audit/Export cannot be classified (opaque to the gateway) ",
		"and is not allowed for this caller",
	])
}

test_an_allowed_opaque_method_passes_for_its_groups if {
	outcome(opaque_call(["auditors"])) == allowed([], 60) with data.labelgate.tables as opaque_tables(["auditors"])
	outcome(opaque_call(["analysts"])) == denied(60) with data.labelgate.tables as opaque_tables(["auditors"])
}

test_a_star_allows_any_authenticated_subject if {
	outcome(opaque_call([])) == allowed([], 60) with data.labelgate.tables as opaque_tables(["*"])
}

test_an_allowed_opaque_method_still_masks_known_fields if {
	c := object.union(opaque_call(["auditors"]), {"fields": [field("export.owner", ["internal"])]})
	outcome(c) == allowed([at("export.owner", redact)], 60) with data.labelgate.tables as opaque_tables(["auditors"])
}

test_another_method_is_not_allowed_by_the_entry if {
	c := object.union(opaque_call(["auditors"]), {"request": {"method": "/acme.audit.v1.Audit/Purge"}})
	outcome(c) == denied(60) with data.labelgate.tables as opaque_tables(["auditors"])
}

test_a_malformed_opaque_call_is_malformed_first if {
	c := object.remove(opaque_call(["auditors"]), ["subject"])
	decide(c).reason == "denied: malformed policy input: subject is missing: the caller is not authenticated"
}

test_not_opaque_is_decided_normally if {
	c := object.union(call(["analysts"], [field("outputs.name", ["internal"])]), {"request": {"opaque": false}})
	outcome(c) == allowed([], 60)
}
