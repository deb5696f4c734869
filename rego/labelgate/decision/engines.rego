# Engines: part of package labelgate.decision (see decision.rego).
#
# The one place for what the policy does because of the engines that run it. Every other
# file is written for readers; where a rule has an odd shape, it points here.
#
# 1. Identical answers. The gateway runs this pack on OPA, on OPA's Wasm target and on
#    rego-cpp (the embedded engine, regopy), and tests/policy/test_differential.py holds
#    them to byte-identical results. rego-cpp 1.5.2 differs from OPA in many builtins
#    (docs/EMBEDDED_COMPLIANCE.md: those are refused at load, and sort, max, min and
#    json.marshal run through exact guards); the two this pack had to shape itself around:
#    sort() of a set returns the set itself (unsorted, and concat() then follows insertion
#    order), and sprintf's %s quotes some strings. So sets are sorted as arrays
#    (_sorted below), strings are joined with concat(), and numbers are written with
#    json.marshal() rather than sprintf's %d: the Wasm target implements json.marshal itself,
#    while sprintf is a call back into the gateway's host (~10 µs a decision).
#    rego-cpp 1.5.2 also cannot parse `some key, value in` inside a comprehension, so a
#    comprehension that iterates an object indexes it instead (Regal's
#    prefer-some-in-iteration is silenced there). rego-cpp's object.union replaces a nested
#    object where OPA merges it (so the embedded engine refuses it): objects with no key in
#    common are merged by a comprehension over both (_requirement, _label_offers). The
#    embedded engine refuses any builtin outside labelgate/policy/capabilities.py.
#
# 2. Speed. Decisions are on the data path of every call, twice, and rego-cpp is slow at
#    exactly the things Rego makes easy: ~50 µs per call of a user-defined function, ~20 µs
#    per element of a partial rule and ~10-20 µs per builtin call, but only a few
#    microseconds per comprehension element. So:
#    - the rules that run per field or per label are complete rules built from
#      comprehensions, with no helper functions (Regal's prefer-set-or-object-rule is
#      silenced on them); each field is visited once to collect its labels
#      (clearance.rego: _path_labels), each label once to find its treatment, and a field
#      with one label (the common case) takes that label's mask as it is, so only the rare
#      fields with several compare masks (_strongest_masks);
#    - _label_rank, a function, is only called on the rare path of a held call;
#    - validation has a fast path (_well_formed) that checks each string list with one
#      comprehension; only a malformed input evaluates _problems, which names each defect.
#    OPA gains from the same shapes. Measure with `python -m bench.profile_policy` (from the
#    repository root).
#
# 3. No builtin errors. A builtin called on a value it does not take (concat of a number,
#    object.get on a string) is an error OPA turns into "undefined", failing the body; rego-cpp
#    instead left the assigned variable unbound and went on, so `v := to_number(x); not v > 3`
#    held there. The embedded engine therefore runs with builtin errors strict (an error is a
#    deny), and this pack tests a value's type (is_array, is_object, is_string) before calling a
#    builtin that could fail on it, so that no input, however malformed, raises one.
package labelgate.decision

# Values of a set in sorted order, the same on every engine.
_sorted(values) := sort([value | some value in values])
