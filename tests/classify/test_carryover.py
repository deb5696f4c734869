"""Streamed text is scanned across replies: a value split over replies is classified whole."""

from __future__ import annotations

import random

import pytest

from labelgate.classify import carry_runs
from labelgate.classify.carryover import CarryOver
from labelgate.classify.detectors import BUILTIN_LABELS, CustomPattern, Detection, DetectorSet
from labelgate.errors import ResourceExhausted, UpstreamError
from labelgate.oip.tensor import Tensor
from tests.classify.secret_values import ALNUM, TOKEN_FORMS, jwe_value, jwt_value, pem_value, pick, ssh2_value

CARD = b"4111 1111 1111 1111"
PIECES = [b"my card is 4111 11", b"11 1111 ", b"1111 thanks"]


def text(value: bytes) -> Tensor:
    return Tensor("text", "BYTES", [1], [value])


def stream(carry: CarryOver, pieces: list[bytes], request: str = "r1") -> list[bytes]:
    released = []
    for position, piece in enumerate(pieces):
        final = position == len(pieces) - 1
        (tensor,) = carry.release(request, [text(piece)], final=final)
        released.append(tensor.values[0])
    return released


def test_a_card_split_over_three_replies_is_released_whole_in_one_reply() -> None:
    detectors = DetectorSet.default()
    released = stream(CarryOver(detectors, window=64), PIECES)
    assert b"".join(released) == b"".join(PIECES), "nothing is lost or duplicated"
    holding = [chunk for chunk in released if CARD in chunk]
    assert len(holding) == 1, released
    assert [hit.detector for hit in detectors.scan(holding[0])] == ["credit_card"]
    # Scanned one by one, as before, no piece holds the card: that was the leak.
    assert all(not detectors.scan(piece) for piece in PIECES)


def test_text_is_held_back_no_longer_than_the_window() -> None:
    carry = CarryOver(DetectorSet.default(), window=64)
    long_text = b"plain words and nothing else " * 10
    (tensor,) = carry.release("r1", [text(long_text)], final=False)
    assert tensor.values[0] == long_text[: len(long_text) - 64]
    (last,) = carry.release("r1", [text(b"")], final=True)
    assert last.values[0] == long_text[-64:]


def test_a_complete_match_straddling_the_cut_is_held_whole() -> None:
    carry = CarryOver(DetectorSet.default(), window=16)
    chunk = b"x" * 40 + b" 123-45-6789" + b" and more"  # the cut (16 from the end) falls inside
    (tensor,) = carry.release("r1", [text(chunk)], final=False)
    released = tensor.values[0]
    assert released == b"x" * 40 + b" ", "held from the start of the match, not cut in two"


def test_requests_and_elements_are_carried_apart() -> None:
    carry = CarryOver(DetectorSet.default(), window=64)
    carry.release("a", [text(b"4111 1111 ")], final=False)
    carry.release("b", [text(b"unrelated ")], final=False)
    (b_tail,) = carry.release("b", [text(b"end")], final=True)
    assert b_tail.values[0] == b"unrelated end"
    (a_tail,) = carry.release("a", [text(b"1111 1111")], final=True)
    assert a_tail.values[0] == CARD


def test_the_stream_end_flushes_what_is_held_with_its_shape() -> None:
    carry = CarryOver(DetectorSet.default(), window=64)
    carry.release("a", [Tensor("text", "BYTES", [2], [b"left ", b"right "])], final=False)
    ((request, tensors),) = carry.flush()
    assert request == "a"
    assert tensors[0].shape == [2] and tensors[0].values == [b"left ", b"right "]
    assert carry.flush() == []


def test_a_final_reply_without_the_output_still_releases_it() -> None:
    carry = CarryOver(DetectorSet.default(), window=64)
    carry.release("a", [text(b"held text")], final=False)
    (flushed,) = carry.release("a", [], final=True)
    assert (flushed.name, flushed.values) == ("text", [b"held text"])


def test_whole_json_elements_and_numbers_pass_unheld() -> None:
    carry = CarryOver(DetectorSet.default(), window=64)
    document = b'{"note": "hello"}'
    numbers = Tensor("score", "FP32", [1], [0.5])
    json_tensor, number_tensor = carry.release("a", [text(document), numbers], final=False)
    assert json_tensor.values == [document] and number_tensor is numbers


