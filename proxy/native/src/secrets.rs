//! `credentials.secret_hits`: PEM private keys, JWTs and vendor tokens (the `secret`
//! detector), with the same rules and in the same order (PEM blocks, then JWTs, then tokens,
//! each in position order).
//!
//! One search finds the places where a form may start (`anchors`), in order, and tries the
//! forms anchored there. Each form keeps its own resume position, as each Python pass
//! searches on from its own last match.

use crate::anchors;
use crate::bytes::find_byte;
use crate::scan::{Hit, SECRET};

const KEY: &[u8] = b"PRIVATE KEY";
const BEGIN: &[u8] = b"-----BEGIN ";
const END: &[u8] = b"-----END ";
const DASHES: &[u8] = b"-----";
const BLOCK: &[u8] = b" BLOCK-----";
const LABEL_WORDS: usize = 3;
const LABEL_WORD_LENGTH: usize = 9;
/// `eyJ` and five more: the shortest JSON object with a key, in base64url.
const JWT_SEGMENT: usize = 8;

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

/// The secrets of `data` (element `index`): PEM blocks into `pems`, JWTs into `jwts`,
/// vendor tokens into `tokens`.
///
/// `open` is the END marker a block left open by the elements before awaits (the NUL-joined
/// scan runs a block on past NULs, `credentials`): that block runs on through `data` up to
/// and including the marker, or covers it whole. A block `data` leaves open is left there.
pub fn secrets(
    data: &[u8],
    index: usize,
    pems: &mut Vec<(usize, Hit)>,
    jwts: &mut Vec<(usize, Hit)>,
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
        jwts,
        tokens,
        resume,
        open,
    };
    anchors::each(data, |anchor| scan.at_anchor(data, anchor));
}

/// Where each form's search goes on from.
#[derive(Default)]
struct Resume {
    pem: usize,
    /// The end of the last PEM block: where an END marker without a block open runs from.
    pem_after: usize,
    jwt: usize,
    token: usize,
}

/// One element's scan: where its hits go, and where each form's search goes on from.
struct Scan<'a> {
    index: usize,
    pems: &'a mut Vec<(usize, Hit)>,
    jwts: &'a mut Vec<(usize, Hit)>,
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
        if byte == b'J' && anchor >= 2 && start >= resume.jwt && &data[start..anchor] == b"ey" {
            if let Some(end) = jwt_end(data, start) {
                self.jwts.push(secret(self.index, start, end));
                resume.jwt = end;
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
    let Some((opens, start, label, end)) = marker(data, key) else {
        resume.pem = key + 1;
        return None;
    };
    let block = if opens {
        let closing = [END, &data[label..end - DASHES.len()], DASHES].concat();
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
/// the marker starts, where its label starts and where it ends; `None` if it is in none.
fn marker(data: &[u8], key: usize) -> Option<(bool, usize, usize, usize)> {
    let after = key + KEY.len();
    let end = if data[after..].starts_with(DASHES) {
        after + DASHES.len()
    } else if data[after..].starts_with(BLOCK) {
        after + BLOCK.len()
    } else {
        return None;
    };
    let mut label = key;
    for words in 0..=LABEL_WORDS {
        if data[..label].ends_with(BEGIN) {
            return Some((true, label - BEGIN.len(), label, end));
        }
        if data[..label].ends_with(END) {
            return Some((false, label - END.len(), label, end));
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

/// `_JWT` matching at `start` (where `eyJ` is): where it ends.
fn jwt_end(data: &[u8], start: usize) -> Option<usize> {
    let header = run_end(data, start, is_token);
    if header - start < JWT_SEGMENT || data.get(header) != Some(&b'.') {
        return None;
    }
    let payload = header + 1;
    if !data[payload..].starts_with(b"eyJ") {
        return None;
    }
    let payload_end = run_end(data, payload, is_token);
    if payload_end - payload < JWT_SEGMENT || data.get(payload_end) != Some(&b'.') {
        return None;
    }
    Some(run_end(data, payload_end + 1, is_token))
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
    use super::{secrets, FAMILIES, KEY};
    use crate::anchors;

    #[test]
    fn the_anchor_search_visits_every_prefix() {
        let mut prefixes = vec![(KEY.to_vec(), 2), (b"eyJ".to_vec(), 2)];
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
        secrets(data, 0, &mut pems, &mut jwts, &mut tokens, &mut None);
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
        let (mut pems, mut jwts, mut tokens, mut open) = (Vec::new(), Vec::new(), Vec::new(), None);
        for (index, data) in elements.iter().enumerate() {
            secrets(data, index, &mut pems, &mut jwts, &mut tokens, &mut open);
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
}
