//! The confirmations of `patterns` (python-stdnum's rules written out over ASCII digits).

/// `_card_ok`: the Luhn checksum over ASCII digits (the check digit is the last one).
pub fn luhn_ok(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    const DOUBLED: [u32; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    let mut sum = 0u32;
    for (position, digit) in digits.rev().enumerate() {
        let value = u32::from(digit - b'0');
        sum += if position % 2 == 0 {
            value
        } else {
            DOUBLED[value as usize]
        };
    }
    sum.is_multiple_of(10)
}

/// `_is_card`: 13-19 ASCII digits (leading zeros already stripped) that a card may start
/// with (2-6: the banking and financial industries of ISO/IEC 7812) and that pass Luhn.
pub fn is_card(number: &[u8]) -> bool {
    (13..=19).contains(&number.len())
        && (b'2'..=b'6').contains(&number[0])
        && luhn_ok(number.iter().copied())
}

/// `_ssn_ok`: area not 000, 666 or 9xx, group not 00, serial not 0000, and not one of the
/// SSNs published in advertising.
pub fn ssn_ok(area: &[u8], group: &[u8], serial: &[u8]) -> bool {
    const DENIED: [(&[u8], &[u8], &[u8]); 3] = [
        (b"078", b"05", b"1120"),
        (b"457", b"55", b"5462"),
        (b"219", b"09", b"9999"),
    ];
    area[0] != b'9'
        && area != b"000"
        && area != b"666"
        && group != b"00"
        && serial != b"0000"
        && !DENIED.contains(&(area, group, serial))
}

/// `_nanp_ok`: a North American number's area code and exchange start 2-9 and are not N11.
pub fn nanp_ok(area: &[u8], exchange: &[u8]) -> bool {
    area[0] >= b'2' && exchange[0] >= b'2' && &area[1..] != b"11" && &exchange[1..] != b"11"
}

/// `ipaddress.IPv4Address` on text that is ASCII digits and dots: four octets of one to
/// three digits, no leading zero (bpo-36384), at most 255.
pub fn ipv4_ok(text: &[u8]) -> bool {
    let mut octets = 0;
    for octet in text.split(|&byte| byte == b'.') {
        octets += 1;
        if octets > 4
            || octet.is_empty()
            || octet.len() > 3
            || !octet.iter().all(u8::is_ascii_digit)
        {
            return false;
        }
        if octet.len() > 1 && octet[0] == b'0' {
            return false;
        }
        let value = octet
            .iter()
            .fold(0u32, |value, &digit| value * 10 + u32::from(digit - b'0'));
        if value > 255 {
            return false;
        }
    }
    octets == 4
}
