//! Line framing, tokenising, number parsing and number printing shared by every ascii
//! command family.
//!
//! memcached splits a command line on single spaces only (a tab is part of a token), accepts
//! `\n` as well as `\r\n` as the line end, and parses numbers with `strtol`-like rules. The
//! helpers here reproduce those rules once so that each command parser reads like the
//! protocol description.

use bytes::{BufMut, BytesMut};

/// How many tokens of a line are kept for random access. memcached's tokenizer stops at 24 as
/// well; every command except the multi-key retrievals has far fewer, and those re-split the
/// line themselves.
pub(crate) const MAX_TOKENS: usize = 24;

/// The reply text memcached uses for almost every malformed command line.
pub(crate) const BAD_FORMAT: &str = "bad command line format";

/// Result of looking for the end of a command line.
pub(crate) enum LineScan<'a> {
    /// No `\n` yet, and the buffer is still shorter than the longest allowed line.
    Incomplete,
    /// The line is, or is bound to become, longer than allowed. `consumed` is what the
    /// caller may drop before closing.
    TooLong { consumed: usize },
    /// One whole line. `content` excludes the terminator; `consumed` includes it.
    Line { content: &'a [u8], consumed: usize },
}

/// Finds the first line in `buf`, looking no further than `max_line_len` plus a terminator so
/// that an endless line is detected after a bounded amount of input.
pub(crate) fn scan_line(buf: &[u8], max_line_len: usize) -> LineScan<'_> {
    let window_len = max_line_len.saturating_add(2);
    let window = &buf[..buf.len().min(window_len)];
    match window.iter().position(|&b| b == b'\n') {
        Some(nl) => {
            let content = &window[..nl];
            let content = content.strip_suffix(b"\r").unwrap_or(content);
            if content.len() > max_line_len {
                LineScan::TooLong { consumed: nl + 1 }
            } else {
                LineScan::Line {
                    content,
                    consumed: nl + 1,
                }
            }
        }
        None if window.len() >= window_len => LineScan::TooLong {
            consumed: window.len(),
        },
        None => LineScan::Incomplete,
    }
}

/// Splits a line into its space-separated tokens, as memcached does: runs of spaces count as
/// one separator and leading or trailing spaces are ignored.
pub(crate) fn split(line: &[u8]) -> impl Iterator<Item = &[u8]> + Clone {
    line.split(|&b| b == b' ').filter(|t| !t.is_empty())
}

/// The tokens of one command line, with random access to the first [`MAX_TOKENS`] and the
/// total count, which is what the arity checks of every command need.
pub(crate) struct Tokens<'a> {
    line: &'a [u8],
    kept: [&'a [u8]; MAX_TOKENS],
    kept_len: usize,
    total: usize,
}

impl<'a> Tokens<'a> {
    pub(crate) fn new(line: &'a [u8]) -> Self {
        let mut kept: [&'a [u8]; MAX_TOKENS] = [&[]; MAX_TOKENS];
        let mut kept_len = 0;
        let mut total = 0;
        for token in split(line) {
            if let Some(slot) = kept.get_mut(kept_len) {
                *slot = token;
                kept_len += 1;
            }
            total += 1;
        }
        Self {
            line,
            kept,
            kept_len,
            total,
        }
    }

    /// The rest of the line from token `i` on (empty if there is no such token among the
    /// first [`MAX_TOKENS`]), for commands whose tail is a list the caller scans itself.
    pub(crate) fn line_from(&self, i: usize) -> &'a [u8] {
        // A token is a subslice of the line, so its offset is plain address arithmetic.
        let start = self.get(i).map_or(self.line.len(), |token| {
            token.as_ptr() as usize - self.line.as_ptr() as usize
        });
        &self.line[start..]
    }

    /// Number of tokens on the line, the command included.
    pub(crate) fn len(&self) -> usize {
        self.total
    }

