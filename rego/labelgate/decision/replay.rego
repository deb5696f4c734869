# Replay: part of package labelgate.decision (see decision.rego).
#
# Viewing a recorded call is itself a decision, for the viewer: the gateway sends phase
# "replay" with the viewer as the subject, the recorded call's request and fields (labels
# and all), no requested outputs (the viewer asks for nothing by name), and the original
# caller in context.recorded_call. What was delivered to the caller does not matter: the
# viewer sees each field as the label tables let the viewer's own groups see it, so an
# auditor without clearance sees a break-glass caller's restricted values masked.
# - Only members of tables.replay.viewer_groups may replay at all; anyone else is denied
#   and is shown nothing of the values.
# - A label the viewer could see only after an approval stays masked (null, or the
#   treatment's mask), and the result names the approval (require_approval) so the page
#   can say what seeing it in clear would need. Replays never count a grant.
package labelgate.decision

# The tables are JSON data, which Regal cannot resolve (see .regal/config.yaml).
import data.labelgate.tables

_replay_refused if {
	input.phase == "replay"
	not _replay_viewer
}

_replay_viewer if {
	some group in input.subject.groups
	group in tables.replay.viewer_groups
}

_replay_refused_reason := concat("", [
	"denied: ", input.subject.id,
	" may not view recorded calls (not in a replay viewer group)",
])

_replay_reason := concat("", ["allowed for replay; ", _mask_note]) if count(_pending_labels) == 0

else := concat("", ["allowed for replay; ", _mask_note, "; in clear only after approval: ", _requirement.reason])
