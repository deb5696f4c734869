//! Raw BYTES tensors element by element, with exactly the semantics of
//! `labelgate.oip.tensors` (the Python code is the reference; `tests/oip/test_native_tensors.py`
//! compares the two) and of the `partial` mask strategy on ASCII elements
//! (`labelgate.enforce.strategies._partial_bytes`).
//!
//! Every function answers `None` when it is not sure (malformed data, a value that is not
//! `bytes`, non-ASCII text): the caller then runs the Python code, which gives the result or
//! raises the error with its own message. Nothing is ever half done.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

const PREFIX: usize = 4;

/// Where each of `count` length-prefixed elements lies in `data`, if `data` holds exactly
/// `count` of them and nothing else.
fn element_bounds(data: &[u8], count: usize) -> Option<Vec<(usize, usize)>> {
    // Each element takes at least its prefix: a larger count cannot fit (and is not allocated).
    if count > data.len() / PREFIX {
        return None;
    }
    let mut bounds = Vec::with_capacity(count);
    let mut offset = 0usize;
    for _ in 0..count {
        let prefix: [u8; PREFIX] = data.get(offset..offset + PREFIX)?.try_into().ok()?;
        let start = offset + PREFIX;
        let length = usize::try_from(u32::from_le_bytes(prefix)).ok()?;
        let end = start.checked_add(length).filter(|&end| end <= data.len())?;
        bounds.push((start, end));
        offset = end;
    }
    (offset == data.len()).then_some(bounds)
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
/// (characters, not bytes, are kept there: the Python path counts them).
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
    if !elements.iter().all(|element| element.is_ascii()) {
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

/// `data[:start] + partial(data[start:end], keep_last) + data[end:]` when the span is ASCII
/// and inside `data` (`start < end`); `None` otherwise.
#[pyfunction]
pub fn partial_span<'py>(
    py: Python<'py>,
    data: &[u8],
    start: usize,
    end: usize,
    keep_last: usize,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    if start >= end || end > data.len() || !data[start..end].is_ascii() {
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
}
