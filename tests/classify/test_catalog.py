from __future__ import annotations

import json
from pathlib import Path

import pytest

from labelgate.classify.catalog import ALL_OUTPUTS, CATALOG_INVALID, Catalog, tensor_part
from labelgate.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "rego" / "labelgate" / "catalog" / "data.json"


def catalog(*entries: dict, default_label: str = "internal") -> Catalog:
    return Catalog.from_data({"default_label": default_label, "entries": list(entries)})


def by_path(fields: list) -> dict[str, tuple[set[str], dict[str, set[str]]]]:
    return {field.path: (set(field.labels), field.sources) for field in fields}


def test_the_shipped_catalog_loads() -> None:
    shipped = Catalog.from_file(DATA)
    assert shipped.default_label == "internal"
    assert shipped.labels_for("customer-profile", "outputs.ssn") == {"confidential"}
    assert shipped.labels_for("customer-profile", "outputs.account_secret") == {"restricted"}
    assert shipped.labels_for("sentiment", "outputs.anything") == {"public"}
    assert shipped.labels_for_message("labelgate.v1.demo.Customer", "notes") == {"internal"}
    assert shipped.labels_for("customer-profile", "outputs.unknown") == frozenset()
    assert shipped.labels_for("no-such-model", "outputs.ssn") == frozenset()


def test_matching_labels_are_unioned_so_a_glob_never_weakens_an_exact_entry() -> None:
    cat = catalog(
        {"model": "m", "path": "outputs.*", "labels": ["public"]},
        {"model": "m", "path": "outputs.ssn", "labels": ["confidential"]},
    )
    assert cat.labels_for("m", "outputs.ssn") == {"public", "confidential"}
    assert cat.labels_for("m", "outputs.name") == {"public"}


def test_brackets_and_braces_are_literal_in_globs() -> None:
    # fnmatch would read "[].items[]" as a character class and match neither path.
    cat = catalog(
        {"model": "m", "path": "outputs.doc[].items[].ssn", "labels": ["confidential"]},
        {"model": "m", "path": "outputs.doc[].*.email", "labels": ["internal"]},
        {"model": "m", "path": "outputs.t?t", "labels": ["restricted"]},
    )
    assert cat.labels_for("m", "outputs.doc[].items[].ssn") == {"confidential"}
    assert cat.labels_for("m", "outputs.doc[]x.items[].ssn") == frozenset()
    assert cat.labels_for("m", "outputs.doc[].contact.email") == {"internal"}
    assert cat.labels_for("m", "outputs.txt") == {"restricted"}
    assert cat.labels_for("m", "outputs.text") == frozenset()


def test_a_star_also_covers_nested_paths() -> None:
    cat = catalog({"model": "m", "path": "outputs.*", "labels": ["public"]})
    assert cat.labels_for("m", "outputs.doc[].a.b") == {"public"}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (
            {"entries": [{"model": "m", "path": "outputs.x", "labels": ["secret"]}]},
            "unknown labels ['secret']",
        ),
        ({"entries": [{"path": "outputs.x", "labels": ["public"]}]}, "neither 'model' nor 'message'"),
        (
            {"entries": [{"model": "m", "message": "a.B", "path": "x", "labels": ["public"]}]},
            "both 'model' and 'message'",
        ),
        ({"entries": [{"model": "m", "path": "ssn", "labels": ["public"]}]}, "must start with 'outputs.'"),
        ({"entries": [{"model": "m", "path": "outputs.x", "labels": []}]}, "non-empty list"),
        (
            {"entries": [{"model": "m", "path": "", "labels": ["public"]}]},
            "'path' must be a non-empty string",
        ),
        ({"entries": [{"model": "", "path": "outputs.x", "labels": ["public"]}]}, "non-empty string"),
        ({"entries": [{"model": "m", "path": "outputs.x", "lables": ["public"]}]}, "unknown keys ['lables']"),
        ({"entries": ["outputs.x"]}, "expected an object"),
        ({"entries": {"model": "m"}}, "entries must be a list"),
        ({"default_label": "public", "entries": []}, "must not be 'public'"),
        ({"default_label": "secret", "entries": []}, "default_label 'secret'"),
        ({"entries": [], "extra": 1}, "unknown keys ['extra']"),
    ],
)
def test_invalid_catalogs_are_rejected_with_the_reason(data: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Catalog.from_data(data)
    assert caught.value.reason == CATALOG_INVALID
    assert problem in caught.value.message


def test_every_problem_is_reported_at_once() -> None:
    data = {
        "entries": [
            {"model": "m", "path": "outputs.x", "labels": ["secret"]},
            {"path": "outputs.y", "labels": ["public"]},
        ]
    }
    with pytest.raises(ConfigError) as caught:
        Catalog.from_data(data)
    assert "entries[0]" in caught.value.message
    assert "entries[1]" in caught.value.message


def test_a_non_object_catalog_is_rejected() -> None:
    with pytest.raises(ConfigError, match="expected a JSON object"):
        Catalog.from_data([])


def test_from_file_reports_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read catalog file") as caught:
        Catalog.from_file(tmp_path / "absent.json")
    assert caught.value.reason == CATALOG_INVALID
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Catalog.from_file(broken)
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"entries": [{"model": "m", "path": "outputs.x", "labels": ["nope"]}]}))
    with pytest.raises(ConfigError, match=str(invalid)):
        Catalog.from_file(invalid)


