//! Raw BYTES tensors element by element, with exactly the semantics of
//! `labelgate.oip.tensors` (the Python code is the reference; `tests/oip/test_native_tensors.py`
//! compares the two) and of the `partial` mask strategy on ASCII elements
//! (`labelgate.enforce.strategies._partial_bytes`).
//!
//! Every function answers `None` when it is not sure (malformed data, a value that is not
//! `bytes`, non-ASCII text, text that may read as UTF-16 or UTF-32): the caller then runs the
//! Python code, which gives the result or raises the error with its own message. Nothing is
//! ever half done.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyInt, PyList, PyString, PyTuple, PyType};

const PREFIX: usize = 4;

/// Walks the `count` length-prefixed elements of `data`, handing each one's bounds to `visit`;
/// false unless `data` holds exactly `count` of them and nothing else.
pub(crate) fn walk_elements(
    data: &[u8],
    count: usize,
    mut visit: impl FnMut(usize, usize),
) -> bool {
    // Each element takes at least its prefix: a larger count cannot fit.
    if count > data.len() / PREFIX {
        return false;
    }
    let mut offset = 0usize;
    for _ in 0..count {
        let Some(prefix) = data.get(offset..offset + PREFIX) else {
            return false;
        };
        let length = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let start = offset + PREFIX;
        match start.checked_add(length).filter(|&end| end <= data.len()) {
            Some(end) => visit(start, end),
            None => return false,
        }
        offset = start + length;
    }
    offset == data.len()
}

/// Where each of `count` length-prefixed elements lies in `data`, if `data` holds exactly
/// `count` of them and nothing else.
fn element_bounds(data: &[u8], count: usize) -> Option<Vec<(usize, usize)>> {
    // Not allocated for a count that cannot fit.
    let mut bounds = Vec::with_capacity(if count > data.len() / PREFIX {
        0
    } else {
        count
    });
    walk_elements(data, count, |start, end| bounds.push((start, end))).then_some(bounds)
}

/// Whether `split_raw_bytes(data, count)` would succeed: `data` is exactly `count`
/// length-prefixed elements. Checks without building an element, so a decoded tensor can
/// leave its elements unread until something needs them.
#[pyfunction]
pub fn check_bytes(data: &[u8], count: usize) -> bool {
    walk_elements(data, count, |_, _| {})
}

/// `split_raw_bytes(data, count)` for well-formed `data`: its `count` elements as a list of
/// `bytes`; `None` for anything else (too few or too many bytes, a length past the end).
#[pyfunction]
pub fn split_bytes<'py>(
    py: Python<'py>,
    data: &[u8],
    count: usize,
) -> PyResult<Option<Bound<'py, PyList>>> {
    let Some(bounds) = element_bounds(data, count) else {
        return Ok(None);
    };
    let elements = bounds
        .into_iter()
        .map(|(start, end)| PyBytes::new(py, &data[start..end]));
    Ok(Some(PyList::new(py, elements)?))
}

/// The elements of `values` as byte slices, if every one is exactly `bytes` and no longer
/// than a 4-byte prefix can say.
fn exact_bytes<'a, 'py>(values: &'a [Bound<'py, PyAny>]) -> Option<Vec<&'a [u8]>> {
    values
        .iter()
        .map(|value| {
            let bytes = value.downcast_exact::<PyBytes>().ok()?.as_bytes();
            u32::try_from(bytes.len()).ok().map(|_| bytes)
        })
        .collect()
}

/// Write `elements` length-prefixed, one after the other, into `buffer` (exactly their size).
fn write_prefixed(buffer: &mut [u8], elements: &[&[u8]]) {
    let mut offset = 0usize;
    for element in elements {
        // Lengths were checked against u32 by `exact_bytes`.
        buffer[offset..offset + PREFIX].copy_from_slice(&(element.len() as u32).to_le_bytes());
        offset += PREFIX;
        buffer[offset..offset + element.len()].copy_from_slice(element);
        offset += element.len();
    }
}

