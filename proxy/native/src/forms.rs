//! Dotted quads (`_IPV4`, `_check_ipv4`), E.164 numbers (`_PHONE_PLUS`, `_check_plus_phone`)
//! and `(ddd) ddd-dddd` (`_PHONE_PAREN`, `_check_paren_phone`).

use crate::bytes::{
    at, digit_at, digit_run, digits_at, find_byte, is_digit, isolated, with_country_code,
};
use crate::rules::{ipv4_ok, nanp_ok};
use crate::scan::{Candidate, Hit, IP_ADDRESS, PHONE};

/// `0\.0{1,3}\.0{1,3}\.0{1,3}`: the two middle groups must be whole digit runs of 1-3
/// (a longer run leaves no '.' to backtrack to), the last takes up to three digits.
pub fn find_ipv4(data: &[u8], from: usize) -> Option<Candidate<()>> {
    let middle = |start: usize| {
        let run = digit_run(data, start, 4);
        (1..=3).contains(&run) && at(data, start + run) == Some(b'.')
    };
    // A match starts with a digit and a '.': look at each '.' in turn, leftmost first.
    let mut dot = from + 1;
    while let Some(found) = find_byte(data, dot, |byte| byte == b'.') {
        dot = found + 1;
        let start = found - 1;
        if !is_digit(data[start]) {
            continue;
        }
        let second = start + 2;
        if !middle(second) {
            continue;
        }
        let third = second + digit_run(data, second, 3) + 1;
        if !middle(third) {
            continue;
        }
        let fourth = third + digit_run(data, third, 3) + 1;
        let last = digit_run(data, fourth, 3);
        if last >= 1 {
            return Some(Candidate {
                start,
                end: fourth + last,
                kind: (),
            });
        }
    }
    None
}

pub fn check_ipv4(data: &[u8], candidate: &Candidate<()>) -> Option<Hit> {
    let end = candidate.end;
    // The match starts at the last digit of the first octet: take up to two more.
    let mut start = candidate.start;
    while start > 0 && candidate.start - start < 2 && is_digit(data[start - 1]) {
        start -= 1;
    }
    (isolated(data, start, end, b".") && ipv4_ok(&data[start..end])).then_some(Hit {
        detector: IP_ADDRESS,
        start,
        end,
    })
}

/// `\+0{1,15}(?:[ .-]0{1,4}){0,6}`, greedy throughout.
pub fn find_plus_phone(data: &[u8], from: usize) -> Option<Candidate<usize>> {
    let mut start = from;
    while let Some(found) = find_byte(data, start, |byte| byte == b'+') {
        start = found;
        let first = digit_run(data, start + 1, 15);
        if first >= 1 {
            let mut end = start + 1 + first;
            let mut digits = first;
            for _ in 0..6 {
                if !matches!(at(data, end), Some(b' ' | b'.' | b'-')) || !digit_at(data, end + 1) {
                    break;
                }
                let group = digit_run(data, end + 1, 4);
                end += 1 + group;
                digits += group;
            }
            return Some(Candidate {
                start,
                end,
                kind: digits,
            });
        }
        start += 1;
    }
    None
}

/// The candidate's kind is its digit count.
pub fn check_plus_phone(data: &[u8], candidate: &Candidate<usize>) -> Option<Hit> {
    let (start, end) = (candidate.start, candidate.end);
    ((10..=15).contains(&candidate.kind)
        && data[start + 1] != b'0'
        && isolated(data, start, end, b"-. "))
    .then_some(Hit {
        detector: PHONE,
        start,
        end,
    })
}

/// `\(000\) ?000[-. ]0000`; the kind is where the exchange starts.
pub fn find_paren_phone(data: &[u8], from: usize) -> Option<Candidate<usize>> {
    let mut start = from;
    while let Some(found) = find_byte(data, start, |byte| byte == b'(') {
        start = found;
        if digits_at(data, start + 1, 3) && at(data, start + 4) == Some(b')') {
            let exchange = if at(data, start + 5) == Some(b' ') {
                start + 6
            } else {
                start + 5
            };
            if digits_at(data, exchange, 3)
                && matches!(at(data, exchange + 3), Some(b'-' | b'.' | b' '))
                && digits_at(data, exchange + 4, 4)
            {
                return Some(Candidate {
                    start,
                    end: exchange + 8,
                    kind: exchange,
                });
            }
        }
        start += 1;
    }
    None
}

pub fn check_paren_phone(data: &[u8], candidate: &Candidate<usize>) -> Option<Hit> {
    let end = candidate.end;
    let start = with_country_code(data, candidate.start);
    let (area, exchange) = (
        &data[candidate.start + 1..candidate.start + 4],
        &data[candidate.kind..],
    );
    (nanp_ok(area, &exchange[..3]) && isolated(data, start, end, b"-.")).then_some(Hit {
        detector: PHONE,
        start,
        end,
    })
}
