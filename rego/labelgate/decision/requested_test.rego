# Tests for outputs requested by name: asking for a restricted output without a way to see it
# is denied outright (no approval offered); the same field merely present is masked.
package labelgate.decision_test

profile_fields := [
	field("outputs.customer_id", ["public"]),
	field("outputs.ssn", ["confidential"]),
	field("outputs.account_secret", ["restricted"]),
]

asks_secret(groups) := requesting(call(groups, profile_fields), ["customer_id", "account_secret"])

test_requesting_restricted_by_name_is_denied_outside_break_glass if {
	every groups in [[], ["analysts"], ["data-stewards"], ["analysts", "data-stewards"]] {
		every phase in ["request", "response"] {
			outcome(with_phase(asks_secret(groups), phase)) == denied(60)
		}
	}
}

test_the_denial_names_the_output if {
	decide(asks_secret(["analysts"])).reason == "denied: the caller may not request account_secret"
}

test_the_denial_lists_every_refused_output_in_order if {
	fields := array.concat(profile_fields, [field("outputs.vault_key", ["restricted"])])
	c := requesting(call([], fields), ["vault_key", "account_secret"])
	decide(c).reason == "denied: the caller may not request account_secret, vault_key"
}

test_a_grant_does_not_help_outside_break_glass if {
	outcome(with_approval(asks_secret(["data-stewards"]), granted)) == denied(0)
}

test_denial_beats_a_pending_hold if {
	# The steward would be held for confidential, but asked for restricted data by name.
	outcome(asks_secret(["data-stewards"])) == denied(60)
}

test_break_glass_asking_by_name_is_held_not_denied if {
	outcome(asks_secret(["break-glass"])) == held(security_hold)
}

test_break_glass_asking_by_name_with_grant_sees_it if {
	outcome(with_approval(asks_secret(["break-glass"]), granted)) == allowed([at("outputs.ssn", redact)], 0)
}

test_restricted_present_but_not_requested_is_masked if {
	outcome(requesting(call(["analysts"], profile_fields), ["customer_id", "ssn"])) == allowed(
		[at("outputs.account_secret", nulled), at("outputs.ssn", partial_last4)],
		60,
	)
}

test_requesting_all_outputs_is_not_asking_by_name if {
	outcome(call(["analysts"], profile_fields)) == allowed(
		[at("outputs.account_secret", nulled), at("outputs.ssn", partial_last4)],
		60,
	)
}

test_requesting_confidential_by_name_is_masked_not_denied if {
	outcome(requesting(call([], profile_fields), ["ssn"])) == allowed(
		[at("outputs.account_secret", nulled), at("outputs.ssn", redact)],
		60,
	)
}

test_only_the_whole_output_path_counts_as_asking if {
	# A detector span inside a requested output is not the output itself.
	c := requesting(call(["analysts"], [field("outputs.notes{vault_key}", ["restricted"])]), ["notes"])
	outcome(c) == allowed([at("outputs.notes{vault_key}", nulled)], 60)
}
