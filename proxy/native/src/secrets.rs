//! `credentials.secret_hits`: PEM private keys, JWTs and vendor tokens (the `secret`
//! detector), with the same rules and in the same order (PEM blocks, then JWTs, then tokens,
//! each in position order).
//!
//! One search finds the places where a key or a token may start (`anchors`), in order, and
//! tries the forms anchored there. Each form keeps its own resume position, as each Python
//! pass searches on from its own last match. JWTs are found from their first dot, as in
//! Python (`_jwts`), by a pass of their own (`jwts`).

use crate::anchors;
use crate::bytes::find_byte;
use crate::scan::{Hit, SECRET};

const KEY: &[u8] = b"PRIVATE KEY";
const BLOCK: &[u8] = b" BLOCK";

/// `_PEM`, `_SSH2`: a kind of markers, how its BEGIN and END markers open and what follows
/// the label (five bytes in both).
struct Kind {
    begin: &'static [u8],
    end: &'static [u8],
    dashes: &'static [u8],
}

const PEM: Kind = Kind {
    begin: b"-----BEGIN ",
    end: b"-----END ",
    dashes: b"-----",
};
const SSH2: Kind = Kind {
    begin: b"---- BEGIN ",
    end: b"---- END ",
    dashes: b" ----",
};
const DASHES: usize = 5;
const LABEL_WORDS: usize = 3;
const LABEL_WORD_LENGTH: usize = 9;
/// `_SEGMENT`: `{"":0}`, the shortest JSON object with a key, in base64url.
const JWT_SEGMENT: usize = 8;
/// The block `each_opening` checks at once.
const PAIRS: usize = 32;

/// `_TOKEN_BYTES`: what a token's run is made of.
#[inline]
fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

fn is_upper_or_digit(byte: u8) -> bool {
    byte.is_ascii_uppercase() || byte.is_ascii_digit()
}

fn is_alnum(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
}

fn is_alnum_or_underscore(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

fn is_alnum_or_dash(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-'
}

/// One of `credentials`' token patterns: a prefix of `prefix.len()` bytes (`?` stands for
/// one of `choices`), found from its `anchor` byte at `offset`, then a body of `min..=max`
/// bytes of `body`.
struct Family {
    anchor: u8,
    offset: usize,
    prefix: &'static [u8],
    choices: &'static [u8],
    body: fn(u8) -> bool,
    min: usize,
    max: usize,
}

const FAMILIES: [Family; 7] = [
    // AWS access key ids (AKIA, ASIA), Google API keys.
    Family {
        anchor: b'I',
        offset: 2,
        prefix: b"A?IA",
        choices: b"KS",
        body: is_upper_or_digit,
        min: 16,
        max: 16,
    },
    Family {
        anchor: b'I',
        offset: 1,
        prefix: b"AIza",
        choices: b"",
        body: is_token,
        min: 35,
        max: 35,
    },
    // GitHub classic and fine-grained tokens, Stripe live keys.
    Family {
        anchor: b'_',
        offset: 3,
        prefix: b"gh?_",
        choices: b"pousr",
        body: is_alnum,
        min: 36,
        max: 251,
    },
    Family {
        anchor: b'_',
        offset: 6,
        prefix: b"github_pat_",
        choices: b"",
        body: is_alnum_or_underscore,
        min: 22,
        max: 244,
    },
    Family {
        anchor: b'_',
        offset: 2,
        prefix: b"?k_live_",
        choices: b"rs",
        body: is_alnum,
        min: 20,
        max: 247,
    },
    // GitLab personal access tokens, Slack tokens.
    Family {
        anchor: b'-',
        offset: 5,
        prefix: b"glpat-",
        choices: b"",
        body: is_token,
        min: 20,
        max: 249,
    },
    Family {
        anchor: b'-',
        offset: 4,
        prefix: b"xox?-",
        choices: b"abposr",
        body: is_alnum_or_dash,
        min: 10,
        max: 250,
    },
];

/// The keys and tokens of `data` (element `index`): PEM blocks into `pems`, vendor tokens
/// into `tokens` (its JWTs are `jwts`').
///
/// `open` is the END marker a block left open by the elements before awaits (the NUL-joined
/// scan runs a block on past NULs, `credentials`): that block runs on through `data` up to
/// and including the marker, or covers it whole. A block `data` leaves open is left there.
pub fn secrets(
    data: &[u8],
    index: usize,
    pems: &mut Vec<(usize, Hit)>,
    tokens: &mut Vec<(usize, Hit)>,
    open: &mut Option<Vec<u8>>,
) {
    let mut resume = Resume::default();
    if let Some(closing) = open {
        let end = find(data, 0, closing).map(|found| found + closing.len());
        let covered = end.unwrap_or(data.len());
        if covered > 0 {
            pems.push(secret(index, 0, covered));
        }
        if end.is_some() {
            *open = None;
        }
        resume.pem = covered;
        resume.pem_after = covered;
    }
    let mut scan = Scan {
        index,
        pems,
        tokens,
        resume,
        open,
    };
    anchors::each(data, |anchor| scan.at_anchor(data, anchor));
}

/// Where each anchored form's search goes on from.
#[derive(Default)]
struct Resume {
    pem: usize,
    /// The end of the last PEM block: where an END marker without a block open runs from.
    pem_after: usize,
    token: usize,
}

/// One element's scan: where its hits go, and where each form's search goes on from.
struct Scan<'a> {
    index: usize,
    pems: &'a mut Vec<(usize, Hit)>,
    tokens: &'a mut Vec<(usize, Hit)>,
    resume: Resume,
    /// The END marker the block this element leaves open awaits.
    open: &'a mut Option<Vec<u8>>,
}

