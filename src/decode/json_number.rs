//! A JSON number read to the f64 serde_json gives for it, at any length,
//! for the scanner of [`super::json_fast`].
//!
//! serde_json is built here without its `float_roundtrip` feature (nothing
//! in the dependency graph turns it on), and then its numbers are not
//! correctly rounded: it keeps the digits that fit a u64, drops the rest
//! (an integer digit dropped is a power of ten), and makes the f64 as
//! `significand as f64` times or over one power of ten. For 17 significant
//! digits that is two roundings, and 15 % of the f64s Python's `repr`
//! writes in [-2, 2) come out one step away from the correctly rounded
//! value (2 M of them tried on 2026-12-06). A correctly rounded parser
//! (lexical-core, fast-float2, an Eisel-Lemire path) would therefore
//! differ from the serde path on `t0` and, rarely, on an f32 value. So
//! this is serde_json's own algorithm (`parse_integer`, `parse_decimal`,
//! `parse_exponent`, `f64_from_parts` of serde_json 1.0.154), step for
//! step ([`any_number`]), behind a fast path for the numbers sensors send
//! ([`short_number`]: no exponent, at most 19 digits, which cannot
//! overflow a u64, so there the algorithm is one division and the digits
//! can be taken eight and four at a time). The tests compare with
//! serde_json itself, so a build that turned `float_roundtrip` on would
//! fail them rather than drift.

/// Reads the number at `bytes[*at..]` (after any whitespace is skipped)
/// and moves `at` past it. None: not a number serde_json would give a
/// finite f64 for (another value, bad syntax, out of range), or one too
/// large for an f32, which every field of a payload refuses as non_finite
/// (the serde path then gives that error, in its order); the short path
/// never makes one, so the scanner checks no value. `at` is then
/// meaningless: the caller gives the payload up.
#[inline]
pub(super) fn number(bytes: &[u8], at: &mut usize) -> Option<f64> {
    let start = *at;
    match short_number(bytes, at) {
        Short::Value(v) => Some(v),
        Short::Refused => None,
        Short::Other => {
            *at = start;
            any_number(bytes, at).filter(|v| (*v as f32).is_finite())
        }
    }
}

enum Short {
    Value(f64),
    /// Not a number to serde_json either.
    Refused,
    /// An exponent or more than 19 digits: for [`any_number`].
    Other,
}

/// `[-]digits[.digits]` of at most 19 digits, which serde_json reads as
/// `significand as f64 / 10^fraction` (an integer: `as f64`), since no
/// digit overflows a u64.
#[inline]
fn short_number(bytes: &[u8], at: &mut usize) -> Short {
    let negative = bytes.get(*at) == Some(&b'-');
    if negative {
        *at += 1;
    }
    let mut significand = 0u64;
    let mut digits = 0u32;
    match bytes.get(*at) {
        Some(b'0') => {
            *at += 1;
            // JSON has no leading zeros: serde_json refuses them.
            if bytes.get(*at).is_some_and(u8::is_ascii_digit) {
                return Short::Refused;
            }
        }
        Some(b'1'..=b'9') => {
            while let Some(&c @ b'0'..=b'9') = bytes.get(*at) {
                if digits == MAX_SHORT {
                    return Short::Other;
                }
                significand = significand * 10 + u64::from(c - b'0');
                digits += 1;
                *at += 1;
            }
        }
        _ => return Short::Refused,
    }
    let mut fraction = 0u32;
    if bytes.get(*at) == Some(&b'.') {
        *at += 1;
        // Eight, or four, at a time where the bytes allow: a branch on
        // whether they are digits, predicted, rather than a count of them
        // that the next load would wait for. A 17-digit fraction takes two
        // steps of eight; 6 decimals one of four and two bytes.
        while digits + 8 <= MAX_SHORT {
            let Some(chunk) = bytes.get(*at..*at + 8) else {
                break;
            };
            let flags = not_digits(chunk);
            if flags == 0 {
                significand = significand * 100_000_000 + eight_digits(chunk);
                (digits, fraction, *at) = (digits + 8, fraction + 8, *at + 8);
                continue;
            }
            if flags & 0x8080_8080 == 0 {
                significand = significand * 10_000 + four_digits(&chunk[..4]);
                (digits, fraction, *at) = (digits + 4, fraction + 4, *at + 4);
            }
            break;
        }
        while let Some(&c @ b'0'..=b'9') = bytes.get(*at) {
            if digits == MAX_SHORT {
                return Short::Other;
            }
            significand = significand * 10 + u64::from(c - b'0');
            (digits, fraction, *at) = (digits + 1, fraction + 1, *at + 1);
        }
        if fraction == 0 {
            return Short::Refused;
        }
    }
    if matches!(bytes.get(*at), Some(b'e' | b'E')) {
        return Short::Other;
    }
    let magnitude = significand as f64 / POW10[fraction as usize];
    Short::Value(if negative { -magnitude } else { magnitude })
}