def test_the_cut_never_splits_a_utf8_character() -> None:
    carry = CarryOver(DetectorSet.default(), window=64)
    chunk = "é".encode() * 100
    (tensor,) = carry.release("a", [text(chunk)], final=False)
    tensor.values[0].decode("utf-8")  # raises if a character was cut


HELD_WHOLE = {
    # A raw scan cannot see these, so no cut can be placed safely before the final reply.
    "full-width digits": ["x" * 300 + " １２３-４", "５-６７８９ " + "y" * 300],
    "zero-width spaces": ["ssn 123-" + "\u200b" * 300, "45-6789 ok"],
    "JSON escapes": ["x" * 300 + " \\u0031\\u003", "2\\u0033-45-6789 " + "y" * 300],
    "character references": ["x" * 300 + " ssn &#49;&#50;&#5", "1;-45-6789 " + "y" * 300],
    "markup a renderer drops": ["x" * 300 + " ssn 123<!-- " + "z" * 300, " -->-45-6789 " + "y" * 300],
    "a JSON object": ['{"id": 1, "diagnosis": "' + "x" * 300, '", "more": 2}'],
}


def test_text_a_raw_scan_cannot_judge_is_held_whole_until_the_final_reply() -> None:
    for kind, pieces in HELD_WHOLE.items():
        released = stream(CarryOver(DetectorSet.default(), window=64), [p.encode() for p in pieces])
        assert released[:-1] == [b""] * (len(pieces) - 1), kind
        assert released[-1] == "".join(pieces).encode(), kind


def test_a_json_object_completed_by_a_later_reply_is_released_whole_then() -> None:
    carry = CarryOver(DetectorSet.default(), window=64)
    (first,) = carry.release("r1", [text(b'{"a": "' + b"x" * 100)], final=False)
    (second,) = carry.release("r1", [text(b'"}')], final=False)
    assert (first.values[0], second.values[0]) == (b"", b'{"a": "' + b"x" * 100 + b'"}')


@pytest.mark.parametrize("opening", [b'[{"secret": "', b'\xef\xbb\xbf{"secret": "', b'"{\\"secret\\": \\"'])
def test_json_that_is_not_a_bare_object_is_held_whole_until_the_final_reply(opening: bytes) -> None:
    # Cut, its tail would reach the classifier as plain text, the keys that label it gone.
    carry = CarryOver(DetectorSet.default(), window=64)
    (first,) = carry.release("r1", [text(opening + b"x" * 300)], final=False)
    (last,) = carry.release("r1", [text(b'"}]')], final=True)
    assert (first.values[0], last.values[0]) == (b"", opening + b"x" * 300 + b'"}]')


def test_with_a_custom_detector_of_unbounded_matches_text_is_held_whole() -> None:
    pem = CustomPattern("pem", r"-----BEGIN[\s\S]+?-----END", "restricted")
    carry = CarryOver(DetectorSet(None, [pem]), window=64)
    (tensor,) = carry.release("r1", [text(b"-----BEGIN key " + b"k" * 200)], final=False)
    assert tensor.values[0] == b""
    bounded = CarryOver(DetectorSet(None, [CustomPattern("emp", r"EMP-\d{6}", "internal")]), window=64)
    (cut,) = bounded.release("r1", [text(b"z" * 200)], final=False)
    assert cut.values[0] == b"z" * 136


def test_held_text_past_the_limit_fails_the_stream() -> None:
    carry = CarryOver(DetectorSet.default(), window=64, hold_limit=1000)
    carry.release("r1", [text("é".encode() * 400)], final=False)
    with pytest.raises(ResourceExhausted) as refused:
        carry.release("r1", [text("é".encode() * 200)], final=False)
    assert refused.value.reason == "STREAM_HELD_TOO_LARGE"


def test_a_custom_detector_with_a_lookaround_holds_text_whole() -> None:
    # The lookbehind's text lies outside the match's width: a cut between them hides both.
    behind = CustomPattern("acct", r"(?<=acct:)\d{6}", "restricted")
    carry = CarryOver(DetectorSet(None, [behind]), window=64)
    (tensor,) = carry.release("r1", [text(b"z" * 200 + b" acct:")], final=False)
    assert tensor.values[0] == b""


