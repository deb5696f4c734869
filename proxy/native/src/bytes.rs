//! Byte classes and the neighbour rules shared by every detector (`patterns._isolated`,
//! `_SEPARATOR`, `_with_country_code`).

#[inline]
pub fn is_digit(byte: u8) -> bool {
    byte.is_ascii_digit()
}

#[inline]
pub fn is_alnum(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
}

/// The byte at `index`, if inside `data`: out of range reads as "no such byte".
#[inline]
pub fn at(data: &[u8], index: usize) -> Option<u8> {
    data.get(index).copied()
}

#[inline]
pub fn digit_at(data: &[u8], index: usize) -> bool {
    matches!(at(data, index), Some(byte) if is_digit(byte))
}

/// `count` ASCII digits from `start`.
#[inline]
pub fn digits_at(data: &[u8], start: usize, count: usize) -> bool {
    (start..start + count).all(|index| digit_at(data, index))
}

/// How many ASCII digits follow from `start`, counting at most `limit`.
#[inline]
pub fn digit_run(data: &[u8], start: usize, limit: usize) -> usize {
    let mut count = 0;
    while count < limit && digit_at(data, start + count) {
        count += 1;
    }
    count
}

/// `_isolated`: nothing glues `data[start..end]` to neighbouring ASCII letters or digits,
/// directly or through one of `joiners` followed (or preceded) by a digit.
#[inline]
pub fn isolated(data: &[u8], start: usize, end: usize, joiners: &[u8]) -> bool {
    !glued_before(data, start, joiners) && !glued_after(data, end, joiners)
}

/// The first half of `isolated`: an ASCII letter or digit right before `start`, or one of
/// `joiners` after a digit.
#[inline]
pub fn glued_before(data: &[u8], start: usize, joiners: &[u8]) -> bool {
    start > 0 && {
        let before = data[start - 1];
        is_alnum(before) || (joiners.contains(&before) && start > 1 && is_digit(data[start - 2]))
    }
}

/// The second half of `isolated`: an ASCII letter or digit at `end`, or one of `joiners`
/// before a digit.
#[inline]
pub fn glued_after(data: &[u8], end: usize, joiners: &[u8]) -> bool {
    end < data.len() && {
        let after = data[end];
        is_alnum(after)
            || (joiners.contains(&after) && end + 1 < data.len() && is_digit(data[end + 1]))
    }
}

/// Where the run of ASCII digits from `position` ends.
#[inline]
pub fn digit_run_end(data: &[u8], mut position: usize) -> usize {
    while position < data.len() && is_digit(data[position]) {
        position += 1;
    }
    position
}

/// Where the search resumes after a rejected candidate that starts at `start`: just past
/// the first byte after `start` that is not an ASCII letter or digit (`_SEPARATOR`).
pub fn past_next_separator(data: &[u8], start: usize) -> usize {
    match data[(start + 1).min(data.len())..]
        .iter()
        .position(|&byte| !is_alnum(byte))
    {
        Some(offset) => start + 1 + offset + 1,
        None => data.len(),
    }
}

/// `_with_country_code`: extend a US number backwards over a `+1 `/`+1-`/`+1.`/`+1`/`1-`/`1 `
/// prefix (the first of those, in that order, that is there).
pub fn with_country_code(data: &[u8], start: usize) -> usize {
    const PREFIXES: [&[u8]; 6] = [b"+1 ", b"+1-", b"+1.", b"+1", b"1-", b"1 "];
    for prefix in PREFIXES {
        if start >= prefix.len() && &data[start - prefix.len()..start] == prefix {
            return start - prefix.len();
        }
    }
    start
}

/// The first index at or after `from` whose byte is `wanted`. Blocks of 16 bytes without one
/// are skipped with a check that vectorizes (a byte-by-byte search does not).
#[inline]
pub fn find_byte(data: &[u8], from: usize, wanted: impl Fn(u8) -> bool + Copy) -> Option<usize> {
    let mut index = from.min(data.len());
    for block in data[index..].chunks_exact(16) {
        if block.iter().fold(false, |seen, &byte| seen | wanted(byte)) {
            break;
        }
        index += 16;
    }
    data[index..]
        .iter()
        .position(|&byte| wanted(byte))
        .map(|offset| index + offset)
}