/// Digits below 10^19 < 2^64 never overflow serde_json's u64.
const MAX_SHORT: u32 = 19;

/// Any number, serde_json's algorithm step for step.
#[cold]
#[inline(never)]
fn any_number(bytes: &[u8], at: &mut usize) -> Option<f64> {
    let negative = bytes.get(*at) == Some(&b'-');
    if negative {
        *at += 1;
    }
    let mut significand = 0u64;
    // Digits in `significand` so far (leading zeros too): bounds the fast path.
    let mut taken = 0u32;
    let mut exponent = 0i32;
    match *bytes.get(*at)? {
        b'0' => {
            *at += 1;
            taken = 1;
            // JSON has no leading zeros: serde_json refuses them.
            if bytes.get(*at).is_some_and(u8::is_ascii_digit) {
                return None;
            }
        }
        b'1'..=b'9' => {
            if take_digits(bytes, at, &mut significand, &mut taken) {
                // serde_json's parse_long_integer: each integer digit that
                // no longer fits is a power of ten.
                while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
                    *at += 1;
                    exponent += 1;
                }
            }
        }
        _ => return None,
    }
    if bytes.get(*at) == Some(&b'.') {
        *at += 1;
        let (start, before) = (*at, taken);
        let overflowed = take_digits(bytes, at, &mut significand, &mut taken);
        // At most the payload's length, so well within i32 here.
        exponent -= (taken - before) as i32;
        if overflowed {
            // parse_decimal_overflow: the fraction's remaining digits are dropped.
            while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
                *at += 1;
            }
        }
        if *at == start {
            return None;
        }
    }
    if matches!(bytes.get(*at), Some(b'e' | b'E')) {
        exponent = match exponent_part(bytes, at, exponent) {
            Exponent::Value(e) => e,
            // parse_exponent_overflow: past i32, a negative exponent or a
            // zero significand is a signed zero, anything else an error.
            Exponent::Overflow {
                negative: exp_negative,
            } => {
                if significand != 0 && !exp_negative {
                    return None;
                }
                while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
                    *at += 1;
                }
                return Some(if negative { -0.0 } else { 0.0 });
            }
            Exponent::Invalid => return None,
        };
    }
    // An integer that fit is U64 or I64 to serde_json, then `as f64`:
    // the same as `significand as f64` times 1e0, and rounding is symmetric
    // in the sign (so "-0" is -0.0 there too).
    let magnitude = from_parts(significand, exponent)?;
    Some(if negative { -magnitude } else { magnitude })
}

/// Takes digits into `significand` while `significand * 10 + digit` fits
/// a u64 (serde_json's `overflow!` test); true if a digit did not fit.
fn take_digits(bytes: &[u8], at: &mut usize, significand: &mut u64, taken: &mut u32) -> bool {
    while let Some(&c @ b'0'..=b'9') = bytes.get(*at) {
        match significand
            .checked_mul(10)
            .and_then(|s| s.checked_add(u64::from(c - b'0')))
        {
            Some(s) => *significand = s,
            None => return true,
        }
        *taken += 1;
        *at += 1;
    }
    false
}

