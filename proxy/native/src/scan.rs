//! One element's scan: `patterns.builtin_hits` without the IPv6 confirmations and the IBAN
//! checks of countries with national rules, which stay in Python (IPv6 text is `ipaddress`'s,
//! national IBAN rules are python-stdnum's); for those the scan only names the elements
//! where Python must run the pass.

use crate::bytes::past_next_separator;
use crate::iban::{self, Pass, Registry};
use crate::{digit_led, email, floats, forms, secrets};

/// Detector ids: bit positions in `Wanted`, indexes into `DETECTORS`.
pub const CREDIT_CARD: u8 = 0;
pub const US_SSN: u8 = 1;
pub const IBAN: u8 = 2;
pub const EMAIL: u8 = 3;
pub const PHONE: u8 = 4;
pub const IP_ADDRESS: u8 = 5;
pub const SECRET: u8 = 6;
pub const DETECTORS: [&str; 7] = [
    "credit_card",
    "us_ssn",
    "iban",
    "email",
    "phone",
    "ip_address",
    "secret",
];

#[derive(Clone, Copy)]
pub struct Wanted(pub u32);

impl Wanted {
    #[inline]
    pub fn has(self, detector: u8) -> bool {
        self.0 & (1 << detector) != 0
    }
}

/// `data[start..end]` is what `detector` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub detector: u8,
    pub start: usize,
    pub end: usize,
}

/// A regex match in `patterns`' terms: its span, and what the check needs to know of it.
pub struct Candidate<K> {
    pub start: usize,
    pub end: usize,
    pub kind: K,
}

/// The passes of `builtin_hits` this scan runs, in its order (the IPv6 pass, last, is
/// Python's; so is the IBAN pass of an element `iban::pass` defers).
pub const DIGIT_LED_PASS: usize = 0;
pub const IPV4_PASS: usize = 1;
pub const IBAN_PASS: usize = 2;
pub const PLUS_PHONE_PASS: usize = 3;
pub const PAREN_PHONE_PASS: usize = 4;
pub const EMAIL_PASS: usize = 5;
pub const FLOAT_CARD_PASS: usize = 6;
pub const PEM_PASS: usize = 7;
pub const JWT_PASS: usize = 8;
pub const TOKEN_PASS: usize = 9;
pub const PASSES: usize = 10;
// The secret passes are side by side: `scan` hands them out as one slice.
const _: () = assert!(JWT_PASS == PEM_PASS + 1 && TOKEN_PASS == JWT_PASS + 1);

/// What the scan of many elements found: each pass's (element index, hit), in the order
/// `builtin_hits` finds them over the NUL-joined elements (pass by pass, then element by
/// element; a PEM block that runs on past the end of its element is one hit per element it
/// covers), and the elements in which Python must still run the IBAN and IPv6 passes.
#[derive(Default)]
pub struct Found {
    pub passes: [Vec<(usize, Hit)>; PASSES],
    pub iban_pending: Vec<usize>,
    pub ipv6_pending: Vec<usize>,
    /// The END marker a PEM block left open by the elements scanned so far awaits: it runs on
    /// into the next (`secrets::secrets`).
    pub open_key: Option<Vec<u8>>,
}

/// `patterns._confirmed`: every candidate `find` proposes that `check` confirms; after a
/// confirmed hit the search goes on at its end, after a rejected candidate just past the
/// next separator after its start (a greedy candidate may have swallowed a real one's start).
fn confirmed<K>(
    data: &[u8],
    find: impl Fn(&[u8], usize) -> Option<Candidate<K>>,
    check: impl Fn(&[u8], &Candidate<K>) -> Option<Hit>,
    index: usize,
    hits: &mut Vec<(usize, Hit)>,
) {
    let mut position = 0;
    while let Some(candidate) = find(data, position) {
        match check(data, &candidate) {
            Some(hit) => {
                position = hit.end;
                hits.push((index, hit));
            }
            None => position = past_next_separator(data, candidate.start),
        }
    }
}

/// Scan element `index`, with `builtin_hits`' gates (each a necessary condition for its
/// pass to find anything, so gating per element finds what gating the join does).
/// `ibans`: the registry Python handed over; without it, every IBAN pass is Python's.
pub fn scan(
    data: &[u8],
    index: usize,
    wanted: Wanted,
    ibans: Option<&Registry>,
    found: &mut Found,
) {
    let Counts {
        digits,
        dots,
        colons,
        at_signs,
    } = counts(data);
    let passes = &mut found.passes;
    if digits >= 9 && (wanted.has(CREDIT_CARD) || wanted.has(US_SSN) || wanted.has(PHONE)) {
        let check = |data: &[u8], candidate: &_| digit_led::check(data, candidate, wanted);
        confirmed(
            data,
            digit_led::find,
            check,
            index,
            &mut passes[DIGIT_LED_PASS],
        );
    }
    if digits >= 4 && wanted.has(IP_ADDRESS) && dots >= 3 {
        confirmed(
            data,
            forms::find_ipv4,
            forms::check_ipv4,
            index,
            &mut passes[IPV4_PASS],
        );
    }
    if digits >= 2 && wanted.has(IBAN) && has_iban_start(data) {
        let done = ibans.is_some_and(|registry| {
            iban::pass(registry, data, index, &mut passes[IBAN_PASS]) == Pass::Done
        });
        if !done {
            found.iban_pending.push(index);
        }
    }
    if digits >= 10 && wanted.has(PHONE) {
        let (find, check) = (forms::find_plus_phone, forms::check_plus_phone);
        confirmed(data, find, check, index, &mut passes[PLUS_PHONE_PASS]);
        let (find, check) = (forms::find_paren_phone, forms::check_paren_phone);
        confirmed(data, find, check, index, &mut passes[PAREN_PHONE_PASS]);
    }
    if at_signs > 0 && wanted.has(EMAIL) {
        email::emails(data, index, &mut passes[EMAIL_PASS]);
    }
    if digits >= 2 && wanted.has(CREDIT_CARD) && has_float_lead(data) {
        floats::float_cards(data, index, &mut passes[FLOAT_CARD_PASS]);
    }
    if wanted.has(SECRET) {
        let [pems, jwts, tokens] = &mut passes[PEM_PASS..=TOKEN_PASS] else {
            unreachable!("three secret passes");
        };
        secrets::secrets(data, index, pems, tokens, &mut found.open_key);
        if dots > 0 {
            secrets::jwts(data, index, jwts);
        }
    }
    if digits >= 1 && wanted.has(IP_ADDRESS) && colons >= 2 && has_ipv6_seed(data) {
        found.ipv6_pending.push(index);
    }
}