def test_the_hold_limit_counts_every_element_of_every_request() -> None:
    carry = CarryOver(DetectorSet.default(), window=64, hold_limit=1000)
    many = Tensor("text", "BYTES", [4], ["é".encode() * 100] * 4)  # 800 bytes held
    carry.release("a", [many], final=False)
    with pytest.raises(ResourceExhausted):
        carry.release("b", [many], final=False)


def test_what_a_final_reply_releases_is_no_longer_counted() -> None:
    carry = CarryOver(DetectorSet.default(), window=64, hold_limit=1000)
    for request in ("a", "b", "c"):
        carry.release(request, [text("é".encode() * 300)], final=False)
        carry.release(request, [text(b"")], final=True)


def eight_bit(value: bytes, datatype: str = "UINT8", name: str = "text") -> Tensor:
    values = list(value) if datatype == "UINT8" else [byte - 256 if byte > 127 else byte for byte in value]
    return Tensor(name, datatype, [len(value)], values)


def text_of(tensor: Tensor) -> bytes:
    """An 8-bit tensor's bytes, checked against its shape and datatype."""
    assert tensor.shape == [len(tensor.values)]
    return bytes(value & 0xFF for value in tensor.values)


@pytest.mark.parametrize("datatype", ["UINT8", "INT8"])
def test_8bit_text_split_across_replies_is_released_whole(datatype: str) -> None:
    detectors = DetectorSet.default()
    carry = CarryOver(detectors, window=16)
    pieces = [b"x" * 40 + b" ssn 123-45-", b"6789 ok"]
    first, last = (
        carry.release("r1", [eight_bit(piece, datatype)], final=index == 1)[0]
        for index, piece in enumerate(pieces)
    )
    assert (first.datatype, last.datatype) == (datatype, datatype)
    released = [text_of(first), text_of(last)]
    assert b"".join(released) == b"".join(pieces), "nothing is lost or duplicated"
    assert released[0] == pieces[0][:-16], "the window is held back, as of BYTES text"
    assert [hit.detector for hit in detectors.scan(released[1])] == ["us_ssn"]


def test_8bit_text_a_raw_scan_cannot_judge_is_held_whole_with_its_signed_values() -> None:
    carry = CarryOver(DetectorSet.default(), window=16)
    piece = "ssn １２３-".encode() + b"x" * 40
    (held,) = carry.release("r1", [eight_bit(piece, "INT8")], final=False)
    assert (held.shape, held.values) == ([0], [])
    (flushed,) = carry.release("r1", [], final=True)
    assert flushed == eight_bit(piece, "INT8"), "released as it came, in its datatype"


@pytest.mark.parametrize("shape", [[1, 0], [0, 1], [1, 1, 0]])
def test_8bit_text_in_a_batch_of_one_is_carried_in_its_own_shape(shape: list[int]) -> None:
    """``[1, n]`` is how Triton models give an output; the classifier reads it as text, so the
    carry-over must too, or a card split across replies leaves whole (review of 2026-12-06)."""
    detectors = DetectorSet.default()
    carry = CarryOver(detectors, window=16)
    pieces = [b"x" * 40 + b" card 4111 11", b"11 1111 ", b"1111 thanks"]
    released = []
    for index, piece in enumerate(pieces):
        like = [len(piece) if dim == 0 else dim for dim in shape]
        (out,) = carry.release("r1", [Tensor("text", "UINT8", like, list(piece))], final=index == 2)
        assert out.shape == [len(out.values) if dim == 0 else dim for dim in shape]
        released.append(bytes(out.values))
    assert b"".join(released) == b"".join(pieces)
    assert [hit.detector for hit in detectors.scan(released[-1])] == ["credit_card"]


def test_images_and_other_numbers_pass_unheld() -> None:
    carry = CarryOver(DetectorSet.default(), window=16)
    image = Tensor("image", "UINT8", [2, 20], list(b"ssn 123-45-" + b"y" * 29))
    scores = Tensor("scores", "INT16", [20], list(range(20)))
    released = carry.release("r1", [image, scores], final=False)
    assert released[0] is image and released[1] is scores
    assert carry.flush() == []


