# Tests for model admin methods (Triton's RepositoryModelLoad and RepositoryModelUnload):
# denied unless tables.model_admin_methods lists the method with one of the subject's
# groups (model-admins in the default tables); tables without the entry deny them.
package labelgate.decision_test

load_method := "/inference.GRPCInferenceService/RepositoryModelLoad"

unload_method := "/inference.GRPCInferenceService/RepositoryModelUnload"

admin_call(method, groups) := object.union(call(groups, []), {"request": {
	"method": method,
	"model": "sentiment",
}})

test_model_admins_may_load_and_unload if {
	every method in [load_method, unload_method] {
		every phase in ["request", "response"] {
			outcome(with_phase(admin_call(method, ["model-admins"]), phase)) == allowed([], 60)
		}
	}
}

test_everyone_else_is_denied if {
	every method in [load_method, unload_method] {
		every groups in [[], ["analysts"], ["data-stewards", "break-glass", "security"]] {
			outcome(admin_call(method, groups)) == denied(60)
		}
	}
}

test_the_denial_names_the_method if {
	decide(admin_call(unload_method, ["analysts"])).reason == concat("", [
		"denied: /inference.GRPCInferenceService/RepositoryModelUnload ",
		"changes the models an upstream serves and needs a model admin group",
	])
}

test_tables_without_the_entry_deny_even_model_admins if {
	bare := object.remove(data.labelgate.tables, ["model_admin_methods"])
	outcome(admin_call(load_method, ["model-admins"])) == denied(60) with data.labelgate.tables as bare
}

test_a_malformed_admin_call_is_malformed_first if {
	c := object.remove(admin_call(load_method, ["model-admins"]), ["subject"])
	decide(c).reason == "denied: malformed policy input: subject is missing: the caller is not authenticated"
}

test_other_inference_methods_are_not_admin_methods if {
	c := object.union(call([], [field("config.name", ["public"])]), {"request": {
		"method": "/inference.GRPCInferenceService/ModelConfig",
		"model": "sentiment",
	}})
	outcome(c) == allowed([], 60)
}

test_model_admin_methods_map_the_two_methods_to_group_lists if {
	object.keys(data.labelgate.tables.model_admin_methods) == {load_method, unload_method}
	every groups in data.labelgate.tables.model_admin_methods {
		is_array(groups)
		every group in groups {
			is_string(group)
		}
	}
}
