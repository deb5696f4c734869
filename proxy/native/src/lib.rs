//! labelgate's built-in content detectors over bytes, element by element, with exactly the
//! semantics of `labelgate.classify.patterns` (its Python code is the reference; the tests
//! in `tests/classify/test_native.py` compare the two). No I/O; the two pieces of state are
//! the IBAN registry `set_iban_registry` installs and the UTF-16 unit kinds `set_unit_kinds`
//! does.
//!
//! Also the per-element work on raw BYTES tensors (`tensors`: splitting, joining, the
//! `partial` mask on ASCII elements), with the semantics of `labelgate.oip.tensors` and
//! `labelgate.enforce.strategies`; and JSON-object elements read and scanned in one pass
//! (`json`), for the elements it can vouch for reading as Python's `json` does; and such
//! elements masked and written back (`json_mask`), as `labelgate.enforce.masking` does; and
//! which texts read as UTF-16 digits (`wide_digits`), as `other_encodings.digit_encoding`
//! reads them, a prefilter Python confirms.

mod anchors;
mod bidi;
mod bytes;
mod digit_led;
mod email;
mod floats;
mod forms;
mod iban;
mod json;
mod json_mask;
mod markup;
mod rules;
mod scan;
mod secrets;
mod spans;
mod tensors;
mod thousands;
mod wide_digits;

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBool, PyBytes, PyList, PyString, PyTuple};

use iban::{Class, Country, Registry};

use scan::{Found, Wanted, DETECTORS, IBAN_PASS, IPV4_PASS, SECRET};

/// What every PEM marker holds (`secrets`).
const KEY: &[u8] = b"PRIVATE KEY";

/// `scan_elements`' result: `(hits, iban_at, iban_count, iban_pending, ipv6_pending)`.
type Scanned<'py> = (
    Bound<'py, PyList>,
    usize,
    usize,
    Bound<'py, PyList>,
    Bound<'py, PyList>,
);

/// Above this many bytes in a call, the scan runs without the GIL (the bytes are immutable
/// and kept alive by `PyBackedBytes`); below, releasing and taking it back costs more.
const RELEASE_GIL_BYTES: usize = 64 * 1024;

/// `work()`, without the GIL when it reads at least `RELEASE_GIL_BYTES` (its inputs are
/// immutable bytes kept alive by the caller).
pub(crate) fn unlocked_if_large<R: Send>(
    py: Python<'_>,
    bytes: usize,
    work: impl FnOnce() -> R + Send,
) -> R {
    if bytes >= RELEASE_GIL_BYTES {
        py.allow_threads(work)
    } else {
        work()
    }
}

fn scan_all<T: AsRef<[u8]>>(texts: &[T], wanted: Wanted) -> Found {
    let mut found = Found::default();
    let ibans = iban::registry();
    for (index, text) in texts.iter().enumerate() {
        scan::scan(text.as_ref(), index, wanted, ibans.as_deref(), &mut found);
    }
    found
}

/// The detectors' names as Python strings, interned (indexed like `DETECTORS`).
pub(crate) fn detector_names(py: Python<'_>) -> [&Bound<'_, PyString>; 7] {
    [
        intern!(py, "credit_card"),
        intern!(py, "us_ssn"),
        intern!(py, "iban"),
        intern!(py, "email"),
        intern!(py, "phone"),
        intern!(py, "ip_address"),
        intern!(py, "secret"),
    ]
}

