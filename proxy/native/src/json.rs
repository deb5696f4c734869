//! JSON objects in BYTES elements, read and scanned in one pass: what
//! `labelgate.classify.jsonpaths.KeyNames.shaped` and the classifier's leaf scan give, for
//! the elements this reader can vouch for.
//!
//! The reader is never more permissive than Python's `json` (strict mode, the C scanner):
//! whatever it is not sure of (invalid UTF-8, a syntax error, trailing text, a duplicate key,
//! a control character in a string, a lone surrogate, `NaN`/`Infinity`, `-0`, a long integer,
//! nesting Python's walk refuses, a leaf with a backslash once unescaped, a scan that leaves a
//! pass to Python) gives `None`, and Python reads the element the exact way. Bailing out is
//! always safe; accepting what Python refuses would not be.
//!
//! An element read gives its *signature*, bytes naming its shape as `jsonpaths._signature`'s
//! tokens do (structure, keys after unescaping, array lengths, leaf types, in document
//! order), and the hits of the built-in detectors in its scanned leaves (strings as their
//! UTF-8 text, integers as written), leaf by leaf in the order `DetectorSet.scan_each` gives.
//!
//! A reader made by `Reader::keeping_values` also records every leaf's value (`Value`), for
//! masking (`json_mask`); it reads exactly what the default reader reads, except that a
//! string leaf with a backslash once unescaped is kept (only the scan needs it refused).

use std::ops::Range;

use crate::iban::Registry;
use crate::scan::{self, Found, Wanted};

/// `jsonpaths.MAX_DEPTH`: a container at this depth (the root is at 0) holding anything is
/// too deep for Python's walk.
pub const MAX_DEPTH: usize = 64;
/// Integers with more digits are left to Python: `int()` refuses more than
/// `sys.get_int_max_str_digits()` digits (4300 by default, and a limit is never below 640).
pub const MAX_INT_DIGITS: usize = 640;

// Signature tokens. An object is `{`, per member `:` + the key's length (u32, little-endian)
// + the key's UTF-8 + the member's value, then `}`; an array is `[`, its items, `]`; a leaf is
// its type. Every value starts with a token no key marker or end shares, so the encoding is a
// prefix code: two documents have the same signature exactly when their tokens are equal.
pub const OBJECT: u8 = b'{';
pub const OBJECT_END: u8 = b'}';
pub const ARRAY: u8 = b'[';
pub const ARRAY_END: u8 = b']';
pub const KEY: u8 = b':';
pub const STRING: u8 = b's';
pub const INTEGER: u8 = b'i';
pub const BOOLEAN: u8 = b'b';
pub const NULL: u8 = b'n';

/// A detector's hit in a scanned leaf: `(leaf ordinal, detector, start, end)`, offsets into
/// the leaf's text.
pub type LeafHit = (usize, u8, usize, usize);

/// Where a scanned leaf's text lies: in the element (no escapes), or in `Reader::decoded`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Text {
    Element(usize, usize),
    Decoded(usize, usize),
}

/// A leaf's value, as a reader keeping values records it (see `Reader::keeping_values`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// A string: its text, unescaped (`Reader::text`).
    String(Text),
    /// An integer: where it is written in the element.
    Integer(usize, usize),
    Boolean(bool),
    Null,
}

/// Reads elements one after the other, reusing its buffers.
#[derive(Default)]
pub struct Reader {
    signature: Vec<u8>,
    /// The unescaped texts of string leaves that had escapes.
    decoded: Vec<u8>,
    /// The scanned leaves (strings and integers), in document order.
    leaves: Vec<Text>,
    /// The keys of the objects being read, as ranges of `signature`.
    keys: Vec<Range<usize>>,
    found: Found,
    /// Every leaf's value in document order, when `keep_values`.
    values: Vec<Value>,
    keep_values: bool,
}