/// `tensor_to_raw` for a BYTES tensor: each element of `values` (a list of `bytes`) after
/// its 4-byte little-endian length; `None` when an element is not `bytes` or is too long.
#[pyfunction]
pub fn join_bytes<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyList>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    // A snapshot of the items: no Python code runs between reading them and copying them.
    let items: Vec<Bound<'py, PyAny>> = values.iter().collect();
    let Some(elements) = exact_bytes(&items) else {
        return Ok(None);
    };
    let total = elements.iter().map(|element| PREFIX + element.len()).sum();
    let joined = PyBytes::new_with(py, total, |buffer| {
        write_prefixed(buffer, &elements);
        Ok(())
    })?;
    Ok(Some(joined))
}

/// Whether `text` may read as UTF-16 or UTF-32 text (`folding.reads_wide`: it holds a NUL
/// or starts with a UTF-16 byte order mark). `partial` stars such text whole where the
/// encoding is confirmed, which needs `folding.wide_encoding`: the kernels leave it to Python.
pub(crate) fn may_read_wide(text: &[u8]) -> bool {
    text.contains(&0) || text.starts_with(b"\xff\xfe") || text.starts_with(b"\xfe\xff")
}

/// Whether `partial` on `element` is the kernels' to do: ASCII (a star per byte), and no
/// NUL (`may_read_wide`: an ASCII element cannot start with a byte order mark).
fn starrable(element: &[u8]) -> bool {
    element.is_ascii() && !element.contains(&0)
}

/// How many leading bytes of an ASCII element of `length` bytes `partial` stars: all of them
/// when it is no longer than `keep_last`, never showing a short value whole.
fn hidden(length: usize, keep_last: usize) -> usize {
    if length <= keep_last {
        length
    } else {
        length - keep_last
    }
}

/// `partial` (keep the last `keep_last`) on every element of `values`, all ASCII `bytes`:
/// `(masked elements, their raw BYTES form)`; `None` when an element is not ASCII `bytes`
/// (characters, not bytes, are kept there: the Python path counts them) or holds a NUL
/// (`may_read_wide`).
#[pyfunction]
pub fn partial_all<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyList>,
    keep_last: usize,
) -> PyResult<Option<(Bound<'py, PyList>, Bound<'py, PyBytes>)>> {
    let items: Vec<Bound<'py, PyAny>> = values.iter().collect();
    let Some(elements) = exact_bytes(&items) else {
        return Ok(None);
    };
    if !elements.iter().all(|element| starrable(element)) {
        return Ok(None);
    }
    let total = elements.iter().map(|element| PREFIX + element.len()).sum();
    let raw = PyBytes::new_with(py, total, |buffer| {
        let mut offset = 0usize;
        for element in &elements {
            let length = element.len();
            buffer[offset..offset + PREFIX].copy_from_slice(&(length as u32).to_le_bytes());
            offset += PREFIX;
            let stars = hidden(length, keep_last);
            buffer[offset..offset + stars].fill(b'*');
            buffer[offset + stars..offset + length].copy_from_slice(&element[stars..]);
            offset += length;
        }
        Ok(())
    })?;
    let data = raw.as_bytes();
    let mut offset = 0usize;
    let mut masked = Vec::with_capacity(elements.len());
    for element in &elements {
        offset += PREFIX;
        masked.push(PyBytes::new(py, &data[offset..offset + element.len()]));
        offset += element.len();
    }
    Ok(Some((PyList::new(py, masked)?, raw)))
}

/// Whether `data` is exactly `count` length-prefixed elements, all ASCII without a NUL
/// (`starrable`).
fn ascii_elements(data: &[u8], count: usize) -> bool {
    let mut ascii = true;
    walk_elements(data, count, |start, end| {
        ascii &= starrable(&data[start..end])
    }) && ascii
}

/// `data` (checked by `ascii_elements`) into `buffer`, each element starred but its last
/// `keep_last` bytes; the prefixes are copied as they are.
fn star_elements(data: &[u8], count: usize, keep_last: usize, buffer: &mut [u8]) {
    buffer.copy_from_slice(data);
    walk_elements(data, count, |start, end| {
        buffer[start..start + hidden(end - start, keep_last)].fill(b'*');
    });
}