/// Scan each of `texts` (bytes, read as UTF-8 that need not be valid) for the built-ins whose
/// bit is set in `wanted` (bit i: `DETECTORS[i]`).
///
/// Returns `(hits, iban_at, iban_count, iban_pending, ipv6_pending)`. `hits` are `(index,
/// detector, start, end)`, offsets into `texts[index]`, in the order `patterns.builtin_hits`
/// finds them in the NUL-joined texts, except for what stays in Python: its IPv6 pass (at the
/// end), run on the elements of `ipv6_pending`, and the IBAN pass of the elements of
/// `iban_pending` (national rules, or no registry set), whose hits merge by element index
/// into the `iban_count` IBAN hits from `iban_at`.
#[pyfunction]
fn scan_elements<'py>(
    py: Python<'py>,
    texts: Vec<PyBackedBytes>,
    wanted: u32,
) -> PyResult<Scanned<'py>> {
    let wanted = Wanted(wanted);
    let total: usize = texts.iter().map(|text| text.len()).sum();
    let found = unlocked_if_large(py, total, || scan_all(&texts, wanted));
    let names = detector_names(py);
    let iban_at = found.passes[..=IPV4_PASS].iter().map(Vec::len).sum();
    let iban_count = found.passes[IBAN_PASS].len();
    let mut tuples = Vec::with_capacity(found.passes.iter().map(Vec::len).sum());
    for &(index, hit) in found.passes.iter().flatten() {
        tuples.push(PyTuple::new(
            py,
            [
                index.into_pyobject(py)?.into_any(),
                names[usize::from(hit.detector)].clone().into_any(),
                hit.start.into_pyobject(py)?.into_any(),
                hit.end.into_pyobject(py)?.into_any(),
            ],
        )?);
    }
    Ok((
        PyList::new(py, tuples)?,
        iban_at,
        iban_count,
        PyList::new(py, found.iban_pending)?,
        PyList::new(py, found.ipv6_pending)?,
    ))
}

/// What `json_elements` found, before it becomes Python objects: the distinct signatures,
/// and per element the index of its signature and its hits (`None`: Python's to read).
#[derive(Default)]
struct JsonReads {
    signatures: Vec<Vec<u8>>,
    elements: Vec<Option<(usize, Vec<json::LeafHit>)>>,
}

fn read_all(elements: &[PyBackedBytes], wanted: Wanted) -> JsonReads {
    let ibans = iban::registry();
    let mut reader = json::Reader::default();
    let mut reads = JsonReads::default();
    let mut known: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut last = usize::MAX; // the previous element's signature: most often the next one's
    for element in elements {
        let read = reader.read(element, wanted, ibans.as_deref()).map(|hits| {
            let signature = reader.signature();
            if reads
                .signatures
                .get(last)
                .is_none_or(|previous| previous != signature)
            {
                let next = reads.signatures.len();
                last = *known.entry(signature.to_vec()).or_insert(next);
                if last == next {
                    reads.signatures.push(signature.to_vec());
                }
            }
            (last, hits)
        });
        reads.elements.push(read);
    }
    if wanted.has(SECRET) {
        left_to_python_after_a_key(elements, &mut reads.elements);
    }
    reads
}

/// A PEM block runs on from one element's leaves into the next elements' (`credentials`): the
/// reader carries it across the elements it reads, and Python's scan across those it reads,
/// but neither into the other's. So when some element is Python's, every element from the
/// first where a block may open is Python's too: one read with a `secret` hit, or one left
/// to Python holding `PRIVATE KEY` or a backslash (an escape may spell the marker). Before
/// it no block opens, so the result is the one Python's reading of every element gives.
fn left_to_python_after_a_key<T: AsRef<[u8]>>(
    elements: &[T],
    reads: &mut [Option<(usize, Vec<json::LeafHit>)>],
) {
    if reads.iter().all(Option::is_some) {
        return;
    }
    let may_open = |(element, read): (&T, &Option<(usize, Vec<json::LeafHit>)>)| match read {
        Some((_, hits)) => hits.iter().any(|hit| hit.1 == SECRET),
        None => {
            let element = element.as_ref();
            element.contains(&b'\\') || element.windows(KEY.len()).any(|window| window == KEY)
        }
    };
    let Some(first) = elements.iter().zip(reads.iter()).position(may_open) else {
        return;
    };
    if reads[first..].iter().any(Option::is_none) {
        reads[first..].fill(None);
    }
}

