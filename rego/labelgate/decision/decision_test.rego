# Tests for the default policy table: every cell (label x persona), in both phases, with and
# without a granted approval. Expected outcomes are written out literally here, not derived
# from the tables, so a table edit that changes behaviour makes these fail.
package labelgate.decision_test

personas := {
	"no group": [],
	"analysts": ["analysts"],
	"data-stewards": ["data-stewards"],
	"break-glass": ["break-glass"],
}

# One row per cell. "none" and "granted" are the outcomes without and with a granted
# approval: "see", a mask, or {"hold": requirement}.
cells := [
	{"label": "public", "persona": "no group", "none": "see", "granted": "see"},
	{"label": "public", "persona": "analysts", "none": "see", "granted": "see"},
	{"label": "public", "persona": "data-stewards", "none": "see", "granted": "see"},
	{"label": "public", "persona": "break-glass", "none": "see", "granted": "see"},
	{"label": "internal", "persona": "no group", "none": redact, "granted": redact},
	{"label": "internal", "persona": "analysts", "none": "see", "granted": "see"},
	{"label": "internal", "persona": "data-stewards", "none": "see", "granted": "see"},
	{"label": "internal", "persona": "break-glass", "none": redact, "granted": redact},
	{"label": "confidential", "persona": "no group", "none": redact, "granted": redact},
	{"label": "confidential", "persona": "analysts", "none": partial_last4, "granted": partial_last4},
	{"label": "confidential", "persona": "data-stewards", "none": {"hold": owners_hold}, "granted": "see"},
	{"label": "confidential", "persona": "break-glass", "none": redact, "granted": redact},
	{"label": "restricted", "persona": "no group", "none": nulled, "granted": nulled},
	{"label": "restricted", "persona": "analysts", "none": nulled, "granted": nulled},
	{"label": "restricted", "persona": "data-stewards", "none": nulled, "granted": nulled},
	{"label": "restricted", "persona": "break-glass", "none": {"hold": security_hold}, "granted": "see"},
]

approvals := {"none": {"state": "none"}, "granted": granted}

# Results that depend on a grant are not cached; plain ones are cached for 60 s.
ttls := {"none": 60, "granted": 0}

cell_input(cell, phase, state) := with_approval(
	with_phase(call(personas[cell.persona], [field("outputs.cell", [cell.label])]), phase),
	approvals[state],
)

expected_cell("see", state) := allowed([], ttls[state])

expected_cell(want, state) := allowed([at("outputs.cell", want)], ttls[state]) if want.strategy

expected_cell(want, _) := held(want.hold) if want.hold

cell_failures contains sprintf("%s / %s / %s / %s", [cell.label, cell.persona, phase, state]) if {
	some cell in cells
	some phase in ["request", "response"]
	some state in ["none", "granted"]
	not cell_holds(cell, phase, state)
}

# A cell holds when the result equals the expected one (an undefined expectation fails too).
cell_holds(cell, phase, state) if outcome(cell_input(cell, phase, state)) == expected_cell(cell[state], state)

test_every_cell_of_the_default_table if {
	count(cell_failures) == 0
}

test_the_table_covers_every_label_and_persona if {
	pairs := {[cell.label, cell.persona] | some cell in cells}
	count(pairs) == count(cells)
	count(pairs) == count(personas) * count(data.labelgate.tables.labels)
	every pair in pairs {
		personas[pair[1]]
		data.labelgate.tables.labels[pair[0]]
	}
}

test_visible_field_reason if {
	decide(call(["analysts"], [field("outputs.name", ["internal"])])).reason == "allowed; every field is visible"
}

test_masked_field_reason if {
	decide(call([], [field("outputs.name", ["internal"])])).reason == "allowed; 1 field(s) masked"
}

test_granted_field_reason if {
	c := with_approval(call(["data-stewards"], [field("outputs.ssn", ["confidential"])]), granted)
	decide(c).reason == "allowed under an approval grant; every field is visible"
}

test_held_reason if {
	c := with_phase(call(["data-stewards"], [field("outputs.ssn", ["confidential"])]), "request")
	decide(c).reason == "held for approval: confidential data needs 1 approval(s) from data-owners"
}

test_a_call_without_fields_is_allowed_unmasked if {
	outcome(call([], [])) == allowed([], 60)
}

test_a_whole_response_is_masked_per_field_in_path_order if {
	fields := [
		field("outputs.ssn", ["confidential"]),
		field("outputs.account_secret", ["restricted"]),
		field("outputs.customer_id", ["public"]),
		field("outputs.name", ["internal"]),
		field("outputs.notes{us_ssn}", ["confidential"]),
		field("outputs.profile[].card.number", ["confidential"]),
	]
	outcome(call(["analysts"], fields)) == allowed(
		[
			at("outputs.account_secret", nulled),
			at("outputs.notes{us_ssn}", partial_last4),
			at("outputs.profile[].card.number", partial_last4),
			at("outputs.ssn", partial_last4),
		],
		60,
	)
}

test_no_group_caller_sees_only_public if {
	fields := [field("outputs.segment", ["public"]), field("outputs.email", ["internal"])]
	outcome(call([], fields)) == allowed([at("outputs.email", redact)], 60)
}