/// Eight bytes' high bits, each set where that byte is not an ASCII
/// digit, up to the first such byte (those after it may be set or not).
fn not_digits(bytes: &[u8]) -> u64 {
    let w = u64::from_le_bytes(bytes.try_into().expect("eight bytes"));
    // A byte's high bit is set when it is above '9' (adding 0x46 reaches
    // 0x80) or below '0' (subtracting 0x30 borrows); a carry or a borrow
    // only leaves a byte that is itself flagged.
    (w.wrapping_add(0x4646_4646_4646_4646) | w.wrapping_sub(0x3030_3030_3030_3030))
        & 0x8080_8080_8080_8080
}

/// The value of eight ASCII digits (the first in the low byte), combined
/// in three multiplications: the SWAR method of fast_float.
fn eight_digits(bytes: &[u8]) -> u64 {
    let word = u64::from_le_bytes(bytes.try_into().expect("eight bytes"));
    let v = word.wrapping_sub(0x3030_3030_3030_3030);
    // Pairs of digits, then fours, then the eight.
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let pairs = v & 0x0000_00FF_0000_00FF;
    let pairs_high = (v >> 16) & 0x0000_00FF_0000_00FF;
    pairs
        .wrapping_mul(100 + (1_000_000 << 32))
        .wrapping_add(pairs_high.wrapping_mul(1 + (10_000 << 32)))
        >> 32
}

/// The value of four ASCII digits, the same way.
fn four_digits(bytes: &[u8]) -> u64 {
    let word = u32::from_le_bytes(bytes.try_into().expect("four bytes"));
    let v = word.wrapping_sub(0x3030_3030);
    // Pairs in bytes 0 and 2, then both: the first pair times 100.
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    u64::from(((v & 0x00FF_00FF).wrapping_mul(1 + (100 << 16)) >> 16) & 0xFFFF)
}

enum Exponent {
    Value(i32),
    Overflow { negative: bool },
    Invalid,
}

/// `e`/`E`, a sign, digits: `exponent` moved by them (saturating), as
/// serde_json's parse_exponent does.
fn exponent_part(bytes: &[u8], at: &mut usize, exponent: i32) -> Exponent {
    *at += 1;
    let negative = match bytes.get(*at) {
        Some(b'+') => {
            *at += 1;
            false
        }
        Some(b'-') => {
            *at += 1;
            true
        }
        _ => false,
    };
    let Some(&c @ b'0'..=b'9') = bytes.get(*at) else {
        return Exponent::Invalid;
    };
    *at += 1;
    let mut exp = i32::from(c - b'0');
    while let Some(&c @ b'0'..=b'9') = bytes.get(*at) {
        *at += 1;
        match exp
            .checked_mul(10)
            .and_then(|e| e.checked_add(i32::from(c - b'0')))
        {
            Some(e) => exp = e,
            None => return Exponent::Overflow { negative },
        }
    }
    Exponent::Value(if negative {
        exponent.saturating_sub(exp)
    } else {
        exponent.saturating_add(exp)
    })
}

/// serde_json's `f64_from_parts`: None where it reports NumberOutOfRange.
fn from_parts(significand: u64, mut exponent: i32) -> Option<f64> {
    let mut f = significand as f64;
    loop {
        match POW10.get(exponent.wrapping_abs() as usize) {
            Some(&pow) => {
                if exponent >= 0 {
                    f *= pow;
                    if f.is_infinite() {
                        return None;
                    }
                } else {
                    f /= pow;
                }
                return Some(f);
            }
            None => {
                if f == 0.0 {
                    return Some(f);
                }
                if exponent >= 0 {
                    return None;
                }
                f /= 1e308;
                exponent += 308;
            }
        }
    }
}