/// `partial_all` read from and written to raw BYTES form: `data`, exactly `count`
/// length-prefixed elements, with every element starred but its last `keep_last` bytes;
/// `None` when `data` is not that well formed or an element is not ASCII or holds a NUL. No
/// element is built on either side.
#[pyfunction]
pub fn partial_all_raw<'py>(
    py: Python<'py>,
    data: &[u8],
    count: usize,
    keep_last: usize,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    if !ascii_elements(data, count) {
        return Ok(None);
    }
    let raw = PyBytes::new_with(py, data.len(), |buffer| {
        star_elements(data, count, keep_last, buffer);
        Ok(())
    })?;
    Ok(Some(raw))
}

/// `data[:start] + partial(data[start:end], keep_last) + data[end:]` when the span is ASCII
/// and inside `data` (`start < end`) and `data` cannot read as UTF-16 or UTF-32
/// (`may_read_wide`: Python stars a span of such an element whole); `None` otherwise.
#[pyfunction]
pub fn partial_span<'py>(
    py: Python<'py>,
    data: &[u8],
    start: usize,
    end: usize,
    keep_last: usize,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    if start >= end || end > data.len() || !data[start..end].is_ascii() || may_read_wide(data) {
        return Ok(None);
    }
    let stars = start + hidden(end - start, keep_last);
    let masked = PyBytes::new_with(py, data.len(), |buffer| {
        buffer[..start].copy_from_slice(&data[..start]);
        buffer[start..stars].fill(b'*');
        buffer[stars..].copy_from_slice(&data[stars..]);
        Ok(())
    })?;
    Ok(Some(masked))
}

/// The single-hit elements of a tensor's text spans masked by `partial`, written into
/// `masked`: what `enforce.masking._mask_tensor` does element by element with
/// `partial_span`, in one call.
///
/// `spans` maps element positions (of `values`) to their `Detection`s (`detection` is the
/// type); `partial` maps the detectors whose mask is `partial` to its `keep_last`;
/// `unmasked` holds the detectors no mask names (a single hit of one leaves its element
/// as it is). Returns the positions left to Python: every one whose detections are not
/// exactly one such `Detection` of such a detector, whose span is empty, out of the
/// element or not ASCII, or whose element or position is not what it should be.
#[pyfunction]
pub fn partial_spans<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyList>,
    masked: &Bound<'py, PyList>,
    spans: &Bound<'py, PyDict>,
    partial: &Bound<'py, PyDict>,
    unmasked: &Bound<'py, PyAny>,
    detection: &Bound<'py, PyType>,
) -> PyResult<Bound<'py, PyList>> {
    let left = PyList::empty(py);
    if masked.len() != values.len() {
        for key in spans.keys() {
            left.append(key)?;
        }
        return Ok(left);
    }
    for (key, found) in spans.iter() {
        if !partial_one(
            py, values, masked, &key, &found, partial, unmasked, detection,
        )? {
            left.append(key)?;
        }
    }
    Ok(left)
}