def test_default_label_defaults_to_internal() -> None:
    assert Catalog.from_data({"entries": []}).default_label == "internal"


def test_expected_fields_for_requested_outputs_expand_globs_and_default_the_unknown() -> None:
    cat = catalog(
        {"model": "m", "path": "outputs.*", "labels": ["public"]},
        {"model": "m", "path": "outputs.ssn", "labels": ["confidential"]},
        {"model": "m", "path": "outputs.doc[].ssn", "labels": ["confidential"]},
        {"model": "m", "path": "outputs.other[].x", "labels": ["restricted"]},
        {"model": "n", "path": "outputs.y", "labels": ["public"]},
        default_label="confidential",
    )
    fields = by_path(cat.expected_fields("m", ["ssn", "doc", "ssn"]))
    assert list(fields) == ["outputs.ssn", "outputs.doc", "outputs.doc[].ssn"]
    assert fields["outputs.ssn"] == (
        {"public", "confidential"},
        {"public": {"catalog"}, "confidential": {"catalog"}},
    )
    assert fields["outputs.doc"] == ({"public"}, {"public": {"catalog"}})

    strict = catalog(
        {"model": "m", "path": "outputs.ssn", "labels": ["confidential"]}, default_label="restricted"
    )
    fields = by_path(strict.expected_fields("m", ["ssn", "free_text"]))
    assert fields["outputs.free_text"] == ({"restricted"}, {"restricted": {"default"}})


def test_expected_fields_without_requested_outputs_keep_the_catalog_paths() -> None:
    cat = catalog(
        {"model": "m", "path": "outputs.*", "labels": ["public"]},
        {"model": "m", "path": "outputs.ssn", "labels": ["confidential"]},
    )
    assert by_path(cat.expected_fields("m")) == {
        "outputs.*": ({"public"}, {"public": {"catalog"}}),
        "outputs.ssn": ({"confidential"}, {"confidential": {"catalog"}}),
    }


def test_an_unknown_model_expects_every_output_at_the_default_label() -> None:
    cat = catalog({"model": "m", "path": "outputs.x", "labels": ["public"]})
    assert by_path(cat.expected_fields("other")) == {ALL_OUTPUTS: ({"internal"}, {"internal": {"default"}})}
    assert by_path(cat.expected_fields("other", ["y"])) == {
        "outputs.y": ({"internal"}, {"internal": {"default"}})
    }


def test_tensor_part() -> None:
    assert tensor_part("outputs.doc[].ssn") == "doc"
    assert tensor_part("outputs.notes{us_ssn}") == "notes"
    assert tensor_part("outputs.a.b") == "a.b"


def test_lookups_are_remembered_within_bounds() -> None:
    from labelgate.classify.catalog import LOOKUP_MEMO_SIZE

    catalog = Catalog.from_data(
        {"entries": [{"model": "m", "path": "outputs.*", "labels": ["public"]},
                     {"model": "m", "path": "outputs.ssn", "labels": ["confidential"]}]}
    )  # fmt: skip
    first = catalog.labels_for("m", "outputs.ssn")
    assert first == {"public", "confidential"}
    assert catalog.labels_for("m", "outputs.ssn") is first
    assert catalog.labels_for("other", "outputs.ssn") == frozenset()
    for index in range(LOOKUP_MEMO_SIZE + 10):
        assert catalog.labels_for("m", f"outputs.t{index}") == {"public"}
    assert len(catalog._memo) <= LOOKUP_MEMO_SIZE
    assert catalog.labels_for("m", "outputs.ssn") == {"public", "confidential"}