impl Reader {
    /// The hits of an element holding a JSON object (starting with `{`), scanned for
    /// `wanted` (its signature is then `signature()`); `None` when Python must read it (see
    /// the module comment).
    pub fn read(
        &mut self,
        data: &[u8],
        wanted: Wanted,
        ibans: Option<&Registry>,
    ) -> Option<Vec<LeafHit>> {
        self.parse(data)?;
        self.scan(data, wanted, ibans)
    }

    /// The signature of the element last read.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// A reader for masking: `parse_values` records every leaf's value.
    pub fn keeping_values() -> Self {
        Self {
            keep_values: true,
            ..Self::default()
        }
    }

    /// Every leaf's value of the JSON object in `data` (starting with `{`), in document order
    /// (its signature is then `signature()`); `None` when Python must read it. Needs a reader
    /// made by `keeping_values`. Nothing is scanned.
    pub fn parse_values(&mut self, data: &[u8]) -> Option<&[Value]> {
        if !self.keep_values {
            return None;
        }
        self.parse(data)?;
        Some(&self.values)
    }

    /// Every leaf's value of the element last read by `parse_values`.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The UTF-8 text of a string leaf of `data`, the element last read.
    pub fn text<'a>(&'a self, data: &'a [u8], text: Text) -> &'a [u8] {
        match text {
            Text::Element(start, end) => &data[start..end],
            Text::Decoded(start, end) => &self.decoded[start..end],
        }
    }

    /// Parse `data` into `signature` and `leaves`.
    fn parse(&mut self, data: &[u8]) -> Option<()> {
        self.signature.clear();
        self.decoded.clear();
        self.leaves.clear();
        self.keys.clear();
        self.values.clear();
        // Python decodes the whole element first: one bad byte anywhere and it is no object.
        if data.first() != Some(&b'{') || std::str::from_utf8(data).is_err() {
            return None;
        }
        let mut at = 0;
        self.object(data, &mut at, 0)?;
        (skip_space(data, at) == data.len()).then_some(())
    }

    fn value(&mut self, data: &[u8], at: &mut usize, depth: usize) -> Option<()> {
        match *data.get(*at)? {
            b'{' => self.object(data, at, depth),
            b'[' => self.array(data, at, depth),
            b'"' => {
                *at += 1;
                let text = string(data, at, &mut self.decoded)?;
                if let Text::Decoded(start, end) = text {
                    // Only Python knows what such a text hides (`_hidden_by_escapes`).
                    if !self.keep_values && self.decoded[start..end].contains(&b'\\') {
                        return None;
                    }
                }
                if self.keep_values {
                    self.values.push(Value::String(text));
                }
                self.leaves.push(text);
                self.signature.push(STRING);
                Some(())
            }
            b'-' | b'0'..=b'9' => self.number(data, at),
            b't' => self.literal(data, at, b"true", BOOLEAN, Value::Boolean(true)),
            b'f' => self.literal(data, at, b"false", BOOLEAN, Value::Boolean(false)),
            b'n' => self.literal(data, at, b"null", NULL, Value::Null),
            // NaN, Infinity (Python takes them) and everything else (Python refuses).
            _ => None,
        }
    }

    /// The object at `*at` (its `{`), a container at `depth`.
    fn object(&mut self, data: &[u8], at: &mut usize, depth: usize) -> Option<()> {
        self.signature.push(OBJECT);
        *at = skip_space(data, *at + 1);
        if data.get(*at) == Some(&b'}') {
            *at += 1;
            self.signature.push(OBJECT_END);
            return Some(());
        }
        if depth >= MAX_DEPTH {
            return None;
        }
        let first_key = self.keys.len();
        loop {
            if data.get(*at) != Some(&b'"') {
                return None;
            }
            *at += 1;
            self.key(data, at)?;
            *at = skip_space(data, *at);
            if data.get(*at) != Some(&b':') {
                return None;
            }
            *at = skip_space(data, *at + 1);
            self.value(data, at, depth + 1)?;
            *at = skip_space(data, *at);
            match data.get(*at) {
                Some(b',') => *at = skip_space(data, *at + 1),
                Some(b'}') => break,
                _ => return None,
            }
        }
        *at += 1;
        if has_duplicates(&self.signature, &self.keys[first_key..]) {
            return None;
        }
        self.keys.truncate(first_key);
        self.signature.push(OBJECT_END);
        Some(())
    }