FLOAT_CARDS = {
    # A float token is a card whatever its length: the zeros outrun any window.
    "exponent zeros": [b"card 4.111111111111111e", b"0" * 300, b"15 ok"],
    "fraction zeros": [b"card 4.111111111111111", b"0" * 300, b"e15 ok"],
}


@pytest.mark.parametrize("kind", sorted(FLOAT_CARDS))
def test_a_number_longer_than_the_window_is_released_whole(kind: str) -> None:
    detectors = DetectorSet.default()
    pieces = FLOAT_CARDS[kind]
    released = stream(CarryOver(detectors, window=64), pieces)
    assert b"".join(released) == b"".join(pieces)
    token = b"".join(pieces).split()[1]
    (holding,) = [chunk for chunk in released if token in chunk]
    assert [hit.detector for hit in detectors.scan(holding)] == ["credit_card"]


def test_an_email_longer_than_the_window_is_released_whole() -> None:
    # An email's domain has no bound: cut inside, neither half is an email to a scan.
    detectors = DetectorSet.default()
    # Labels with digits: no part of the domain before ".example" reads as a whole email.
    domain = b".".join(b"x%d" % number for number in range(80))
    pieces = [b"write to someone@" + domain[:150], domain[150:] + b".example.com", b" soon"]
    released = stream(CarryOver(detectors, window=64), pieces)
    assert b"".join(released) == b"".join(pieces)
    (holding,) = [chunk for chunk in released if b"@" in chunk]
    assert [hit.detector for hit in detectors.scan(holding)] == ["email"]
    assert b"someone@" + domain + b".example.com" in holding


def test_runs_of_words_without_an_at_sign_do_not_move_the_cut() -> None:
    carry = CarryOver(DetectorSet.default(), window=64)
    words = b"x" * 300  # may yet be a local part: its last 64 characters are held anyway
    (tensor,) = carry.release("r1", [text(words)], final=False)
    assert tensor.values[0] == words[:-64]


def test_runs_without_a_digit_do_not_move_the_cut() -> None:
    for filler in (b"-" * 300, b"e" * 300, b"note " + b"-+.eE" * 60):
        carry = CarryOver(DetectorSet.default(), window=64)
        (tensor,) = carry.release("r1", [text(filler)], final=False)
        assert tensor.values[0] == filler[:-64], filler[:8]


def test_a_stream_of_digits_is_held_until_the_run_ends() -> None:
    carry = CarryOver(DetectorSet.default(), window=64)
    digits = b"1234567890" * 100
    for _ in range(5):
        (tensor,) = carry.release("r1", [text(digits)], final=False)
        assert tensor.values[0] == b""
    (ended,) = carry.release("r1", [text(b" " + b"z" * 200)], final=False)
    assert ended.values[0] == digits * 5 + b" " + b"z" * 136, "the run ended: released whole"
    (last,) = carry.release("r1", [text(b"")], final=True)
    assert last.values[0] == b"z" * 64


