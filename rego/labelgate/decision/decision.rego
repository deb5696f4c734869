# METADATA
# title: labelgate.v1 decision
# description: |
#   The entrypoint the gateway queries for every call, once per phase, and for every
#   recorded call an auditor replays: may the verified subject receive (or, in the replay
#   phase, view) these classified fields, and which must be masked? One case decides,
#   most severe first, so no case can fall through to another: malformed input (deny) >
#   an opaque method not allowed (deny) > a model admin method (RepositoryModelLoad/Unload)
#   by a subject outside its groups (deny) > a replay by a subject outside the replay viewer
#   groups (deny) > a restricted output requested by name without clearance (deny, asking is
#   the signal) > a replay (allow, masked per the viewer's clearance; labels the viewer could
#   see only after an approval stay masked and the approval is named) > an approval-gated
#   field without a grant (hold) > allow with masks. Anything else, including broken tables,
#   leaves the default: deny.
# schemas:
#   - input: schema.input
package labelgate.decision

# The tables are JSON data, which Regal cannot resolve (see .regal/config.yaml).
import data.labelgate.tables

# METADATA
# entrypoint: true
# description: The labelgate.v1 result; always defined, and valid against result.json.
default result := {
	"allow": false,
	"reason": "denied: the policy could not reach a decision",
	"mask": [],
	"require_approval": null,
	"cache_ttl_seconds": 0,
}

# One shape for every case, one rule per key. A key that has no value for the case (broken
# tables) leaves the whole result undefined, so the default deny above applies.
result := {
	"allow": _allow,
	"reason": _reason,
	"mask": _mask,
	"require_approval": _require_approval,
	"cache_ttl_seconds": _cache_ttl_seconds,
}

# The case that decides, most severe first. One else chain, so the order is the precedence;
# Regal counts the chain as one long rule.
# regal ignore:rule-length
_case := "malformed" if {
	not _well_formed
}

else := "opaque" if {
	_opaque_denied
}

else := "model_admin" if {
	_model_admin_denied
}

else := "replay_refused" if {
	_replay_refused
}

else := "requested" if {
	count(_denied_outputs) > 0
}

else := "replay" if {
	input.phase == "replay"
}

else := "held" if {
	count(_pending_labels) > 0
}

else := "allowed" if {
	count(_pending_labels) == 0
}

# -- allow: only an allowed call or replay; a held call returns nothing until its grant.
default _allow := false

_allow if {
	_case == "allowed"
} else if {
	_case == "replay"
}

# -- reason: text the caller (or the viewer) may see. Each key is one else chain with the
# common case first, so an allowed call settles it in one comparison (engines.rego, 2.).
_reason := _allowed_reason if {
	_case == "allowed"
} else := _replay_reason if {
	_case == "replay"
} else := concat("", ["held for approval: ", _require_approval.reason]) if {
	_case == "held"
} else := _requested_reason if {
	_case == "requested"
} else := _malformed_reason if {
	_case == "malformed"
} else := _opaque_reason if {
	_case == "opaque"
} else := _model_admin_reason if {
	_case == "model_admin"
} else := _replay_refused_reason if {
	_case == "replay_refused"
}

# -- mask: every field not visible in clear. A denied or held call returns nothing, so it
# carries no masks; a replay masks the fields that wait for an approval too.
default _mask := []

_mask := _masks if {
	_case == "allowed"
} else := _masks if {
	_case == "replay"
}

# -- require_approval: what a held call waits for; on a replay, what seeing the fields that
# stay masked in clear would need (the viewer is shown them masked either way).
default _require_approval := null

_require_approval := _requirement if {
	_case == "held"
} else := _requirement if {
	_case == "replay"
	count(_pending_labels) > 0
}

# -- cache_ttl_seconds: results that depend on a grant, or on nothing sound, are not cached.
_cache_ttl_seconds := _cache_ttl if {
	_case == "allowed"
} else := tables.cache_ttl_seconds.approval if {
	_case == "held"
} else := tables.cache_ttl_seconds.malformed if {
	_case == "malformed"
} else := _cache_ttl

_malformed_reason := concat("", ["denied: malformed policy input: ", concat("; ", _sorted(_problems))])

# Every field not visible in clear gets exactly one mask (clearance.rego: _masked_fields),
# in path order.
_masks := [{"path": path, "strategy": mask.strategy, "params": mask.params} |
	# regal ignore:prefer-some-in-iteration
	some path in sort([masked_path | _masked_fields[masked_path]])
	mask := _masked_fields[path]
]

_allowed_reason := concat("", ["allowed", _grant_note, "; ", _mask_note])

default _grant_note := ""

_grant_note := " under an approval grant" if _grant_used

_mask_note := "every field is visible" if count(_masks) == 0

else := concat("", [json.marshal(count(_masks)), " field(s) masked"])

# Results that depend on a grant must not outlive it.
_cache_ttl := tables.cache_ttl_seconds.approval if input.approval.state == "granted"

else := tables.cache_ttl_seconds.plain