    /// A member's key (after its opening quote), unescaped straight into the signature.
    fn key(&mut self, data: &[u8], at: &mut usize) -> Option<()> {
        self.signature.push(KEY);
        let length_at = self.signature.len();
        self.signature.extend_from_slice(&[0; 4]);
        let start = self.signature.len();
        if let Text::Element(from, to) = string(data, at, &mut self.signature)? {
            self.signature.extend_from_slice(&data[from..to]);
        }
        let end = self.signature.len();
        let length = u32::try_from(end - start).ok()?;
        self.signature[length_at..start].copy_from_slice(&length.to_le_bytes());
        self.keys.push(start..end);
        Some(())
    }

    /// The array at `*at` (its `[`), a container at `depth`.
    fn array(&mut self, data: &[u8], at: &mut usize, depth: usize) -> Option<()> {
        self.signature.push(ARRAY);
        *at = skip_space(data, *at + 1);
        if data.get(*at) == Some(&b']') {
            *at += 1;
            self.signature.push(ARRAY_END);
            return Some(());
        }
        if depth >= MAX_DEPTH {
            return None;
        }
        loop {
            self.value(data, at, depth + 1)?;
            *at = skip_space(data, *at);
            match data.get(*at) {
                Some(b',') => *at = skip_space(data, *at + 1),
                Some(b']') => break,
                _ => return None,
            }
        }
        *at += 1;
        self.signature.push(ARRAY_END);
        Some(())
    }

    /// `-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?`, as Python's scanner reads numbers. Where
    /// Python would stop short of a malformed tail (`1.`, `1e+`) what follows is no delimiter,
    /// so Python fails there too: failing at once gives the same answer.
    fn number(&mut self, data: &[u8], at: &mut usize) -> Option<()> {
        let start = *at;
        if data[*at] == b'-' {
            *at += 1;
        }
        let digits_from = *at;
        match data.get(*at) {
            Some(b'0') => *at += 1,
            Some(b'1'..=b'9') => *at = digits_end(data, *at + 1),
            _ => return None, // `-Infinity` included
        }
        let digits = *at - digits_from;
        let mut float = false;
        if data.get(*at) == Some(&b'.') {
            let end = digits_end(data, *at + 1);
            if end == *at + 1 {
                return None;
            }
            *at = end;
            float = true;
        }
        if matches!(data.get(*at), Some(b'e' | b'E')) {
            let mut from = *at + 1;
            if matches!(data.get(from), Some(b'+' | b'-')) {
                from += 1;
            }
            let end = digits_end(data, from);
            if end == from {
                return None;
            }
            *at = end;
            float = true;
        }
        if float {
            // Python scans a float as the text a JSON client reads back (`4111111111111111.0`
            // is the card's digits): its call, so the element is left to it.
            return None;
        }
        // `-0` is the int 0, scanned as "0": not the raw text, so Python's call.
        if digits > MAX_INT_DIGITS || &data[start..*at] == b"-0" {
            return None;
        }
        self.signature.push(INTEGER);
        self.leaves.push(Text::Element(start, *at));
        if self.keep_values {
            self.values.push(Value::Integer(start, *at));
        }
        Some(())
    }

    fn literal(
        &mut self,
        data: &[u8],
        at: &mut usize,
        word: &[u8],
        token: u8,
        value: Value,
    ) -> Option<()> {
        if data.get(*at..*at + word.len()) != Some(word) {
            return None;
        }
        *at += word.len();
        self.signature.push(token);
        if self.keep_values {
            self.values.push(value);
        }
        Some(())
    }

