//! Where the PEM keys and vendor tokens of the `secret` detector may start, found fast: the
//! bytes every form's literal holds at a fixed place (anchors: `I` of `PRIVATE KEY`, `AKIA`,
//! `ASIA` and `AIza`; `_` and `-` of the other prefixes), each with the byte right before it.
//! (JWTs are found from their dots: `secrets::find_jwts`.)
//!
//! Regions of 256 bytes, then blocks of 16, without an anchor (most of them, in most text;
//! a short tensor element is one region) are skipped with a check that vectorizes. In code
//! and markdown `_` and `-` are everywhere: a second check, still without branches, skips
//! the blocks where none comes after a byte that may come right before it in a form
//! (`BEFORE`); only the rest is walked byte by byte.

const BLOCK: usize = 16;
const REGION: usize = 256;

/// Each anchor's bit: `I`, `_`, `-`.
const ANCHOR: [u8; 256] = table(&[(b"I", 1), (b"_", 4), (b"-", 8)]);
/// The bits of the anchors each byte comes right before in some form: `R` of `PRIVATE`, `K`,
/// `S` and `A` of `AKIA`, `ASIA`, `AIza`; the letter before the `_` of `gh?_`, `github_` and
/// `?k_`; the letter before the `-` of `glpat-` and `xox?-`.
const BEFORE: [u8; 256] = table(&[(b"RKSA", 1), (b"pousrbk", 4), (b"tabposr", 8)]);

/// A table of bits by byte: the bytes of each `(bytes, bit)` have `bit` set.
const fn table(bits: &[(&[u8], u8)]) -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut entry = 0;
    while entry < bits.len() {
        let (bytes, bit) = bits[entry];
        let mut at = 0;
        while at < bytes.len() {
            table[bytes[at] as usize] |= bit;
            at += 1;
        }
        entry += 1;
    }
    table
}

/// Call `visit` with each index of `data` where an anchor comes after a byte that may come
/// right before it in a form, in order (never 0: every anchor has a byte of its form before).
pub fn each(data: &[u8], mut visit: impl FnMut(usize)) {
    for (number, region) in data.chunks(REGION).enumerate() {
        if !has_anchor(region) {
            continue;
        }
        for (block_number, block) in region.chunks(BLOCK).enumerate() {
            let first = number * REGION + block_number * BLOCK;
            let (from, to) = (first.max(1), first + block.len());
            if !has_anchor(block)
                || from >= to
                || !has_pair(&data[from - 1..to - 1], &data[from..to])
            {
                continue;
            }
            for anchor in from..to {
                if BEFORE[usize::from(data[anchor - 1])] & ANCHOR[usize::from(data[anchor])] != 0 {
                    visit(anchor);
                }
            }
        }
    }
}

/// Whether `block` holds an anchor, without branches.
fn has_anchor(block: &[u8]) -> bool {
    let anchor =
        |byte: u8| u8::from(byte == b'I') | u8::from(byte == b'_') | u8::from(byte == b'-');
    block.iter().fold(0, |seen, &byte| seen | anchor(byte)) != 0
}

/// Whether some `I` of `bytes`, or some `_` or `-` after a byte `BEFORE` has its bit
/// for, is there (`before[i]` is the byte before `bytes[i]`), without branches.
fn has_pair(before: &[u8], bytes: &[u8]) -> bool {
    let pair = |before: u8, byte: u8| {
        let either = u8::from(before == b'p')
            | u8::from(before == b'o')
            | u8::from(before == b's')
            | u8::from(before == b'r')
            | u8::from(before == b'b');
        let underscore = either | u8::from(before == b'u') | u8::from(before == b'k');
        let dash = either | u8::from(before == b't') | u8::from(before == b'a');
        u8::from(byte == b'I')
            | (u8::from(byte == b'_') & underscore)
            | (u8::from(byte == b'-') & dash)
    };
    before
        .iter()
        .zip(bytes)
        .fold(0, |seen, (&before, &byte)| seen | pair(before, byte))
        != 0
}

#[cfg(test)]
mod tests {
    use super::{each, has_anchor, has_pair, ANCHOR, BEFORE};

    #[test]
    fn the_block_checks_pass_every_pair_the_tables_accept() {
        for before in 0..=u8::MAX {
            for byte in 0..=u8::MAX {
                if BEFORE[usize::from(before)] & ANCHOR[usize::from(byte)] != 0 {
                    assert!(has_anchor(&[byte]) && has_pair(&[before], &[byte]));
                }
            }
        }
    }

    #[test]
    fn visits_the_pairs_in_order_across_blocks() {
        let mut data = vec![b' '; 40];
        for (at, pair) in [
            (0, b"KI"),
            (13, b"p_"),
            (15, b"t-"),
            (31, b"RI"),
            (38, b"x_"),
        ] {
            data[at..at + 2].copy_from_slice(pair);
        }
        let mut visited = Vec::new();
        each(&data, |anchor| visited.push(anchor));
        assert_eq!(visited, [1, 14, 16, 32]); // 16: its byte before is in the block before
        each(b"J", |_| panic!("nothing comes before it"));
    }
}