impl Scan<'_> {
    /// Try the forms anchored at `anchor` (not 0).
    fn at_anchor(&mut self, data: &[u8], anchor: usize) {
        let byte = data[anchor];
        let start = anchor.saturating_sub(2);
        let resume = &mut self.resume;
        if byte == b'I' && anchor >= 2 && start >= resume.pem && data[start..].starts_with(KEY) {
            if let Some((start, end)) = pem_block(data, start, resume, self.open) {
                self.pems.push(secret(self.index, start, end));
            }
        }
        for family in FAMILIES.iter().filter(|family| family.anchor == byte) {
            let Some(start) = anchor.checked_sub(family.offset) else {
                continue;
            };
            if start >= resume.token {
                if let Some(end) = token_end(data, start, family) {
                    self.tokens.push(secret(self.index, start, end));
                    resume.token = end;
                    return;
                }
            }
        }
    }
}

/// A hit of the `secret` detector in element `index`.
fn secret(index: usize, start: usize, end: usize) -> (usize, Hit) {
    let detector = SECRET;
    (
        index,
        Hit {
            detector,
            start,
            end,
        },
    )
}

/// `_pem_blocks` for the `PRIVATE KEY` at `key`: the block it opens or closes, if it is in a
/// marker; `resume` moves past it either way. A block with no END marker after it runs to the
/// end of `data`, and `open` takes the marker it awaits.
fn pem_block(
    data: &[u8],
    key: usize,
    resume: &mut Resume,
    open: &mut Option<Vec<u8>>,
) -> Option<(usize, usize)> {
    let Some((opens, start, label, end, kind)) = marker(data, key) else {
        resume.pem = key + 1;
        return None;
    };
    let block = if opens {
        let closing = [kind.end, &data[label..end - DASHES], kind.dashes].concat();
        match find(data, end, &closing) {
            Some(found) => (start, found + closing.len()),
            None => {
                *open = Some(closing);
                (start, data.len())
            }
        }
    } else {
        let line = data[..start]
            .iter()
            .rposition(|&byte| byte == 0)
            .map_or(0, |nul| nul + 1);
        (resume.pem_after.max(line), end)
    };
    resume.pem = block.1;
    resume.pem_after = block.1;
    Some(block)
}