    /// The built-ins of `wanted` over each scanned leaf; `None` if Python must run a pass.
    fn scan(
        &mut self,
        data: &[u8],
        wanted: Wanted,
        ibans: Option<&Registry>,
    ) -> Option<Vec<LeafHit>> {
        let found = &mut self.found;
        for pass in &mut found.passes {
            pass.clear();
        }
        found.iban_pending.clear();
        found.ipv6_pending.clear();
        if wanted.0 == 0 {
            return Some(Vec::new());
        }
        for (ordinal, text) in self.leaves.iter().enumerate() {
            let text = match *text {
                Text::Element(start, end) => &data[start..end],
                Text::Decoded(start, end) => &self.decoded[start..end],
            };
            scan::scan(text, ordinal, wanted, ibans, found);
            if !found.iban_pending.is_empty() || !found.ipv6_pending.is_empty() {
                return None;
            }
        }
        // Pass by pass, then leaf by leaf; a stable sort by leaf keeps each leaf's hits in
        // pass order, as `scan_each` hands them to each text.
        let mut hits: Vec<LeafHit> = found
            .passes
            .iter()
            .flatten()
            .map(|&(ordinal, hit)| (ordinal, hit.detector, hit.start, hit.end))
            .collect();
        hits.sort_by_key(|hit| hit.0);
        Some(hits)
    }
}