/// Read each of `elements` that holds a JSON object (starts with `{`) and scan its leaves for
/// the built-ins whose bit is set in `wanted` (as `scan_elements`).
///
/// Per element: `None` when Python must read it (anything the reader cannot vouch for reading
/// as Python's `json` does, or a scan that leaves a pass to Python; see `json.rs`), else
/// `(signature, hits, several)`: the element's shape as bytes (one `bytes` object per distinct
/// signature in a call); a tuple of `(scanned leaf ordinal, detector bit, start, end)` per hit,
/// offsets into the leaf's UTF-8 text, leaf by leaf in `DetectorSet.scan_each`'s order (not
/// merged); and whether some leaf has several hits (then they may overlap and need merging).
#[pyfunction]
fn json_elements<'py>(
    py: Python<'py>,
    elements: Vec<PyBackedBytes>,
    wanted: u32,
) -> PyResult<Bound<'py, PyList>> {
    let wanted = Wanted(wanted);
    let total: usize = elements.iter().map(|element| element.len()).sum();
    let reads = unlocked_if_large(py, total, || read_all(&elements, wanted));
    let signatures: Vec<Bound<'py, PyBytes>> = reads
        .signatures
        .iter()
        .map(|signature| PyBytes::new(py, signature))
        .collect();
    let mut items = Vec::with_capacity(reads.elements.len());
    // Hits repeat from element to element (a value alone in a leaf of one shape): one tuple
    // per distinct hit, shared, as the signatures are.
    let mut made: HashMap<json::LeafHit, Bound<'py, PyTuple>> = HashMap::new();
    for read in &reads.elements {
        let Some((signature, hits)) = read else {
            items.push(py.None().into_bound(py));
            continue;
        };
        let signature = signatures[*signature].clone();
        let several = hits.windows(2).any(|pair| pair[0].0 == pair[1].0);
        let hits = hits
            .iter()
            .map(|hit| match made.get(hit) {
                Some(tuple) => Ok(tuple.clone()),
                None => {
                    let tuple = hit.into_pyobject(py)?;
                    made.insert(*hit, tuple.clone());
                    Ok(tuple)
                }
            })
            .collect::<PyResult<Vec<_>>>()?;
        items.push(
            PyTuple::new(
                py,
                [
                    signature.into_any(),
                    PyTuple::new(py, hits)?.into_any(),
                    PyBool::new(py, several).to_owned().into_any(),
                ],
            )?
            .into_any(),
        );
    }
    PyList::new(py, items)
}

/// The indices of the elements of `values` whose first byte is one of `openers`: those that
/// may hold a JSON object (`jsonpaths.OBJECT_OPENERS`). `None` when a value is not exactly
/// `bytes` (the caller then checks them itself).
#[pyfunction]
fn object_candidates(values: &Bound<'_, PyList>, openers: &[u8]) -> Option<Vec<usize>> {
    let mut found = Vec::new();
    for (index, value) in values.iter().enumerate() {
        let element = value.downcast_exact::<PyBytes>().ok()?.as_bytes();
        if element.first().is_some_and(|first| openers.contains(first)) {
            found.push(index);
        }
    }
    Some(found)
}

/// Hand over python-stdnum's IBAN registry: each country's BBAN as `(count, class)` runs
/// (class `n` digits, `a` capitals, `c` letters or digits), and the countries whose IBANs
/// python-stdnum checks by national rules (those stay Python's call). Replaces any earlier one.
#[pyfunction]
fn set_iban_registry(
    formats: Vec<(String, Vec<(usize, char)>)>,
    national: std::collections::HashSet<String>,
) -> PyResult<()> {
    let mut registry = Registry::new();
    for (code, parts) in formats {
        let format = parts
            .into_iter()
            .map(|(count, code)| {
                Class::from_code(code)
                    .map(|class| (count, class))
                    .ok_or_else(|| PyValueError::new_err(format!("unknown BBAN class {code:?}")))
            })
            .collect::<PyResult<Vec<_>>>()?;
        if !registry.set(code.as_bytes(), Country::Format(format)) {
            return Err(PyValueError::new_err(format!(
                "not a country code: {code:?}"
            )));
        }
    }
    for code in national {
        if !registry.set(code.as_bytes(), Country::Python) {
            return Err(PyValueError::new_err(format!(
                "not a country code: {code:?}"
            )));
        }
    }
    iban::install(registry);
    Ok(())
}