    /// Token `i` (0 is the command), if it exists and is among the first [`MAX_TOKENS`].
    pub(crate) fn get(&self, i: usize) -> Option<&'a [u8]> {
        self.kept[..self.kept_len].get(i).copied()
    }

    /// Whether the last token is `noreply`. Only meaningful once the caller has checked the
    /// arity, as memcached's `set_noreply_maybe` is.
    pub(crate) fn last_is_noreply(&self) -> bool {
        self.total
            .checked_sub(1)
            .and_then(|i| self.get(i))
            .is_some_and(|t| t == b"noreply")
    }

    /// Every token from index `from` on, however many there are.
    pub(crate) fn all_from(&self, from: usize) -> impl Iterator<Item = &'a [u8]> {
        split(self.line).skip(from)
    }
}

/// Whether `key` is acceptable as a text-protocol key: 1..=`max` bytes, none of them a space
/// or an ASCII control character. memcached itself only checks the length, but a control
/// character in a key cannot be echoed back safely in a `VALUE` line.
pub(crate) fn key_ok(key: &[u8], max: usize) -> bool {
    !key.is_empty() && key.len() <= max && key.iter().all(|&b| b > b' ' && b != 0x7f)
}

fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// An unsigned decimal, with the optional leading `+` that `strtoull` accepts. A `-` is
/// rejected, as memcached's `safe_strtoull` rejects it.
pub(crate) fn parse_u64(token: &[u8]) -> Option<u64> {
    digits(token.strip_prefix(b"+").unwrap_or(token))
}

/// Like [`parse_u64`], limited to 32 bits (client flags, verbosity).
pub(crate) fn parse_u32(token: &[u8]) -> Option<u32> {
    parse_u64(token).and_then(|v| u32::try_from(v).ok())
}

/// A signed decimal (expiry times, delays).
pub(crate) fn parse_i64(token: &[u8]) -> Option<i64> {
    match token.strip_prefix(b"-") {
        Some(rest) => i64::try_from(-i128::from(digits(rest)?)).ok(),
        None => i64::try_from(parse_u64(token)?).ok(),
    }
}

/// The declared length of a data block. memcached reads it as a signed 32-bit number and
/// refuses anything negative or too close to `INT_MAX` to add the trailing `\r\n`.
pub(crate) fn parse_data_len(token: &[u8]) -> Option<usize> {
    const MAX_DECLARED: i64 = i32::MAX as i64 - 2;
    let n = parse_i64(token)?;
    if (0..=MAX_DECLARED).contains(&n) {
        usize::try_from(n).ok()
    } else {
        None
    }
}

/// The decimal digits of 0 through 99, two bytes each, so numbers are printed two digits
/// per division.
const DIGIT_PAIRS: [u8; 200] = {
    let mut table = [0u8; 200];
    let mut n = 0;
    while n < 100 {
        table[2 * n] = b'0' + (n / 10) as u8;
        table[2 * n + 1] = b'0' + (n % 10) as u8;
        n += 1;
    }
    table
};

/// Appends `v` in decimal without going through `fmt`, which is measurably slower on the
/// hot path of every `VALUE` line (whose flags are nearly always a single digit).
pub(crate) fn put_u64(out: &mut BytesMut, mut v: u64) {
    if v < 10 {
        out.put_u8(b'0' + v as u8);
        return;
    }
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    while v >= 100 {
        let pair = (v % 100) as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        v /= 100;
    }
    if v >= 10 {
        let pair = v as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + v as u8;
    }
    out.put_slice(&buf[i..]);
}