/// One element of `partial_spans`: whether it was done (masked, or left as it is).
#[allow(clippy::too_many_arguments)]
fn partial_one<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyList>,
    masked: &Bound<'py, PyList>,
    key: &Bound<'py, PyAny>,
    found: &Bound<'py, PyAny>,
    partial: &Bound<'py, PyDict>,
    unmasked: &Bound<'py, PyAny>,
    detection: &Bound<'py, PyType>,
) -> PyResult<bool> {
    let Ok(found) = found.downcast_exact::<PyList>() else {
        return Ok(false);
    };
    if found.len() != 1 {
        return Ok(false);
    }
    let hit = found.get_item(0)?;
    if !hit.get_type().is(detection) {
        return Ok(false);
    }
    let Ok(hit) = hit.downcast::<PyTuple>() else {
        return Ok(false);
    };
    if hit.len() != 4 {
        return Ok(false);
    }
    let name = hit.get_item(0)?;
    if !name.is_exact_instance_of::<PyString>() {
        return Ok(false);
    }
    let Some(keep_last) = partial.get_item(&name)? else {
        return unmasked.contains(&name);
    };
    let (Ok(keep_last), Ok(start), Ok(end), Ok(position)) = (
        keep_last.extract::<usize>(),
        hit.get_item(2)?.extract::<usize>(),
        hit.get_item(3)?.extract::<usize>(),
        exact_index(key),
    ) else {
        return Ok(false);
    };
    if position >= values.len() {
        return Ok(false);
    }
    let value = values.get_item(position)?;
    let Ok(data) = value.downcast_exact::<PyBytes>() else {
        return Ok(false);
    };
    match partial_span(py, data.as_bytes(), start, end, keep_last)? {
        Some(rewritten) => {
            masked.set_item(position, rewritten)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// `key` as a list position if it is exactly an `int` that fits one.
fn exact_index(key: &Bound<'_, PyAny>) -> PyResult<usize> {
    if !key.is_exact_instance_of::<PyInt>() {
        return Err(pyo3::exceptions::PyTypeError::new_err("not an int"));
    }
    key.extract::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_of_well_formed_data() {
        let data = b"\x01\x00\x00\x00a\x00\x00\x00\x00";
        assert_eq!(element_bounds(data, 2), Some(vec![(4, 5), (9, 9)]));
        assert_eq!(element_bounds(b"", 0), Some(vec![]));
    }

    #[test]
    fn bounds_refuse_malformed_data() {
        assert_eq!(element_bounds(b"\x02\x00\x00\x00a", 1), None); // past the end
        assert_eq!(element_bounds(b"\x00\x00\x00\x00x", 1), None); // trailing byte
        assert_eq!(element_bounds(b"\x00\x00\x00", 1), None); // truncated prefix
        assert_eq!(element_bounds(b"\xff\xff\xff\xff", 1), None); // huge length
        assert_eq!(element_bounds(b"", usize::MAX), None);
    }

    #[test]
    fn the_check_agrees_with_the_bounds() {
        let cases: [(&[u8], usize); 7] = [
            (b"\x01\x00\x00\x00a\x00\x00\x00\x00", 2),
            (b"", 0),
            (b"\x02\x00\x00\x00a", 1),
            (b"\x00\x00\x00\x00x", 1),
            (b"\x00\x00\x00", 1),
            (b"\xff\xff\xff\xff", 1),
            (b"", usize::MAX),
        ];
        for (data, count) in cases {
            assert_eq!(
                check_bytes(data, count),
                element_bounds(data, count).is_some()
            );
        }
        assert!(!check_bytes(b"\x00\x00\x00\x00", 2)); // fewer elements than the count
    }

    #[test]
    fn raw_starring_touches_elements_not_prefixes() {
        let data = b"\x06\x00\x00\x00abcdef\x00\x00\x00\x00\x02\x00\x00\x00gh";
        assert!(ascii_elements(data, 3));
        let mut buffer = vec![0u8; data.len()];
        star_elements(data, 3, 4, &mut buffer);
        assert_eq!(
            buffer,
            b"\x06\x00\x00\x00**cdef\x00\x00\x00\x00\x02\x00\x00\x00**" // short: all hidden
        );
        star_elements(data, 3, 0, &mut buffer);
        assert_eq!(
            buffer,
            b"\x06\x00\x00\x00******\x00\x00\x00\x00\x02\x00\x00\x00**"
        );
        assert!(!ascii_elements(data, 2)); // an element left over
        assert!(!ascii_elements(b"\x02\x00\x00\x00\xc3\xa9", 1)); // not ASCII
        assert!(!ascii_elements(b"\x02\x00\x00\x00a\x00", 1)); // may read as UTF-16
    }

    #[test]
    fn text_that_may_read_wide_is_left_to_python() {
        assert!(may_read_wide(b"a\x00b\x00"));
        assert!(may_read_wide(b"\xff\xfea"));
        assert!(may_read_wide(b"\xfe\xff\x00a"));
        assert!(!may_read_wide(b"card 4111111111111111"));
        assert!(!may_read_wide(b"\xc3\xa9\xff\xfe")); // a mark after the start is no mark
        assert!(!starrable(b"1\x002\x00"));
        assert!(starrable(b"123-45-6789"));
    }
}
