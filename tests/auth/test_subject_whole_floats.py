"""A subject's whole-float attributes reach the policy as integers, for every engine alike.

Review (fail-open): OPA indexes an array by ``1.0`` as by ``1``, rego-cpp and OPA's Wasm
target by integers only, so ``deny if input.fields[input.subject.attributes.n] == "secret"``
denied in OPA and let the call through in the in-process engines. A JWT's ``exp`` reads as a
float in Python when the token writes it ``1796490140.0``. ``Subject.to_policy`` hands over
the integer (policy/whole_numbers.py), worked out once per subject.
"""

from __future__ import annotations

import math

from labelgate.auth.jwt_verifier import JwtVerifier
from labelgate.auth.subject import Subject
from tests.support.pki import SigningKey, claims


def test_a_token_whose_exp_is_written_as_a_float_gives_the_policy_an_integer(
    verifier: JwtVerifier, rsa_key: SigningKey
) -> None:
    body = claims("alice")
    body["exp"] = float(body["exp"])  # "exp": 1796490140.0 in the token's JSON
    subject = verifier.verify(rsa_key.sign(body))
    exp = subject.to_policy()["attributes"]["exp"]
    assert type(exp) is int and exp == body["exp"]


def test_whole_floats_become_integers_at_any_depth_and_nothing_else_changes() -> None:
    subject = Subject(
        id="jwt:i#alice",
        attributes={
            "n": 1.0,
            "zero": -0.0,
            "half": 1.5,
            "below_2_53": float(2**53 - 1),
            "at_2_53": float(2**53),  # indexes no array; int() is not what OPA reads from "9.007e15"
            "huge": 1e300,
            "inf": math.inf,
            "flag": True,
            "also_verified_credentials": {"jwt": {"attributes": {"exp": 1796490140.0, "list": [2.0, "x"]}}},
        },
    )
    attributes = subject.to_policy()["attributes"]
    integers = {
        "n": attributes["n"],
        "zero": attributes["zero"],
        "below_2_53": attributes["below_2_53"],
        "exp": attributes["also_verified_credentials"]["jwt"]["attributes"]["exp"],
        "list": attributes["also_verified_credentials"]["jwt"]["attributes"]["list"][0],
    }
    assert integers == {"n": 1, "zero": 0, "below_2_53": 2**53 - 1, "exp": 1796490140, "list": 2}
    assert all(type(value) is int for value in integers.values())
    assert attributes["half"] == 1.5
    assert type(attributes["at_2_53"]) is float and type(attributes["huge"]) is float
    assert attributes["inf"] == math.inf and attributes["flag"] is True
    # The subject's own attributes are as proven: only the policy's copy changes.
    assert type(subject.attributes["n"]) is float


def test_a_fraction_is_held_to_the_digits_every_engine_keeps() -> None:
    """Review (tenth round): an ``exp`` of ``time.time() + 3600`` needs 17 significant digits;
    rego-cpp keeps 16, so the embedded engine denied every call of such a token
    (``EMBEDDED_INPUT_UNSUPPORTED``, about 3 in 4 such values). Every engine gets the 16-digit
    float now, OPA included."""
    from labelgate.policy.embedded import rounded_float

    exp = 1796490140.1234567
    assert rounded_float({"exp": exp}) is not None  # what the embedded engine refused
    attributes = Subject(id="jwt:i#alice", attributes={"exp": exp, "nan": math.nan}).to_policy()["attributes"]
    assert rounded_float(attributes) is None or math.isnan(attributes["nan"])
    assert rounded_float({"exp": attributes["exp"]}) is None
    assert abs(attributes["exp"] - exp) < 1e-6