/// `_pem_marker`: for the `PRIVATE KEY` at `key`, whether its marker opens a block, where
/// the marker starts, where its label starts, where it ends and its kind; `None` if it is in
/// none.
fn marker(data: &[u8], key: usize) -> Option<(bool, usize, usize, usize, &'static Kind)> {
    let mut after = key + KEY.len();
    let kind = if data[after..].starts_with(BLOCK) {
        after += BLOCK.len(); // PGP's, in PEM's kind only
        &PEM
    } else if data[after..].starts_with(SSH2.dashes) {
        &SSH2
    } else {
        &PEM
    };
    if !data[after..].starts_with(kind.dashes) {
        return None;
    }
    let end = after + DASHES;
    let mut label = key;
    for words in 0..=LABEL_WORDS {
        if data[..label].ends_with(kind.begin) {
            return Some((true, label - kind.begin.len(), label, end, kind));
        }
        if data[..label].ends_with(kind.end) {
            return Some((false, label - kind.end.len(), label, end, kind));
        }
        if words == LABEL_WORDS || label < 2 || data[label - 1] != b' ' {
            return None;
        }
        let mut word = label - 1;
        while word > 0
            && label - 1 - word <= LABEL_WORD_LENGTH
            && (data[word - 1].is_ascii_uppercase() || data[word - 1].is_ascii_digit())
        {
            word -= 1;
        }
        if !(1..=LABEL_WORD_LENGTH).contains(&(label - 1 - word)) {
            return None;
        }
        label = word;
    }
    None
}

/// The first index at or after `from` where `needle` (not empty) is in `data`.
fn find(data: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let mut at = from;
    while let Some(first) = find_byte(data, at, |byte| byte == needle[0]) {
        if data[first..].starts_with(needle) {
            return Some(first);
        }
        at = first + 1;
    }
    None
}

/// Where the run of `member` bytes from `from` ends.
fn run_end(data: &[u8], from: usize, member: fn(u8) -> bool) -> usize {
    from + data[from.min(data.len())..]
        .iter()
        .take_while(|&&byte| member(byte))
        .count()
}

/// `_jwts`: the JWTs of `data` (element `index`), in order, into `jwts`: from each opening
/// of a JSON object's segment that no JWT found before covers, its run of 8 base64url
/// characters or more, its padding, a dot and the rest of a token. What follows a run is the
/// same for every opening in it: it is read once a run (from each opening, a run of them
/// costs quadratic time). Python finds the same tokens from their dots, a C-level search;
/// here openings are rarer than dots (one every few dozen bytes in code).
pub fn jwts(data: &[u8], index: usize, jwts: &mut Vec<(usize, Hit)>) {
    let mut resume = 0;
    // The run the last opening read was in: where it ends, and where the token after it ends.
    let mut run: Option<(usize, Option<usize>)> = None;
    each_opening(data, |start| {
        if start < resume || !opens_object(&data[start..]) {
            return;
        }
        let (run_end, token_end) = match run {
            Some(known) if start < known.0 => known,
            _ => {
                let end = run_end(data, start, is_token);
                let dot = padded(data, end);
                let token_end = (data.get(dot) == Some(&b'.'))
                    .then(|| jwt_tail(data, dot))
                    .flatten();
                *run.insert((end, token_end))
            }
        };
        if let Some(end) = token_end.filter(|_| run_end - start >= JWT_SEGMENT) {
            jwts.push(secret(index, start, end));
            resume = end;
        }
    });
}