#[pymodule]
fn labelgate_native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(scan_elements, module)?)?;
    module.add_function(wrap_pyfunction!(set_iban_registry, module)?)?;
    module.add_function(wrap_pyfunction!(json_elements, module)?)?;
    module.add_function(wrap_pyfunction!(object_candidates, module)?)?;
    module.add_function(wrap_pyfunction!(json_mask::mask_json, module)?)?;
    module.add_function(wrap_pyfunction!(json_mask::json_detectors, module)?)?;
    module.add_function(wrap_pyfunction!(tensors::split_bytes, module)?)?;
    module.add_function(wrap_pyfunction!(tensors::check_bytes, module)?)?;
    module.add_function(wrap_pyfunction!(tensors::join_bytes, module)?)?;
    module.add_function(wrap_pyfunction!(tensors::partial_all, module)?)?;
    module.add_function(wrap_pyfunction!(tensors::partial_all_raw, module)?)?;
    module.add_function(wrap_pyfunction!(tensors::partial_span, module)?)?;
    module.add_function(wrap_pyfunction!(tensors::partial_spans, module)?)?;
    module.add_function(wrap_pyfunction!(spans::scan_spans, module)?)?;
    module.add_function(wrap_pyfunction!(spans::scan_spans_raw, module)?)?;
    module.add_function(wrap_pyfunction!(markup::may_render_py, module)?)?;
    module.add_function(wrap_pyfunction!(markup::may_hide_py, module)?)?;
    module.add_function(wrap_pyfunction!(bidi::bidi_order_py, module)?)?;
    module.add_function(wrap_pyfunction!(bidi::bidi_orders_py, module)?)?;
    module.add_function(wrap_pyfunction!(wide_digits::set_unit_kinds, module)?)?;
    module.add_function(wrap_pyfunction!(wide_digits::wide_digit_runs, module)?)?;
    module.add_function(wrap_pyfunction!(wide_digits::wide_digit_runs_raw, module)?)?;
    module.add_function(wrap_pyfunction!(wide_digits::quoted_digit_runs, module)?)?;
    module.add_function(wrap_pyfunction!(
        wide_digits::quoted_digit_runs_raw,
        module
    )?)?;
    module.add("DETECTORS", PyTuple::new(module.py(), DETECTORS)?)?;
    // The interface version `labelgate.native.ABI` expects: raise both with any change of a
    // function's signature or results (a mismatched build is then not used at all).
    module.add("ABI", 20)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::left_to_python_after_a_key;
    use crate::scan::{EMAIL, SECRET};

    #[test]
    fn elements_from_the_first_that_may_open_a_key_are_python_s_when_one_is() {
        let read = |detector| Some((0, vec![(0, detector, 0, 1)]));
        let elements: [&[u8]; 5] = [b"{}", b"{}", b"{}", b"{1.5}", b"{}"];
        let mut reads = vec![read(EMAIL), None, read(SECRET), None, read(EMAIL)];
        left_to_python_after_a_key(&elements, &mut reads);
        assert_eq!(reads, [read(EMAIL), None, None, None, None]);
        // A key marker, or an escape that may spell one, in an element left to Python.
        for opening in [&b"{PRIVATE KEY 1.5}"[..], b"{\\u0050 1.5}"] {
            let elements = [b"{}", opening, b"{}"];
            let mut reads = vec![read(EMAIL), None, read(EMAIL)];
            left_to_python_after_a_key(&elements, &mut reads);
            assert_eq!(reads, [read(EMAIL), None, None]);
        }
        // Every element read, or none left to Python after the first that may open one.
        let mut reads = vec![None, read(SECRET), read(EMAIL)];
        left_to_python_after_a_key(&elements[..3], &mut reads);
        assert_eq!(reads, [None, read(SECRET), read(EMAIL)]);
    }
}