/// serde_json's table: 1e0 to 1e308, each the f64 nearest to it.
static POW10: [f64; 309] = [
    1e000, 1e001, 1e002, 1e003, 1e004, 1e005, 1e006, 1e007, 1e008, 1e009, //
    1e010, 1e011, 1e012, 1e013, 1e014, 1e015, 1e016, 1e017, 1e018, 1e019, //
    1e020, 1e021, 1e022, 1e023, 1e024, 1e025, 1e026, 1e027, 1e028, 1e029, //
    1e030, 1e031, 1e032, 1e033, 1e034, 1e035, 1e036, 1e037, 1e038, 1e039, //
    1e040, 1e041, 1e042, 1e043, 1e044, 1e045, 1e046, 1e047, 1e048, 1e049, //
    1e050, 1e051, 1e052, 1e053, 1e054, 1e055, 1e056, 1e057, 1e058, 1e059, //
    1e060, 1e061, 1e062, 1e063, 1e064, 1e065, 1e066, 1e067, 1e068, 1e069, //
    1e070, 1e071, 1e072, 1e073, 1e074, 1e075, 1e076, 1e077, 1e078, 1e079, //
    1e080, 1e081, 1e082, 1e083, 1e084, 1e085, 1e086, 1e087, 1e088, 1e089, //
    1e090, 1e091, 1e092, 1e093, 1e094, 1e095, 1e096, 1e097, 1e098, 1e099, //
    1e100, 1e101, 1e102, 1e103, 1e104, 1e105, 1e106, 1e107, 1e108, 1e109, //
    1e110, 1e111, 1e112, 1e113, 1e114, 1e115, 1e116, 1e117, 1e118, 1e119, //
    1e120, 1e121, 1e122, 1e123, 1e124, 1e125, 1e126, 1e127, 1e128, 1e129, //
    1e130, 1e131, 1e132, 1e133, 1e134, 1e135, 1e136, 1e137, 1e138, 1e139, //
    1e140, 1e141, 1e142, 1e143, 1e144, 1e145, 1e146, 1e147, 1e148, 1e149, //
    1e150, 1e151, 1e152, 1e153, 1e154, 1e155, 1e156, 1e157, 1e158, 1e159, //
    1e160, 1e161, 1e162, 1e163, 1e164, 1e165, 1e166, 1e167, 1e168, 1e169, //
    1e170, 1e171, 1e172, 1e173, 1e174, 1e175, 1e176, 1e177, 1e178, 1e179, //
    1e180, 1e181, 1e182, 1e183, 1e184, 1e185, 1e186, 1e187, 1e188, 1e189, //
    1e190, 1e191, 1e192, 1e193, 1e194, 1e195, 1e196, 1e197, 1e198, 1e199, //
    1e200, 1e201, 1e202, 1e203, 1e204, 1e205, 1e206, 1e207, 1e208, 1e209, //
    1e210, 1e211, 1e212, 1e213, 1e214, 1e215, 1e216, 1e217, 1e218, 1e219, //
    1e220, 1e221, 1e222, 1e223, 1e224, 1e225, 1e226, 1e227, 1e228, 1e229, //
    1e230, 1e231, 1e232, 1e233, 1e234, 1e235, 1e236, 1e237, 1e238, 1e239, //
    1e240, 1e241, 1e242, 1e243, 1e244, 1e245, 1e246, 1e247, 1e248, 1e249, //
    1e250, 1e251, 1e252, 1e253, 1e254, 1e255, 1e256, 1e257, 1e258, 1e259, //
    1e260, 1e261, 1e262, 1e263, 1e264, 1e265, 1e266, 1e267, 1e268, 1e269, //
    1e270, 1e271, 1e272, 1e273, 1e274, 1e275, 1e276, 1e277, 1e278, 1e279, //
    1e280, 1e281, 1e282, 1e283, 1e284, 1e285, 1e286, 1e287, 1e288, 1e289, //
    1e290, 1e291, 1e292, 1e293, 1e294, 1e295, 1e296, 1e297, 1e298, 1e299, //
    1e300, 1e301, 1e302, 1e303, 1e304, 1e305, 1e306, 1e307, 1e308,
];

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// `text`, a whole JSON number or not, reads as serde_json reads it: the
    /// same f64 to the bit, or None where serde_json refuses it, by the
    /// general path; and by the fast path where it takes the number.
    fn check(text: &str) {
        let by_serde = serde_json::from_str::<f64>(text).ok();
        let whole = |read: fn(&[u8], &mut usize) -> Option<f64>| {
            let mut at = 0;
            read(text.as_bytes(), &mut at).filter(|_| at == text.len())
        };
        let general = whole(any_number);
        assert_eq!(
            general.map(f64::to_bits),
            by_serde.map(f64::to_bits),
            "{text}: ours {general:?}, serde_json {by_serde:?}"
        );
        let fits = by_serde.filter(|v| (*v as f32).is_finite());
        assert_eq!(
            whole(number).map(f64::to_bits),
            fits.map(f64::to_bits),
            "{text}"
        );
    }

    /// Python's `repr` of a float, which `json.dumps` writes: the shortest
    /// digits that read back, fixed from 1e-4 up to 1e16, else `1.5e-05`.
    fn python_repr(v: f64) -> String {
        let shortest = format!("{v:e}");
        let (mantissa, exp) = shortest.split_once('e').unwrap();
        let exp: i32 = exp.parse().unwrap();
        let sign = if mantissa.starts_with('-') { "-" } else { "" };
        let digits = mantissa.trim_start_matches('-').replace('.', "");
        if (-4..16).contains(&exp) {
            if exp < 0 {
                format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
            } else if digits.len() > exp as usize + 1 {
                let (int, frac) = digits.split_at(exp as usize + 1);
                format!("{sign}{int}.{frac}")
            } else {
                let zeros = "0".repeat(exp as usize + 1 - digits.len());
                format!("{sign}{digits}{zeros}.0")
            }
        } else {
            let (first, rest) = digits.split_at(1);
            let point = if rest.is_empty() { "" } else { "." };
            let exp_sign = if exp < 0 { '-' } else { '+' };
            format!("{sign}{first}{point}{rest}e{exp_sign}{:02}", exp.abs())
        }
    }

    #[test]
    fn python_repr_writes_as_python_does() {
        for (v, python) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (-1.0836080312728882, "-1.0836080312728882"),
            (123.0, "123.0"),
            (0.0001, "0.0001"),
            (0.00001234, "1.234e-05"),
            (1e16, "1e+16"),
            (1.5e300, "1.5e+300"),
            (5e-324, "5e-324"),
            (1234567890123456.8, "1234567890123456.8"),
        ] {
            assert_eq!(python_repr(v), python);
        }
    }

    #[test]
    fn edges_read_as_serde_json_reads_them() {
        for text in [
            // Short and 17 significant digits, as json.dumps writes them.
            "0",
            "-0",
            "0.0",
            "-0.0",
            "-0.000",
            "1",
            "-1",
            "0.1",
            "0.2",
            "0.3",
            "-1.083608",
            "-1.0836080312728882",
            "1.1678479059585323",
            "0.30000000000000004",
            "9007199254740993",
            "-9007199254740993.0",
            "3.4028235677973366e+38",
            "3.4028236e38",
            "1.401298464324817e-45",
            // Exponents.
            "1e3",
            "1E3",
            "1e+3",
            "1e-3",
            "-2.5E-3",
            "0e0",
            "0E-0",
            "1e0",
            "1.5e-05",
            "1e+16",
            "1e22",
            "1e23",
            "123456789e-20",
            "0.000001e6",
            // Subnormals and the ends of the range.
            "5e-324",
            "4.9406564584124654e-324",
            "2.2250738585072009e-308",
            "2.2250738585072014e-308",
            "2.225073858507201e-308",
            "1e-320",
            "2.4703282292062327e-324",
            "2.4703282292062328e-324",
            "1e-400",
            "-1e-400",
            "1.7976931348623157e308",
            "1.7976931348623158e308",
            "1.7976931348623159e308",
            "1e308",
            "1e309",
            "-1e309",
            "10e307",
            "0.1e310",
            "1e-308",
            "1e-309",
            "123e-330",
            // 19 digits and more: where u64 overflows, and past it.
            "9999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "18446744073709551619",
            "-18446744073709551616",
            "1844674407370955161.5",
            "1844674407370955161.6",
            "18446744073709551619.3",
            "184467440737095516199.3",
            "0.18446744073709551615",
            "0.18446744073709551616",
            "1.8446744073709551616",
            "12345678901234567890123456789",
            "1234567890.1234567890123456789",
            "0.0000000000000000000000000001234567890123456789",
            "99999999999999999999999999999999999999.9e-20",
            "-9223372036854775808",
            "-9223372036854775809",
            "9223372036854775808",
            // Exponents past i32.
            "1e2147483647",
            "1e2147483648",
            "1e-2147483648",
            "1e-99999999999",
            "0e99999999999",
            "-0e99999999999",
            "0.0e2147483648",
            "-1e-2147483649",
            "1e-2147483647",
            "123456789012345678901234567890e-2147483647",
            // Not numbers, or not to serde_json.
            "",
            "-",
            "+1",
            ".5",
            "1.",
            "1.e3",
            "01",
            "-01",
            "00",
            "1e",
            "1e+",
            "1e-",
            "-a",
            "1ee3",
            "0x10",
            "Infinity",
            "NaN",
            "1.5.5",
        ] {
            check(text);
        }
        let long_integer = "7".repeat(400);
        check(&long_integer);
        check(&format!("0.{long_integer}"));
        check(&format!("{long_integer}e-300"));
        check(&format!("0.{}1", "0".repeat(400)));
    }

    /// Random f64 printed as Rust and Python print them, and random digit
    /// strings of any length and exponent.
    #[test]
    fn random_numbers_read_as_serde_json_reads_them() {
        let mut rng = ChaCha8Rng::seed_from_u64(30);
        for _ in 0..40_000 {
            let v = f64::from_bits(rng.random::<u64>());
            if v.is_finite() {
                for text in [
                    format!("{v}"),
                    format!("{v:e}"),
                    format!("{v:?}"),
                    python_repr(v),
                ] {
                    check(&text);
                }
            }
            let near_one = rng.random_range(-20.0..20.0f64);
            check(&python_repr(near_one));
            check(&format!("{near_one:.6}"));
            let digits: String = (0..rng.random_range(1..45))
                .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                .collect();
            let int = digits.trim_start_matches('0');
            let int = if int.is_empty() { "0" } else { int };
            let split = rng.random_range(0..=int.len());
            let (a, b) = int.split_at(split);
            let mut text = if b.is_empty() || a.is_empty() {
                int.to_string()
            } else {
                format!("{a}.{b}")
            };
            if rng.random_bool(0.5) {
                text.push_str(&format!("e{}", rng.random_range(-400..400)));
            }
            check(&text);
            check(&format!("-{text}"));
        }
    }

    #[test]
    fn eight_digits_at_a_time_are_their_value() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for _ in 0..10_000 {
            let digits: String = (0..8)
                .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                .collect();
            assert_eq!(not_digits(digits.as_bytes()), 0);
            assert_eq!(
                eight_digits(digits.as_bytes()),
                digits.parse::<u64>().unwrap()
            );
            assert_eq!(
                four_digits(&digits.as_bytes()[..4]),
                digits[..4].parse::<u64>().unwrap()
            );
            // Any one byte that is not a digit, anywhere.
            let mut bytes = digits.into_bytes();
            let other = [
                b',', b']', b' ', b'e', b'.', b'/', b':', 0, 0x80, 0xba, 0xff,
            ];
            let at = rng.random_range(0..8);
            bytes[at] = other[rng.random_range(0..other.len())];
            let flags = not_digits(&bytes);
            // The first byte flagged is the one that is not a digit.
            assert_eq!(flags.trailing_zeros() / 8, at as u32, "{bytes:?}");
            assert_eq!(flags & 0x8080_8080 == 0, at >= 4, "{bytes:?}");
        }
    }
}