def test_key_names_are_the_literal_key_segments_of_a_models_paths() -> None:
    catalog = Catalog.from_data(
        {
            "entries": [
                {"model": "m", "path": "outputs.doc[].contact.email", "labels": ["internal"]},
                {"model": "m", "path": "outputs.doc[].items[].ssn", "labels": ["confidential"]},
                {"model": "m", "path": "outputs.doc[].*", "labels": ["internal"]},
                {"model": "m", "path": "outputs.*.phone", "labels": ["internal"]},
                {"model": "m", "path": "outputs.doc[].e?", "labels": ["internal"]},
                {"model": "m", "path": "outputs.notes{us_ssn}", "labels": ["internal"]},
                {"model": "other", "path": "outputs.doc[].name", "labels": ["internal"]},
            ]
        }
    )
    assert catalog.key_names("m") == {"contact", "email", "items", "ssn", "phone"}
    assert catalog.key_names("other") == {"name"}
    assert catalog.key_names("unknown") == frozenset()


def test_labels_at_or_under_a_tensor_include_globs_that_may_reach_it() -> None:
    catalog = Catalog.from_data(
        {
            "entries": [
                {"model": "m", "path": "outputs.doc", "labels": ["public"]},
                {"model": "m", "path": "outputs.doc[].secret", "labels": ["restricted"]},
                {"model": "m", "path": "outputs.d*[].x", "labels": ["confidential"]},
                {"model": "m", "path": "outputs.notes*", "labels": ["internal"]},
                {"model": "m", "path": "outputs.docs[].y", "labels": ["internal"]},
            ]
        }
    )
    assert catalog.labels_at_or_under("m", "doc") == {"public", "restricted", "confidential"}
    assert catalog.labels_at_or_under("m", "notes") == {"internal"}
    assert catalog.labels_at_or_under("m", "absent") == frozenset()


def test_may_label_under_a_path_is_exact_for_plain_entries_and_errs_towards_yes_for_globs() -> None:
    catalog = Catalog.from_data(
        {
            "entries": [
                {"model": "m", "path": "outputs.doc", "labels": ["public"]},
                {"model": "m", "path": "outputs.doc[].contact.email", "labels": ["confidential"]},
                {"model": "g", "path": "outputs.doc[].*.pin", "labels": ["restricted"]},
            ]
        }
    )
    for path in ("outputs.doc[]", "outputs.doc[].contact", "outputs.doc[].contact.email"):
        assert catalog.may_label_under("m", path), path
    for path in ("outputs.doc[].contact.email.x", "outputs.doc[].<key:00000000>", "outputs.doc[].contact[]"):
        assert not catalog.may_label_under("m", path), path
    assert not catalog.may_label_under("m", "outputs.notes[]")
    assert catalog.may_label_under("g", "outputs.doc[].<key:00000000>.pin")
    assert catalog.may_label_under("g", "outputs.doc[]")
    assert not catalog.may_label_under("g", "outputs.notes[]")
    assert not catalog.may_label_under("absent", "outputs.doc[]")


def test_from_file_refuses_a_key_given_twice(tmp_path: Path) -> None:
    # json.loads keeps the last one: the catalog would not mean what its reviewer read.
    path = tmp_path / "catalog.json"
    path.write_text('{"default_label": "restricted", "entries": [], "default_label": "internal"}')
    with pytest.raises(ConfigError) as refused:
        Catalog.from_file(path)
    assert refused.value.reason == CATALOG_INVALID
    assert "'default_label' appears twice" in refused.value.message
    nested = tmp_path / "nested.json"
    nested.write_text(
        '{"entries": [{"model": "m", "path": "outputs.x", "labels": ["public"], "model": "n"}]}'
    )
    with pytest.raises(ConfigError, match="'model' appears twice"):
        Catalog.from_file(nested)


def test_from_file_refuses_nesting_deeper_than_python_reads(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text('{"entries": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ConfigError) as refused:
        Catalog.from_file(path)
    assert refused.value.reason == CATALOG_INVALID and "nested too deeply" in refused.value.message


@pytest.mark.parametrize("path", ["outputs.doc[]", "outputs.*[]"])
def test_an_entry_naming_an_outputs_elements_is_refused_not_left_labelling_nothing(path: str) -> None:
    entry = {"model": "m", "path": path, "labels": ["restricted"]}
    with pytest.raises(ConfigError) as refused:
        Catalog.from_data({"entries": [entry]})
    assert "write 'outputs." in refused.value.message
    assert Catalog.from_data({"entries": [{**entry, "path": "outputs.doc[].tags[]"}]})  # a JSON array's items