/// A digit right before `.`, `e` or `E`: what `floats::float_lead` starts from, so a float
/// card needs one. Pairs tested without branches (vector compares): token-like text (API
/// keys, ids) has letters `e` everywhere, and a search from each cost more than the pass.
fn has_float_lead(data: &[u8]) -> bool {
    let pair = |(&first, &second): (&u8, &u8)| {
        u8::from(first.wrapping_sub(b'0') < 10)
            & (u8::from(second == b'.') | u8::from(second == b'e') | u8::from(second == b'E'))
    };
    let next = data.get(1..).unwrap_or_default();
    data.iter()
        .zip(next)
        .fold(0, |seen, bytes| seen | pair(bytes))
        != 0
}

/// `b"AA00" in shape`: two capitals, then two digits. Windows tested without branches
/// (vector compares): a search from each capital cost token-like text more than the pass.
fn has_iban_start(data: &[u8]) -> bool {
    let capital = |byte: u8| u8::from(byte.wrapping_sub(b'A') < 26);
    let digit = |byte: u8| u8::from(byte.wrapping_sub(b'0') < 10);
    let shifted = |by: usize| data.get(by..).unwrap_or_default();
    data.iter()
        .zip(shifted(1))
        .zip(shifted(2))
        .zip(shifted(3))
        .fold(0, |seen, (((&first, &second), &third), &fourth)| {
            seen | (capital(first) & capital(second) & digit(third) & digit(fourth))
        })
        != 0
}

/// `_IPV6_SEED` (`:[0-9A-Fa-f]{0,4}:`) matches somewhere: `_ipv6s` has a candidate only then.
fn has_ipv6_seed(data: &[u8]) -> bool {
    data.iter().enumerate().any(|(colon, &byte)| {
        byte == b':' && {
            let hex = data[colon + 1..]
                .iter()
                .take(5)
                .take_while(|byte| byte.is_ascii_hexdigit())
                .count();
            hex <= 4 && data.get(colon + 1 + hex) == Some(&b':')
        }
    })
}

/// How many of each byte the gates look at.
struct Counts {
    digits: usize,
    dots: usize,
    colons: usize,
    at_signs: usize,
}

fn counts(data: &[u8]) -> Counts {
    let mut totals = Counts {
        digits: 0,
        dots: 0,
        colons: 0,
        at_signs: 0,
    };
    // Byte-wide counters over chunks that cannot overflow them: the loop vectorizes.
    for chunk in data.chunks(255) {
        let (mut digits, mut dots, mut colons, mut at_signs) = (0u8, 0u8, 0u8, 0u8);
        for &byte in chunk {
            digits += u8::from(byte.wrapping_sub(b'0') < 10);
            dots += u8::from(byte == b'.');
            colons += u8::from(byte == b':');
            at_signs += u8::from(byte == b'@');
        }
        totals.digits += usize::from(digits);
        totals.dots += usize::from(dots);
        totals.colons += usize::from(colons);
        totals.at_signs += usize::from(at_signs);
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::{has_float_lead, has_iban_start};

    /// Every text of up to `length` bytes from `alphabet`.
    fn texts(alphabet: &[u8], length: usize) -> Vec<Vec<u8>> {
        let mut all = vec![Vec::new()];
        let mut last = vec![Vec::new()];
        for _ in 0..length {
            last = last
                .iter()
                .flat_map(|text: &Vec<u8>| {
                    alphabet
                        .iter()
                        .map(move |&byte| [text.as_slice(), &[byte]].concat())
                })
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn the_gates_answer_as_a_plain_search() {
        for text in texts(b"AZa9.eE \x80", 5) {
            let iban = text.windows(4).any(|window| {
                window[0].is_ascii_uppercase()
                    && window[1].is_ascii_uppercase()
                    && window[2].is_ascii_digit()
                    && window[3].is_ascii_digit()
            });
            let float = text
                .windows(2)
                .any(|pair| pair[0].is_ascii_digit() && matches!(pair[1], b'.' | b'e' | b'E'));
            assert_eq!(has_iban_start(&text), iban, "{text:?}");
            assert_eq!(has_float_lead(&text), float, "{text:?}");
        }
        // Past a chunk's worth of bytes, at either end.
        let mut long = vec![b'x'; 200];
        long[197..].copy_from_slice(b"AB1");
        assert!(!has_iban_start(&long));
        long.push(b'2');
        assert!(has_iban_start(&long));
        long[196..].copy_from_slice(b"xxx9e");
        assert!(has_float_lead(&long));
    }
}