/// Appends `v` in decimal, with a leading `-` when negative.
pub(crate) fn put_i64(out: &mut BytesMut, v: i64) {
    if v < 0 {
        out.put_u8(b'-');
    }
    put_u64(out, v.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_line_accepts_crlf_and_lf() {
        match scan_line(b"get a\r\nrest", 100) {
            LineScan::Line { content, consumed } => {
                assert_eq!(content, b"get a");
                assert_eq!(consumed, 7);
            }
            _ => panic!("expected a line"),
        }
        match scan_line(b"get a\nrest", 100) {
            LineScan::Line { content, consumed } => {
                assert_eq!(content, b"get a");
                assert_eq!(consumed, 6);
            }
            _ => panic!("expected a line"),
        }
    }

    #[test]
    fn scan_line_is_bounded() {
        assert!(matches!(scan_line(b"abc", 10), LineScan::Incomplete));
        assert!(matches!(
            scan_line(&[b'a'; 12], 10),
            LineScan::TooLong { consumed: 12 }
        ));
        // Exactly at the limit is fine, one more byte is not, however it is chunked.
        assert!(matches!(
            scan_line(b"0123456789\r\n", 10),
            LineScan::Line { .. }
        ));
        assert!(matches!(
            scan_line(b"0123456789\n", 10),
            LineScan::Line { .. }
        ));
        assert!(matches!(
            scan_line(b"01234567890\n", 10),
            LineScan::TooLong { .. }
        ));
        assert!(matches!(
            scan_line(b"01234567890", 10),
            LineScan::Incomplete
        ));
        assert!(matches!(
            scan_line(b"012345678901", 10),
            LineScan::TooLong { .. }
        ));
    }

    #[test]
    fn tokens_collapse_spaces_and_count_beyond_kept() {
        let t = Tokens::new(b"  get  a b   ");
        assert_eq!(t.len(), 3);
        assert_eq!(t.get(0), Some(&b"get"[..]));
        assert_eq!(t.get(2), Some(&b"b"[..]));
        assert_eq!(t.get(3), None);
        let long: Vec<u8> = (0..30).flat_map(|_| b"k ".iter().copied()).collect();
        let t = Tokens::new(&long);
        assert_eq!(t.len(), 30);
        assert_eq!(t.get(MAX_TOKENS), None);
        assert_eq!(t.all_from(1).count(), 29);
        assert_eq!(t.all_from(25).count(), 5);
        let short = Tokens::new(b"get a  b");
        assert_eq!(
            short.all_from(1).collect::<Vec<_>>(),
            [&b"a"[..], &b"b"[..]]
        );
        assert_eq!(short.all_from(3).count(), 0);
        assert_eq!(short.all_from(7).count(), 0);
    }

    #[test]
    fn numbers_follow_strtol_rules() {
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"+5"), Some(5));
        assert_eq!(parse_u64(b"-5"), None);
        assert_eq!(parse_u64(b"5x"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"-9223372036854775809"), None);
        assert_eq!(parse_i64(b"-"), None);
        assert_eq!(parse_data_len(b"-1"), None);
        assert_eq!(parse_data_len(b"2147483645"), Some(2_147_483_645));
        assert_eq!(parse_data_len(b"2147483646"), None);
    }

    #[test]
    fn numbers_print_back() {
        let mut out = BytesMut::new();
        put_u64(&mut out, 0);
        out.put_u8(b' ');
        put_u64(&mut out, u64::MAX);
        out.put_u8(b' ');
        put_i64(&mut out, i64::MIN);
        assert_eq!(&out[..], b"0 18446744073709551615 -9223372036854775808");
    }

    #[test]
    fn numbers_print_as_std_does_at_every_digit_boundary() {
        let mut samples: Vec<u64> = (0..=1000).collect();
        for digits in 1..20 {
            let p = 10u64.pow(digits);
            samples.extend([p - 1, p, p + 1, p.saturating_mul(2), p.saturating_add(99)]);
        }
        samples.push(u64::MAX);
        for n in samples {
            let mut out = BytesMut::new();
            put_u64(&mut out, n);
            assert_eq!(&out[..], n.to_string().as_bytes(), "{n}");
        }
    }

    #[test]
    fn keys_reject_control_and_length() {
        assert!(key_ok(b"foo", 250));
        assert!(!key_ok(b"", 250));
        assert!(!key_ok(b"a\tb", 250));
        assert!(!key_ok(b"a\x7f", 250));
        assert!(key_ok("日本".as_bytes(), 250));
        assert!(!key_ok(&[b'a'; 251], 250));
    }
}