fn skip_space(data: &[u8], mut at: usize) -> usize {
    while matches!(data.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

fn digits_end(data: &[u8], mut at: usize) -> usize {
    while data.get(at).is_some_and(u8::is_ascii_digit) {
        at += 1;
    }
    at
}

/// The string whose opening quote is just before `*at`, up to its closing quote: where its
/// text lies in `data` when it has no escape, else unescaped onto the end of `out`.
fn string(data: &[u8], at: &mut usize, out: &mut Vec<u8>) -> Option<Text> {
    let start = *at;
    loop {
        match *data.get(*at)? {
            b'"' => {
                *at += 1;
                return Some(Text::Element(start, *at - 1));
            }
            b'\\' => break,
            0..=0x1f => return None, // strict mode refuses control characters
            _ => *at += 1,
        }
    }
    let from = out.len();
    out.extend_from_slice(&data[start..*at]);
    loop {
        let byte = *data.get(*at)?;
        *at += 1;
        match byte {
            b'"' => return Some(Text::Decoded(from, out.len())),
            b'\\' => {
                let escape = *data.get(*at)?;
                *at += 1;
                let plain = match escape {
                    b'"' | b'\\' | b'/' => escape,
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => {
                        let mut utf8 = [0; 4];
                        out.extend_from_slice(
                            code_point(data, at)?.encode_utf8(&mut utf8).as_bytes(),
                        );
                        continue;
                    }
                    _ => return None,
                };
                out.push(plain);
            }
            0..=0x1f => return None,
            _ => out.push(byte),
        }
    }
}

/// The character of a `\u` escape (after the `u`); a surrogate pair is one character, and a
/// lone surrogate (Python keeps it; it has no UTF-8 form) is `None`.
fn code_point(data: &[u8], at: &mut usize) -> Option<char> {
    let first = hex4(data, at)?;
    match first {
        0xD800..=0xDBFF => {
            if data.get(*at..*at + 2) != Some(b"\\u") {
                return None;
            }
            *at += 2;
            let second = hex4(data, at)?;
            if !(0xDC00..=0xDFFF).contains(&second) {
                return None;
            }
            char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
        }
        _ => char::from_u32(first), // None for a lone low surrogate
    }
}

fn hex4(data: &[u8], at: &mut usize) -> Option<u32> {
    let digits = data.get(*at..*at + 4)?;
    let mut value = 0;
    for &digit in digits {
        value = value * 16 + char::from(digit).to_digit(16)?;
    }
    *at += 4;
    Some(value)
}

/// Whether two of an object's keys (ranges of `signature`) are equal.
fn has_duplicates(signature: &[u8], keys: &[Range<usize>]) -> bool {
    if keys.len() <= 16 {
        return keys.iter().enumerate().any(|(index, key)| {
            keys[..index]
                .iter()
                .any(|other| signature[other.clone()] == signature[key.clone()])
        });
    }
    let mut sorted: Vec<&[u8]> = keys.iter().map(|key| &signature[key.clone()]).collect();
    sorted.sort_unstable();
    sorted.windows(2).any(|pair| pair[0] == pair[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Option<(Vec<u8>, Vec<String>)> {
        parsed_bytes(text.as_bytes())
    }

    fn parsed_bytes(data: &[u8]) -> Option<(Vec<u8>, Vec<String>)> {
        let mut reader = Reader::default();
        reader.parse(data)?;
        let leaves = reader
            .leaves
            .iter()
            .map(|text| {
                let bytes = match *text {
                    Text::Element(start, end) => &data[start..end],
                    Text::Decoded(start, end) => &reader.decoded[start..end],
                };
                String::from_utf8(bytes.to_vec()).unwrap()
            })
            .collect();
        Some((reader.signature.clone(), leaves))
    }

    fn signature(text: &str) -> Vec<u8> {
        parsed(text).expect("valid").0
    }

    fn leaves(text: &str) -> Vec<String> {
        parsed(text).expect("valid").1
    }

    fn key(name: &str) -> Vec<u8> {
        let mut token = vec![KEY];
        token.extend_from_slice(&u32::try_from(name.len()).unwrap().to_le_bytes());
        token.extend_from_slice(name.as_bytes());
        token
    }

    #[test]
    fn signatures_name_structure_keys_and_leaf_types() {
        assert_eq!(signature("{}"), b"{}");
        let mut expected = vec![OBJECT];
        expected.extend(key("a"));
        expected.extend(b"[sibn{}[]]");
        expected.extend(key("\u{e9}"));
        expected.push(INTEGER);
        expected.push(OBJECT_END);
        assert_eq!(
            signature(r#"{"a": ["x", 1, true, null, {}, []], "\u00e9": -2}"#),
            expected
        );
        assert_eq!(signature(r#"{"a":false}"#), signature(r#"{"a":true}"#));
        assert_ne!(signature(r#"{"a":1}"#), signature(r#"{"a":"1"}"#));
        assert_ne!(signature(r#"{"a":[1]}"#), signature(r#"{"a":[1,2]}"#));
        assert_ne!(signature(r#"{"ab":1}"#), signature(r#"{"a":1}"#));
    }

    #[test]
    fn leaves_are_strings_unescaped_and_integers_as_written() {
        assert_eq!(
            leaves(r#"{"a": "x\"y\n\/", "b": true, "c": -12, "d": [0, "\ud83d\ude00", "\u00e9"]}"#),
            ["x\"y\n/", "-12", "0", "\u{1f600}", "\u{e9}"]
        );
        assert_eq!(leaves(r#"{"a":true,"b":null}"#), Vec::<String>::new());
        for float in ["1e5", "2E-3", "1.5", "4111111111111111.0"] {
            assert!(parsed(&format!("{{\"c\":{float}}}")).is_none(), "{float}");
        }
    }

    #[test]
    fn whitespace_is_only_json_whitespace() {
        assert!(parsed("{ \"a\" :\t[ 1 ,\r\n2 ] } \n\r\t").is_some());
        assert!(parsed("{\"a\":1}\x0b").is_none());
        assert!(parsed("{\"a\":\x0c1}").is_none());
        assert!(parsed("{\"a\":1}\u{a0}").is_none());
        assert!(parsed(" {\"a\":1}").is_none()); // Python's call: only "{"-led elements here
    }

    #[test]
    fn syntax_errors_are_refused() {
        for text in [
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{,}",
            "{\"a\":1 \"b\":2}",
            "{a:1}",
            "{'a':1}",
            "{\"a\":[1,]}",
            "{\"a\":[1 2]}",
            "{\"a\":1}}",
            "{\"a\":1}x",
            "{\"a\":tru}",
            "{\"a\":nul}",
            "{\"a\":True}",
            "{\"a\":\"x}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12g4\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":1e}",
            "{\"a\":1e+}",
            "{\"a\":-}",
            "{\"a\":+1}",
            "{\"a\":1.e5}",
            "{\"a\":0x1}",
            "{\"a\":1}{}",
        ] {
            assert!(parsed(text).is_none(), "{text}");
        }
    }

    #[test]
    fn what_python_takes_but_only_python_decides_is_refused() {
        for text in [
            "{\"a\":NaN}",
            "{\"a\":Infinity}",
            "{\"a\":-Infinity}",
            "{\"a\":-0}",
            "{\"a\":\"\\ud800\"}",
            "{\"a\":\"\\udc00\"}",
            "{\"a\":\"\\ud800x\"}",
            "{\"a\":\"\\ud800\\u0041\"}",
            "{\"\\ud800\":1}",
            "{\"a\":1,\"a\":2}",
            "{\"a\":1,\"\\u0061\":2}",
            "{\"a\":\"x\\\\y\"}",
            "{\"a\":\"\\u005c\"}",
            "{\"a\":\"tab\there\"}",
            "{\"a\":\"nul\u{0}\"}",
        ] {
            assert!(parsed(text).is_none(), "{text}");
        }
        // Not the leaf's backslash: keys are read in Python anyway.
        assert!(parsed("{\"a\\\\b\":1,\"d\":\"\\u0000\"}").is_some());
        // Floats are Python's: it scans `4111111111111111.0` as the card's digits.
        assert!(parsed("{\"c\":-0.0}").is_none());
        assert!(parsed_bytes(b"{\"a\":\"\xff\"}").is_none());
        assert!(parsed_bytes(b"{\"a\":1}\xc3").is_none());
    }

    #[test]
    fn duplicate_keys_in_wide_objects_are_refused() {
        let wide: Vec<String> = (0..40)
            .map(|index| format!("\"k{index}\":{index}"))
            .collect();
        assert!(parsed(&format!("{{{}}}", wide.join(","))).is_some());
        let duplicated = format!("{{{},\"k7\":0}}", wide.join(","));
        assert!(parsed(&duplicated).is_none());
        // The same key in sibling objects is no duplicate.
        assert!(parsed(r#"{"a":{"x":1},"b":{"x":2},"x":3}"#).is_some());
    }

    #[test]
    fn long_integers_are_python_s() {
        let digits = "7".repeat(MAX_INT_DIGITS);
        assert!(parsed(&format!("{{\"a\":{digits}}}")).is_some());
        assert!(parsed(&format!("{{\"a\":-{digits}}}")).is_some());
        assert!(parsed(&format!("{{\"a\":{digits}7}}")).is_none());
        // A float is Python's to read, whatever its length (see `number`).
        assert!(parsed(&format!("{{\"a\":{digits}7.5}}")).is_none());
        assert!(parsed(r#"{"a":4111111111111111.0}"#).is_none());
        assert!(parsed(r#"{"a":4111111111111111e0}"#).is_none());
    }

    fn nested(depth: usize, inner: &str) -> String {
        // `depth` containers around the root's member: the innermost is at `depth`.
        let mut text = inner.to_string();
        for level in 0..depth {
            text = if level % 2 == 0 {
                format!("[{text}]")
            } else {
                format!("{{\"k\":{text}}}")
            };
        }
        format!("{{\"k\":{text}}}")
    }

    #[test]
    fn depth_is_bounded_as_python_s_walk_bounds_it() {
        // The innermost container lies at depth `depth`: content there is too deep at 64.
        assert!(parsed(&nested(MAX_DEPTH - 1, "1")).is_some());
        assert!(parsed(&nested(MAX_DEPTH, "1")).is_none());
        assert!(parsed(&nested(MAX_DEPTH, "")).is_some()); // empty at 64: Python takes it
        assert!(parsed(&nested(MAX_DEPTH + 1, "")).is_none());
        assert!(parsed(&nested(5000, "")).is_none());
    }

    fn scanned(text: &str, wanted: u32) -> Option<Vec<LeafHit>> {
        let mut reader = Reader::default();
        reader.read(text.as_bytes(), Wanted(wanted), None)
    }

    #[test]
    fn hits_are_per_leaf_in_leaf_then_pass_order() {
        let text =
            r#"{"a": "x@example.com 123-45-6789", "b": 4111111111111111, "c": false, "d": "none"}"#;
        let hits = scanned(text, 0b111011).unwrap();
        assert_eq!(
            hits,
            [
                (0, scan::US_SSN, 14, 25),
                (0, scan::EMAIL, 0, 13),
                (1, scan::CREDIT_CARD, 0, 16)
            ]
        );
        assert_eq!(scanned(text, 0).unwrap(), []);
        assert_eq!(
            scanned(text, 1 << scan::EMAIL).unwrap(),
            [(0, scan::EMAIL, 0, 13)]
        );
    }

    #[test]
    fn a_pass_left_to_python_leaves_the_element_to_python() {
        // No IBAN registry: an IBAN candidate is Python's pass; so is IPv6 text.
        assert!(scanned(r#"{"a": "DE89 3704 0044 0532 0130 00"}"#, 1 << scan::IBAN).is_none());
        assert!(scanned(r#"{"a": "at 2001:db8::1"}"#, 1 << scan::IP_ADDRESS).is_none());
        assert!(scanned(r#"{"a": "at 2001:db8::1"}"#, 1 << scan::EMAIL).is_some());
    }

    #[test]
    fn a_reader_keeping_values_records_every_leaf() {
        let text = br#"{"a": ["x\\y", -12, true, false, null, {}], "b": "\u00e9"}"#;
        let mut reader = Reader::keeping_values();
        let values = reader.parse_values(text).expect("valid").to_vec();
        assert_eq!(values.len(), 6);
        assert_eq!(values[1], Value::Integer(15, 18));
        assert_eq!(
            values[2..],
            [
                Value::Boolean(true),
                Value::Boolean(false),
                Value::Null,
                values[5]
            ]
        );
        let (Value::String(first), Value::String(last)) = (values[0], values[5]) else {
            panic!("strings expected: {values:?}");
        };
        assert_eq!(reader.text(text, first), b"x\\y"); // kept: only the scan refuses it
        assert_eq!(reader.text(text, last), "\u{e9}".as_bytes());
        // The signature is the default reader's; that one still refuses the backslash.
        assert!(parsed_bytes(text).is_none());
        assert!(Reader::default().parse_values(text).is_none());
        assert!(reader.parse_values(br#"{"a": "\ud800"}"#).is_none());
    }

    #[test]
    fn a_reader_is_reused_cleanly() {
        let mut reader = Reader::default();
        assert!(reader
            .read(br#"{"a":{"b":[1,"x"#, Wanted(63), None)
            .is_none());
        let hits = reader
            .read(br#"{"b":"123-45-6789"}"#, Wanted(63), None)
            .unwrap();
        let signature = reader.signature();
        let mut expected = vec![OBJECT];
        expected.extend(key("b"));
        expected.extend([STRING, OBJECT_END]);
        assert_eq!(signature, expected);
        assert_eq!(hits, [(0, scan::US_SSN, 0, 11)]);
    }
}
