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

use crate::bytes::find_byte;
use crate::markup::control;
use crate::scan::{Found, Hit, Wanted, DETECTORS};
use crate::{detector_names, scan_all, unlocked_if_large};

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
    let found = unlocked_if_large(py, total, || scan_all(&texts, wanted));
    let (spans, several, bits) =
        built(py, &found, |index| keys.get_item(index), detection, labels)?;
    Ok((
        spans,
        PyList::new(py, several)?,
        bits,
        PyList::new(py, found.iban_pending)?,
        PyList::new(py, found.ipv6_pending)?,
    ))
}

/// `scan_spans` over the `count` elements of a raw BYTES tensor (`data`: each element a
/// 4-byte little-endian length, then its bytes; nothing after the last), keyed by element
/// index: the same result as `scan_spans(split(data), wanted, list(range(count)), ...)`,
/// without a Python object per element on the way in.
///
/// `None` when `data` is not exactly `count` well-formed elements (the caller does not trust
/// it then), or when some element holds one of the bytes of `stop` (the caller has other
/// work for such tensors first: JSON objects, escapes).
#[pyfunction]
pub fn scan_spans_raw<'py>(
    py: Python<'py>,
    data: PyBackedBytes,
    count: usize,
    wanted: u32,
    stop: &[u8],
    detection: &Bound<'py, PyType>,
    labels: &Bound<'py, PyTuple>,
) -> PyResult<Option<Spans<'py>>> {
    if labels.len() != DETECTORS.len() {
        return Err(PyValueError::new_err("labels do not match the detectors"));
    }
    // One search of the whole buffer settles the usual tensor; a stop byte there may be a
    // length prefix's, so then each element decides (the first with one ends the walk).
    // A table, not `stop.contains`: the stop set holds the control bytes too (about 30), and
    // the length prefixes' zero bytes send every element through this check.
    let mut stops = [false; 256];
    for &byte in stop {
        stops[usize::from(byte)] = true;
    }
    let stopper = |byte: u8| stops[usize::from(byte)];
    let any_stop = find_byte(&data, 0, stopper).is_some();
    // The stop sets the classifier passes (the control characters and a few others) are
    // tested per byte without the table, which vectorizes; any other set takes the table.
    let fast = control_stops(&stops);
    let Some(texts) = split(&data, count, |text| {
        any_stop
            && match fast {
                Some(others) => holds_stop(text, others),
                None => find_byte(text, 0, stopper).is_some(),
            }
    }) else {
        return Ok(None);
    };
    let wanted = Wanted(wanted);
    let found = unlocked_if_large(py, data.len(), || scan_all(&texts, wanted));
    let (spans, several, bits) = built(
        py,
        &found,
        |index| Ok(index.into_pyobject(py)?.into_any()),
        detection,
        labels,
    )?;
    Ok(Some((
        spans,
        PyList::new(py, several)?,
        bits,
        PyList::new(py, &found.iban_pending)?,
        PyList::new(py, &found.ipv6_pending)?,
    )))
}

/// The stop bytes past the control characters (padded with copies of the first), when the
/// stop set `stops` is exactly the control characters folding drops (`markup::control`) and
/// at most four others.
fn control_stops(stops: &[bool; 256]) -> Option<[u8; 4]> {
    let mut others = Vec::new();
    for byte in 0..=u8::MAX {
        let stopped = stops[usize::from(byte)];
        if control(byte) && !stopped {
            return None;
        }
        if stopped && !control(byte) {
            others.push(byte);
        }
    }
    if others.len() > 4 {
        return None;
    }
    // A control character, when none other: already a stop.
    let pad = others.first().copied().unwrap_or(0);
    others.resize(4, pad);
    others.try_into().ok()
}

/// Whether `text` holds a control character folding drops or one of `others`: every byte
/// tested without a branch (vector compares).
fn holds_stop(text: &[u8], others: [u8; 4]) -> bool {
    let stop = |byte: u8| {
        u8::from(control(byte))
            | u8::from(byte == others[0])
            | u8::from(byte == others[1])
            | u8::from(byte == others[2])
            | u8::from(byte == others[3])
    };
    text.iter().fold(0, |seen, &byte| seen | stop(byte)) != 0
}

/// The elements of raw BYTES `data` when it is exactly `count` length-prefixed elements and
/// `refuse` refuses none of them, else `None`.
fn split(data: &[u8], count: usize, refuse: impl Fn(&[u8]) -> bool) -> Option<Vec<&[u8]>> {
    // Each element needs its prefix: checked before a huge `count` sizes the vector.
    if count > data.len() / 4 {
        return None;
    }
    let mut texts = Vec::with_capacity(count);
    let mut rest = data;
    for _ in 0..count {
        let (prefix, after) = rest.split_first_chunk::<4>()?;
        let length = usize::try_from(u32::from_le_bytes(*prefix)).ok()?;
        if length > after.len() {
            return None;
        }
        let (text, after) = after.split_at(length);
        if refuse(text) {
            return None;
        }
        texts.push(text);
        rest = after;
    }
    rest.is_empty().then_some(texts)
}

/// The detections of `found` by element, keyed by `key(element index)`: `(spans, several,
/// bits)` as `scan_spans` describes them.
fn built<'py>(
    py: Python<'py>,
    found: &Found,
    key: impl Fn(usize) -> PyResult<Bound<'py, PyAny>>,
    detection: &Bound<'py, PyType>,
    labels: &Bound<'py, PyTuple>,
) -> PyResult<(Bound<'py, PyDict>, Vec<Bound<'py, PyAny>>, u32)> {
    // Each pass is in element order: a stable sort groups each element's hits, pass order kept.
    let mut hits: Vec<(usize, Hit)> = found.passes.iter().flatten().copied().collect();
    hits.sort_by_key(|&(index, _)| index);
    let names = detector_names(py);
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
        let key = key(group[0].0)?;
        if let [(_, hit)] = group {
            bits |= 1 << hit.detector;
        } else {
            several.push(key.clone());
        }
        spans.set_item(key, PyList::new(py, detections)?)?;
    }
    Ok((spans, several, bits))
}

#[cfg(test)]
mod tests {
    use super::split;

    fn raw(elements: &[&[u8]]) -> Vec<u8> {
        let mut data = Vec::new();
        for element in elements {
            data.extend_from_slice(&u32::try_from(element.len()).unwrap().to_le_bytes());
            data.extend_from_slice(element);
        }
        data
    }

    #[test]
    fn splits_well_formed_buffers() {
        let elements: [&[u8]; 4] = [b"", b"a\x00b", "é".as_bytes(), b"123-45-6789"];
        assert_eq!(
            split(&raw(&elements), 4, |_| false),
            Some(elements.to_vec())
        );
        assert_eq!(split(b"", 0, |_| false), Some(vec![]));
        assert_eq!(split(&raw(&elements), 4, |text| text == b"a\x00b"), None);
    }

    #[test]
    fn refuses_malformed_buffers() {
        let data = raw(&[b"ab", b"cd"]);
        assert_eq!(split(&data, 1, |_| false), None); // bytes after the last element
        assert_eq!(split(&data, 3, |_| false), None); // too few elements
        assert_eq!(split(&data[..data.len() - 1], 2, |_| false), None); // a short element
        assert_eq!(split(&data[..7], 2, |_| false), None); // inside a prefix
        assert_eq!(split(&[0xff, 0xff, 0xff, 0xff, b'a'], 1, |_| false), None); // a huge length
        assert_eq!(split(&data, usize::MAX, |_| false), None);
        assert_eq!(split(b"", 1, |_| false), None);
    }
}
