//! A tensor's plain-text elements scanned straight into the classifier's spans: what
//! `DetectorSet.scan_each` and `_share_out_each` build in Python (a `Detection` per hit, a
//! list per element), here without a Python step per hit, keyed by the caller's element
//! indices and in their order. Elements with several hits are named for Python to merge
//! (`_merge_overlaps`); the passes `scan_elements` leaves to Python are handed back too.

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};

use crate::scan::{Hit, Wanted, DETECTORS};
use crate::{scan_all, RELEASE_GIL_BYTES};

/// `scan_spans`' result: `(spans, several, found, iban_pending, ipv6_pending)`.
type Spans<'py> = (
    Bound<'py, PyDict>,
    Bound<'py, PyList>,
    u32,
    Bound<'py, PyList>,
    Bound<'py, PyList>,
);

/// Scan each of `texts` for the built-ins whose bit is set in `wanted` (as `scan_elements`).
///
/// `keys[i]` names `texts[i]` in the result (the tensor's element index, ascending);
/// `detection` is the `Detection` type and `labels[bit]` the label of the detector of that
/// bit. Returns `(spans, several, found, iban_pending, ipv6_pending)`: `spans` maps the key
/// of each text with hits to its `Detection`s (in `scan_elements`' order, not merged), in
/// key order; `several` the keys whose texts have more than one hit; `found` the bits of the
/// detectors of the texts with exactly one; the pending lists as `scan_elements`' (indices
/// into `texts`). Identical detections share one (immutable) object.
#[pyfunction]
pub fn scan_spans<'py>(
    py: Python<'py>,
    texts: Vec<PyBackedBytes>,
    wanted: u32,
    keys: &Bound<'py, PyList>,
    detection: &Bound<'py, PyType>,
    labels: &Bound<'py, PyTuple>,
) -> PyResult<Spans<'py>> {
    if keys.len() != texts.len() || labels.len() != DETECTORS.len() {
        return Err(PyValueError::new_err(
            "keys or labels do not match the texts",
        ));
    }
    let wanted = Wanted(wanted);
    let total: usize = texts.iter().map(|text| text.len()).sum();
    let found = if total >= RELEASE_GIL_BYTES {
        py.allow_threads(|| scan_all(&texts, wanted))
    } else {
        scan_all(&texts, wanted)
    };
    // Each pass is in element order: a stable sort groups each element's hits, pass order kept.
    let mut hits: Vec<(usize, Hit)> = found.passes.iter().flatten().copied().collect();
    hits.sort_by_key(|&(index, _)| index);
    let names = [
        intern!(py, "credit_card"),
        intern!(py, "us_ssn"),
        intern!(py, "iban"),
        intern!(py, "email"),
        intern!(py, "phone"),
        intern!(py, "ip_address"),
    ];
    // `tuple.__new__(Detection, fields)`: what `detectors._new_tuple` does, without Python.
    let new = py.get_type::<PyTuple>().getattr(intern!(py, "__new__"))?;
    let mut made: HashMap<(u8, usize, usize), Bound<'py, PyAny>> = HashMap::new();
    let spans = PyDict::new(py);
    let mut several = Vec::new();
    let mut bits = 0u32;
    for group in hits.chunk_by(|a, b| a.0 == b.0) {
        let mut detections = Vec::with_capacity(group.len());
        for &(_, hit) in group {
            let id = (hit.detector, hit.start, hit.end);
            let made_one = match made.get(&id) {
                Some(known) => known.clone(),
                None => {
                    let bit = usize::from(hit.detector);
                    let fields = PyTuple::new(
                        py,
                        [
                            names[bit].clone().into_any(),
                            labels.get_item(bit)?,
                            hit.start.into_pyobject(py)?.into_any(),
                            hit.end.into_pyobject(py)?.into_any(),
                        ],
                    )?;
                    let one = new.call1((detection, fields))?;
                    made.insert(id, one.clone());
                    one
                }
            };
            detections.push(made_one);
        }
        let key = keys.get_item(group[0].0)?;
        if let [(_, hit)] = group {
            bits |= 1 << hit.detector;
        } else {
            several.push(key.clone());
        }
        spans.set_item(key, PyList::new(py, detections)?)?;
    }
    Ok((
        spans,
        PyList::new(py, several)?,
        bits,
        PyList::new(py, found.iban_pending)?,
        PyList::new(py, found.ipv6_pending)?,
    ))
}