/// Call `visit` with each index of `data` where `e` comes before `y` or `w`, in order: where
/// a JSON object's segment may open (`{` then `"` or whitespace). Blocks of `PAIRS` bytes
/// without one are skipped with a check that vectorizes (32 bytes at a time measured fastest).
fn each_opening(data: &[u8], mut visit: impl FnMut(usize)) {
    let opens = |first: u8, second: u8| {
        u8::from(first == b'e') & (u8::from(second == b'y') | u8::from(second == b'w'))
    };
    let Some(seconds) = data.get(1..) else {
        return;
    };
    let (mut firsts, mut seconds) = (data.chunks_exact(PAIRS), seconds.chunks_exact(PAIRS));
    for (number, (first, second)) in firsts.by_ref().zip(seconds.by_ref()).enumerate() {
        let pairs = first.iter().zip(second);
        if pairs
            .clone()
            .fold(0, |seen, (&first, &second)| seen | opens(first, second))
            != 0
        {
            for (at, (&first, &second)) in pairs.enumerate() {
                if opens(first, second) != 0 {
                    visit(number * PAIRS + at);
                }
            }
        }
    }
    // The last pairs, fewer than `PAIRS`: a last byte begins none.
    let rest = data.len() - 1 - seconds.remainder().len();
    for (at, (&first, &second)) in data[rest..].iter().zip(&data[rest + 1..]).enumerate() {
        if opens(first, second) != 0 {
            visit(rest + at);
        }
    }
}

/// `_TAILS` matching after the dot at `dot`: where the token ends. A JWE's four parts (the
/// encrypted key maybe empty), else a JWS's payload (a JSON object's segment) and signature.
fn jwt_tail(data: &[u8], dot: usize) -> Option<usize> {
    let after = |at: usize| (data.get(at) == Some(&b'.')).then_some(at + 1);
    let jwe = (0..3).try_fold(part(data, dot + 1, 0)?, |end, _| part(data, after(end)?, 1));
    jwe.or_else(|| {
        let payload = dot + 1;
        let run_end = run_end(data, payload, is_token);
        if run_end - payload < JWT_SEGMENT || !opens_object(&data[payload..run_end]) {
            return None;
        }
        part(data, after(padded(data, run_end))?, 0)
    })
}

/// Where a part of at least `least` base64url characters from `from`, and its padding, ends.
fn part(data: &[u8], from: usize, least: usize) -> Option<usize> {
    let end = run_end(data, from, is_token);
    (end - from >= least).then(|| padded(data, end))
}

/// `end`, past up to two `=` (base64's padding).
fn padded(data: &[u8], end: usize) -> usize {
    end + data[end..]
        .iter()
        .take(2)
        .take_while(|&&byte| byte == b'=')
        .count()
}

/// `_OPENING`: whether the base64url characters `segment` opens with decode to `{`, any
/// JSON whitespace, then `"` (a JSON object's first key).
fn opens_object(segment: &[u8]) -> bool {
    let (mut bits, mut count, mut opened) = (0u32, 0u32, false);
    for &character in segment {
        let Some(value) = sextet(character) else {
            return false;
        };
        bits = bits << 6 | value;
        count += 6;
        if count < 8 {
            continue;
        }
        count -= 8;
        let byte = bits >> count;
        bits &= (1 << count) - 1;
        match byte {
            0x7B if !opened => opened = true, // {
            0x22 if opened => return true,    // "
            0x09 | 0x0A | 0x0D | 0x20 if opened => {}
            _ => return false,
        }
    }
    false
}

/// A base64url character's value.
fn sextet(character: u8) -> Option<u32> {
    let value = match character {
        b'A'..=b'Z' => character - b'A',
        b'a'..=b'z' => character - b'a' + 26,
        b'0'..=b'9' => character - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    };
    Some(u32::from(value))
}

