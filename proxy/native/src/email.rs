//! `patterns._emails`: every '@' with local-part characters right before it and a domain
//! (`_EMAIL_DOMAIN`) right after.

use crate::bytes::isolated;
use crate::scan::{Hit, EMAIL};

fn is_local(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'%' | b'+' | b'-')
}

pub fn emails(data: &[u8], index: usize, hits: &mut Vec<(usize, Hit)>) {
    for at in data
        .iter()
        .enumerate()
        .filter(|&(_, &byte)| byte == b'@')
        .map(|(index, _)| index)
    {
        // The local part: the run of local-part characters right before the '@' (64 at most).
        let window = &data[at.saturating_sub(64)..at];
        let local = window
            .iter()
            .rev()
            .take_while(|&&byte| is_local(byte))
            .count();
        if local == 0 {
            continue;
        }
        let Some(end) = domain_end(data, at + 1) else {
            continue;
        };
        let mut start = at - local;
        while start < at && data[start] == b'.' {
            start += 1; // a local part cannot start with '.'
        }
        if start < at && isolated(data, start, end, b"") {
            hits.push((
                index,
                Hit {
                    detector: EMAIL,
                    start,
                    end,
                },
            ));
        }
    }
}

/// Where `(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}` matching at
/// `from` ends, as Python's backtracking finds it. A label is followed by '.', which no label
/// character is, so each label is its whole run of label characters: the only choice left is
/// how many labels, and the regex tries the most first, then fewer, until a top-level domain
/// (as many letters as there are, up to 63, at least two) follows.
fn domain_end(data: &[u8], from: usize) -> Option<usize> {
    let mut label_ends: Vec<usize> = Vec::new(); // where each label's '.' ends
    let mut label = from;
    loop {
        let run = data[label.min(data.len())..]
            .iter()
            .take_while(|&&byte| byte.is_ascii_alphanumeric() || byte == b'-')
            .count();
        let fits = (1..=63).contains(&run)
            && data[label].is_ascii_alphanumeric()
            && data[label + run - 1].is_ascii_alphanumeric()
            && data.get(label + run) == Some(&b'.');
        if !fits {
            break;
        }
        label += run + 1;
        label_ends.push(label);
    }
    label_ends.iter().rev().find_map(|&top| {
        let letters = data[top..]
            .iter()
            .take(63)
            .take_while(|byte| byte.is_ascii_alphabetic())
            .count();
        (letters >= 2).then_some(top + letters)
    })
}