HELD = b"hello ssn 123-45-"
CHANGES = {  # the output is named after what it holds: the refusal must not say it
    "BYTES then UINT8": (Tensor("diagnosis", "BYTES", [1], [HELD]), eight_bit(b"6789 ok", name="diagnosis")),
    "UINT8 then BYTES": (eight_bit(HELD, name="diagnosis"), Tensor("diagnosis", "BYTES", [1], [b"6789 ok"])),
    "text then an image": (
        eight_bit(HELD, name="diagnosis"),
        Tensor("diagnosis", "UINT8", [2, 4], list(b"6789 ok!")),
    ),
    "text then numbers": (Tensor("diagnosis", "BYTES", [1], [HELD]), Tensor("diagnosis", "FP32", [1], [0.5])),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("final", [False, True])
def test_an_output_changing_form_while_text_is_held_fails_the_reply(change: str, final: bool) -> None:
    first, second = CHANGES[change]
    carry = CarryOver(DetectorSet.default(), window=64)
    carry.release("r1", [Tensor("other", "BYTES", [1], [b"x"]), first], final=False)
    with pytest.raises(UpstreamError) as refused:
        carry.release("r1", [Tensor("other", "BYTES", [1], [b"y"]), second], final=final)
    assert refused.value.reason == "STREAM_OUTPUT_CHANGED"
    message = str(refused.value)
    assert "output 1" in message, "named by its position"
    assert "diagnosis" not in message and "123" not in message


def test_an_output_may_change_form_when_nothing_of_it_is_held() -> None:
    carry = CarryOver(DetectorSet.default(), window=64)
    carry.release("r1", [text(b"")], final=False)
    (tensor,) = carry.release("r1", [eight_bit(b"6789 ok")], final=True)
    assert text_of(tensor) == b"6789 ok"


_SECRET_RNG = random.Random(20261212)
SECRETS = {
    "pem": pem_value(_SECRET_RNG, lines=5).encode(),
    "pgp": pem_value(_SECRET_RNG, "PGP PRIVATE KEY BLOCK", 3).encode(),
    "ssh2": ssh2_value(_SECRET_RNG, 3).encode(),
    "jwt": jwt_value(_SECRET_RNG).encode(),
    "unsigned jwt": jwt_value(_SECRET_RNG, signed=False).encode(),
    "padded jwt": jwt_value(_SECRET_RNG, padded=True).encode(),  # "=" inside the run
    "unsigned padded jwt": jwt_value(_SECRET_RNG, signed=False, padded=True).encode(),
    **{
        f"jwt after {lead!r}": jwt_value(_SECRET_RNG, lead=lead).encode()
        for lead in [" ", "\n  ", "\t", "\r\n"]
    },
    "jwe": jwe_value(_SECRET_RNG, "\n").encode(),
    "direct jwe": b"eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..NDhWMV9BTGI2.NWV5bThUVw.WEZCb01ZVVo",
    **{form: TOKEN_FORMS[form](_SECRET_RNG).encode() for form in sorted(TOKEN_FORMS)},
    "long slack": b"xoxb-" + b"1234567890-" * 10 + b"abcdefghij" * 10,
    "long github": b"ghp_" + pick(_SECRET_RNG, ALNUM, 200).encode(),
}
_BEFORE = b"the reply quotes "
_AFTER = b" and then goes on with other words" * 5


def assert_released_whole(released: list[bytes], pieces: list[bytes], value: bytes) -> None:
    """Nothing lost or duplicated, and one released chunk holds ``value``, found whole."""
    assert b"".join(released) == b"".join(pieces)
    (holding,) = [chunk for chunk in released if value in chunk]
    at = holding.index(value)
    spans = [(hit.detector, hit.start, hit.end) for hit in DetectorSet.default().scan(holding)]
    assert ("secret", at, at + len(value)) in spans, (pieces, released)


@pytest.mark.parametrize("form", sorted(SECRETS))
def test_a_secret_split_across_two_replies_anywhere_is_released_whole(form: str) -> None:
    value = SECRETS[form]
    whole = _BEFORE + value + _AFTER
    for cut in range(1, len(whole)):
        pieces = [whole[:cut], whole[cut:]]
        released = stream(CarryOver(DetectorSet.default(), window=64), pieces)
        assert_released_whole(released, pieces, value)


@pytest.mark.parametrize("form", sorted(SECRETS))
def test_a_secret_split_across_three_replies_is_released_whole(form: str) -> None:
    value = SECRETS[form]
    whole = _BEFORE + value + _AFTER
    rng = random.Random(form)
    start, end = len(_BEFORE), len(_BEFORE) + len(value)
    # Both cuts inside the value, or one on either side of it; then a final reply.
    pairs = [sorted(rng.sample(range(start - 2, end + 2), 2)) for _ in range(150)]
    pairs += [[rng.randrange(1, end), rng.randrange(end, len(whole))] for _ in range(50)]
    for first, second in pairs:
        pieces = [whole[:first], whole[first:second], whole[second:], b""]
        released = stream(CarryOver(DetectorSet.default(), window=64), pieces)
        assert_released_whole(released, pieces, value)


def test_a_closed_private_key_is_released_before_the_final_reply() -> None:
    key = SECRETS["pem"]
    carry = CarryOver(DetectorSet.default(), window=64)
    half = len(key) // 2
    (first,) = carry.release("r1", [text(_BEFORE + key[:half])], final=False)
    assert first.values[0] == _BEFORE, "an open block is held from its BEGIN marker on"
    (second,) = carry.release("r1", [text(key[half:] + _AFTER)], final=False)
    assert key in second.values[0], "its END marker arrived: released whole with what follows"


def test_an_open_private_key_is_held_until_the_final_reply_without_scanning_it_again() -> None:
    detectors = DetectorSet.default()
    scans = []

    class Counting(DetectorSet):
        def scan(self, data: str | bytes) -> list[Detection]:
            scans.append(len(data))
            return detectors.scan(data)

    carry = CarryOver(Counting(), window=64)
    head, opened = b"words " * 40, b"-----BEGIN RSA PRIVATE KEY-----\n"
    (first,) = carry.release("r1", [text(head + opened)], final=False)
    released = first.values[0]
    assert released == head[: len(head) + len(opened) - 64], "the window: the block is in it"
    body = b"MIIEpAIBAAKCAQEA" * 4 + b"\n"
    for _ in range(200):
        (tensor,) = carry.release("r1", [text(body)], final=False)
        assert tensor.values[0] == b""
    assert len(scans) <= 2, "a block held open is not scanned again on every reply"
    (last,) = carry.release("r1", [text(b"")], final=True)
    assert released + last.values[0] == head + opened + body * 200


def test_secrets_hold_nothing_when_the_secret_detector_is_off() -> None:
    without = DetectorSet({name: label for name, label in BUILTIN_LABELS.items() if name != "secret"})
    carry = CarryOver(without, window=64)
    chunk = b"-----BEGIN RSA PRIVATE KEY-----\n" + b"k" * 200
    (tensor,) = carry.release("r1", [text(chunk)], final=False)
    assert tensor.values[0] == chunk[:-64]
    (tensor,) = carry.release("r2", [text(b"ghp_" + b"a" * 200)], final=False)
    assert tensor.values[0] == (b"ghp_" + b"a" * 200)[:-64]


def test_a_token_run_is_held_until_it_ends_without_reading_it_again(monkeypatch: pytest.MonkeyPatch) -> None:
    detectors = DetectorSet.default()
    reads = []

    def counted(text: bytes, cut: int) -> int:
        reads.append(len(text))
        return secret_start(text, cut)

    secret_start = carry_runs._secret_start
    monkeypatch.setattr(carry_runs, "_secret_start", counted)
    carry = CarryOver(detectors, window=64)
    pieces = [b"jwt: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.", *[b"SflKxwRJSMeKKF2QT4fw"] * 300]
    released = [carry.release("r1", [text(piece)], final=False)[0].values[0] for piece in pieces]
    assert b"".join(released) == b"jwt: ", "the run holding a JWT's prefix is held whole"
    assert len(reads) <= 6, "a run held whole is not read again on every reply"
    (ended,) = carry.release("r1", [text(b" done " + b"z" * 200)], final=False)
    jwt = b"".join(pieces)[5:]
    assert ended.values[0].startswith(jwt + b" done ")
    assert [hit.detector for hit in detectors.scan(ended.values[0])] == ["secret"]


def test_key_lines_in_later_elements_are_held_while_the_key_is_open() -> None:
    """A key one line an element: the element with BEGIN is held (the block is open), and so
    are the later ones, or a line longer than the window would be released without it."""
    carry = CarryOver(DetectorSet.default(), 256)
    key = pem_value(random.Random(1), "RSA PRIVATE KEY", 2).encode().split(b"\n")
    first = [b" " + line + b" " for line in key[:-1]]  # no END marker yet
    (released,) = carry.release("r", [Tensor("text", "BYTES", [len(first)], first)], final=False)
    second = [b" a ", b" " + b"please note " * 30 + b" ", *[b" b "] * (len(first) - 2)]
    (then,) = carry.release("r", [Tensor("text", "BYTES", [len(second)], second)], final=False)
    early = b"".join([*released.values, *then.values])
    assert not any(line[8:40] in early for line in key[1:-1]), "no key line leaves before its block ends"
    last = [*[b""] * (len(first) - 1), key[-1]]
    (final,) = carry.release("r", [Tensor("text", "BYTES", [len(last)], last)], final=True)
    joined = b"".join(final.values)
    assert all(line in joined for line in key[1:-1]), "released whole at the end, to be scanned whole"