/// Where the token of `family` starting at `start` ends, if one does: its prefix there,
/// nothing of its run before it, a body of its length, nothing of its run after it.
fn token_end(data: &[u8], start: usize, family: &Family) -> Option<usize> {
    let prefix = data.get(start..start + family.prefix.len())?;
    let fits = prefix.iter().zip(family.prefix).all(|(&byte, &wanted)| {
        byte == wanted || (wanted == b'?' && family.choices.contains(&byte))
    });
    if !fits || (start > 0 && is_token(data[start - 1])) {
        return None;
    }
    let body = start + family.prefix.len();
    let end = run_end(data, body, family.body);
    let alone = data.get(end).is_none_or(|&after| !is_token(after));
    (alone && (family.min..=family.max).contains(&(end - body))).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::{each_opening, jwts as jwts_of, opens_object, secrets, FAMILIES, KEY};
    use crate::anchors;

    #[test]
    fn the_anchor_search_visits_every_prefix() {
        let mut prefixes = vec![(KEY.to_vec(), 2)];
        for family in &FAMILIES {
            assert_eq!(family.prefix[family.offset], family.anchor);
            for &choice in family
                .choices
                .iter()
                .chain(family.choices.is_empty().then_some(&b'?'))
            {
                let prefix = family
                    .prefix
                    .iter()
                    .map(|&byte| if byte == b'?' { choice } else { byte });
                prefixes.push((prefix.collect(), family.offset));
            }
        }
        for (prefix, offset) in prefixes {
            let text = [&b" "[..], &prefix].concat();
            let mut visited = Vec::new();
            anchors::each(&text, |anchor| visited.push(anchor));
            assert!(visited.contains(&(1 + offset)), "{prefix:?}");
        }
    }

    fn found(data: &[u8]) -> Vec<Vec<&[u8]>> {
        let (mut pems, mut jwts, mut tokens) = (Vec::new(), Vec::new(), Vec::new());
        secrets(data, 0, &mut pems, &mut tokens, &mut None);
        jwts_of(data, 0, &mut jwts);
        [pems, jwts, tokens]
            .iter()
            .map(|hits| {
                hits.iter()
                    .map(|(_, hit)| &data[hit.start..hit.end])
                    .collect()
            })
            .collect()
    }

    #[test]
    fn finds_each_form_in_its_pass() {
        let key =
            b"-----BEGIN PGP PRIVATE KEY BLOCK-----\nabc\n-----END PGP PRIVATE KEY BLOCK-----";
        let jwt = b"eyJhbGci.eyJzdWIx.";
        let aws = b"AKIAIOSFODNN7EXAMPLE";
        let text = [&key[..], b" ", jwt, b" ", aws, b" AKIAIOSFODNN7EXAMPLE1"].concat();
        assert_eq!(
            found(&text),
            [vec![&key[..]], vec![&jwt[..]], vec![&aws[..]]]
        );
    }

    #[test]
    fn an_open_block_runs_to_its_end_marker_past_nuls_or_to_the_end() {
        let open = b"x -----BEGIN RSA PRIVATE KEY-----\nabc";
        assert_eq!(found(open)[0], [&open[2..]]);
        let joined = [&open[..], b"\x00abc\n-----END RSA PRIVATE KEY----- y"].concat();
        assert_eq!(found(&joined)[0], [&joined[2..joined.len() - 2]]);
    }

    /// The PEM hits of `elements` scanned one after the other, as `scan_all` scans them.
    fn blocks(elements: &[&[u8]]) -> Vec<(usize, usize, usize)> {
        let (mut pems, mut tokens, mut open) = (Vec::new(), Vec::new(), None);
        for (index, data) in elements.iter().enumerate() {
            secrets(data, index, &mut pems, &mut tokens, &mut open);
        }
        pems.iter()
            .map(|&(index, hit)| (index, hit.start, hit.end))
            .collect()
    }

    #[test]
    fn an_open_block_runs_on_into_the_elements_after_it() {
        let begin = b"a -----BEGIN EC PRIVATE KEY-----";
        let end = b"-----END EC PRIVATE KEY----- b -----END EC PRIVATE KEY-----";
        assert_eq!(
            blocks(&[
                begin,
                b"MHcCAQEE",
                b"",
                b"-----END RSA PRIVATE KEY-----",
                end,
                b"c"
            ]),
            [(0, 2, 32), (1, 0, 8), (3, 0, 29), (4, 0, 28), (4, 28, 59)]
        );
        assert_eq!(blocks(&[begin, b"x", b""]), [(0, 2, 32), (1, 0, 1)]);
    }

    #[test]
    fn ssh2_markers_open_and_close_blocks_of_their_kind() {
        let key = b"---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\nabc\n---- END SSH2 ENCRYPTED PRIVATE KEY ----";
        assert_eq!(found(&[&key[..], b" x"].concat())[0], [&key[..]]);
        let mixed = b"---- BEGIN SSH2 PRIVATE KEY ----\nabc\n-----END SSH2 PRIVATE KEY----- x";
        assert_eq!(found(mixed)[0], [&mixed[..]]);
        assert!(found(b"---- BEGIN SSH2 PRIVATE KEY-----")[0].is_empty());
    }

    #[test]
    fn markers_need_their_dashes_and_short_label_words() {
        for text in [
            &b"-----BEGIN RSA PRIVATE KEY----"[..],
            b"-----BEGIN A B C D PRIVATE KEY-----",
            b"-----BEGIN TOOLONGWORD PRIVATE KEY-----",
            b"-----BEGIN rsa PRIVATE KEY-----",
            b"PRIVATE KEY-----",
        ] {
            assert!(found(text)[0].is_empty());
        }
    }

    #[test]
    fn tokens_stand_alone_within_their_bounds() {
        let long = [&b"ghp_"[..], &[b'a'; 251]].concat();
        assert_eq!(found(&long)[2], [&long[..]]);
        let longer = [&long[..], b"a"].concat();
        assert!(found(&longer)[2].is_empty());
        for glued in [
            &b"xAKIAIOSFODNN7EXAMPLE"[..],
            b"AKIAIOSFODNN7EXAMPLE-",
            b"sk_live_abc",
        ] {
            assert!(found(glued)[2].is_empty());
        }
    }

    #[test]
    fn a_segment_opens_with_a_brace_json_whitespace_and_a_quote() {
        // {"a  { "a  {\n  "a  {\r\n\t"a  {\t"
        for opening in [&b"eyJh"[..], b"eyAiYQ", b"ewogICJh", b"ew0KCSJh", b"ewki"] {
            assert!(opens_object(opening), "{opening:?}");
        }
        // {}  { }  {a  [ "  { (cut short)  {\n  (no quote yet)  {\x0b"
        for other in [
            &b"e30"[..],
            b"eyB9",
            b"e2Ei",
            b"WyAi",
            b"ey",
            b"ewo",
            b"ewsi",
        ] {
            assert!(!opens_object(other), "{other:?}");
        }
    }

    #[test]
    fn jwts_may_be_padded_or_five_parts() {
        let padded = b"eyJhbGci=.eyJzdWIxMg==.c2ln=";
        assert_eq!(
            found(&[&b"t "[..], padded, b" end"].concat())[1],
            [&padded[..]]
        );
        assert!(found(b"eyJhbGci===.eyJzdWIx.sig")[1].is_empty());
        let jwe = b"eyJhbGci..aXY.Y2lwaGVy.dGFn";
        assert_eq!(found(&[&b"x"[..], jwe, b"."].concat())[1], [&jwe[..]]);
        assert!(found(b"eyJhbGci.a..b.c eyJhbGci.a.b.c")[1].is_empty());
    }

    #[test]
    fn every_e_before_y_or_w_is_visited_once_in_order_whatever_the_length() {
        for length in 0..140 {
            let data: Vec<u8> = (0..length).map(|at| b"eyewe"[at % 5]).collect();
            let mut visited = Vec::new();
            each_opening(&data, |at| visited.push(at));
            let expected: Vec<usize> = (0..length.saturating_sub(1))
                .filter(|&at| data[at] == b'e' && matches!(data[at + 1], b'y' | b'w'))
                .collect();
            assert_eq!(visited, expected, "{length}");
        }
    }
}
