//! Cards grouped in thousands (`4,111,111,111,111,111`): `patterns._thousands_card`.

use crate::bytes::{digit_run_end, digits_at, glued_before, is_digit, isolated};
use crate::rules::is_card;
use crate::scan::{Hit, CREDIT_CARD};

/// `_thousands_card`: the card grouped in thousands whose three groups `digit_led::find`
/// found from `at` (three digits, then one separator before each group), if any. `at` is the
/// first group, or the second when a separator and 1-3 digits come before it. Not inlined:
/// rare, and inlined in the digit-led pass it slows that pass's common case.
#[inline(never)]
pub fn card(data: &[u8], at: usize) -> Option<Hit> {
    let separator = data[at + 3];
    let joiners = [b'-', b'.', separator];
    let mut start = at;
    if at >= 2 && data[at - 1] == separator && is_digit(data[at - 2]) {
        let lead = data[at.saturating_sub(5)..at - 1]
            .iter()
            .rev()
            .take_while(|&&byte| is_digit(byte))
            .count();
        start = at - 1 - lead;
    }
    // Before reading the groups (a long run of them is tried group by group): a number that
    // goes on before, with a first group of four digits or more, or a group before this one.
    if at - start > 4 || glued_before(data, start, &joiners) {
        return None;
    }
    let mut end = at + 3;
    while data.get(end) == Some(&separator) && digits_at(data, end + 1, 3) {
        end += 4;
    }
    let mut card_end = end;
    if end + 1 < data.len()
        && matches!(data[end], b'.' | b',')
        && data[end] != separator
        && is_digit(data[end + 1])
    {
        card_end = digit_run_end(data, end + 1); // a fraction goes with the number
    }
    if !isolated(data, start, card_end, &joiners) {
        return None;
    }
    let number: Vec<u8> = data[start..end]
        .iter()
        .copied()
        .filter(|&byte| byte != separator)
        .skip_while(|&digit| digit == b'0')
        .collect();
    is_card(&number).then_some(Hit {
        detector: CREDIT_CARD,
        start,
        end: card_end,
    })
}

#[cfg(test)]
mod tests {
    use crate::digit_led;
    use crate::scan::{Wanted, CREDIT_CARD};

    fn found(data: &[u8]) -> Vec<(usize, usize)> {
        let mut hits = Vec::new();
        let mut position = 0;
        while let Some(candidate) = digit_led::find(data, position) {
            match digit_led::check(data, &candidate, Wanted(1 << CREDIT_CARD)) {
                Some(hit) => {
                    hits.push((hit.start, hit.end));
                    position = hit.end;
                }
                None => position = candidate.start + 4,
            }
        }
        hits
    }

    #[test]
    fn cards_grouped_in_thousands_are_found() {
        for text in [
            &b"4,111,111,111,111,111"[..],
            b"4 111 111 111 111 111",
            b"4.111.111.111.111.111",
            b"4'111'111'111'111'111",
            b"4_111_111_111_111_111",
            b"4\t111\t111\t111\t111\t111",
            b"00,000,004,111,111,111,111,111",
            b"378,282,246,310,005",
            b"4,111,111,111,111,111.50",
            b"4.111.111.111.111.111,50",
        ] {
            assert_eq!(
                found(text),
                [(0, text.len())],
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        assert_eq!(found(b"card [4,111,111,111,111,111]."), [(6, 27)]);
    }

    #[test]
    fn longer_or_broken_numbers_are_not() {
        for text in [
            &b"4,111,111,111,111,112"[..],
            b"4,111,111,111,111,111,1",
            b"4,111,111,111,111,1111",
            b"12,4,111,111,111,111,111",
            b"41,111,111,111,111,111",
            b"4,111.111,111,111,111",
            b"4,111,111,111,111,111.50.3",
            b"x4,111,111,111,111,111",
            b"1.4,111,111,111,111,111",
        ] {
            assert!(found(text).is_empty(), "{}", String::from_utf8_lossy(text));
        }
    }
}
