//! What the bench sends: which operation, which key, and which value.
//!
//! Everything here is deterministic. Operations and keys come from a per-connection
//! generator seeded from `--seed`, so two runs with the same flags issue the same requests.
//! Values are a pure function of the key and the value length, so a reader can check any
//! value it gets back without knowing who wrote it or when: concurrent sets of one key from
//! many connections always write identical bytes, and verification is never ambiguous.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

/// How many sets per how many gets, as `SET:GET` on the command line.
///
/// memcached benchmarks are usually quoted as a set:get mix (1:10 is mc-crusher's and
/// memtier's habit), so the flag takes the same shape instead of a percentage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ratio {
    /// Relative weight of sets.
    pub sets: u32,
    /// Relative weight of gets.
    pub gets: u32,
}

impl Ratio {
    /// The sum of both weights; never zero for a parsed ratio.
    fn total(self) -> u64 {
        u64::from(self.sets) + u64::from(self.gets)
    }

    /// Picks an operation from a uniformly random number, honouring the weights.
    pub(crate) fn pick(self, rng: &mut Rng) -> Op {
        if rng.below(self.total()) < u64::from(self.sets) {
            Op::Set
        } else {
            Op::Get
        }
    }
}

impl Default for Ratio {
    fn default() -> Self {
        Self { sets: 1, gets: 10 }
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.sets, self.gets)
    }
}

/// Why a `--ratio` value was refused.
///
/// A separate type (rather than a string) so clap can show it and tests can match on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RatioError {
    /// The text is not two numbers joined by one colon.
    #[error("expected SET:GET, two whole numbers such as 1:10, got {0:?}")]
    Shape(String),
    /// Both weights are zero, so no operation could ever be chosen.
    #[error("at least one of SET and GET must be above zero")]
    AllZero,
}

impl FromStr for Ratio {
    type Err = RatioError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shape = || RatioError::Shape(s.to_owned());
        let (sets, gets) = s.split_once(':').ok_or_else(shape)?;
        let parse = |part: &str| {
            // u32's parser accepts a leading '+', which a ratio never needs.
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(shape());
            }
            part.parse::<u32>().map_err(|_| shape())
        };
        let ratio = Self {
            sets: parse(sets)?,
            gets: parse(gets)?,
        };
        if ratio.total() == 0 {
            return Err(RatioError::AllZero);
        }
        Ok(ratio)
    }
}

/// The two operations the bench issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Get,
    Set,
}

/// Per-connection pseudo-random source (xorshift64*).
///
/// Each connection owns one, seeded from the run seed and its index, so runs are
/// reproducible and connections never contend on shared state. We need speed and spread, not
/// cryptographic quality, and this avoids a dependency.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    state: u64,
}

impl Rng {
    /// The generator for connection `conn` of a run seeded with `seed`.
    pub(crate) fn for_connection(seed: u64, conn: u32) -> Self {
        let state = splitmix64(seed ^ splitmix64(u64::from(conn)));
        // xorshift never leaves zero, so zero must never be the starting state.
        Self {
            state: if state == 0 { GOLDEN_GAMMA } else { state },
        }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0). Multiply-shift instead of `%` keeps the bias
    /// negligible and avoids a division.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's finaliser: turns related inputs (seed, seed+1, …) into unrelated outputs.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The keys a run touches: `prefix` followed by a decimal index in `0..count`.
///
/// Keys are named by index so prefill can walk all of them and the load phase can pick one
/// uniformly with a single random number.
#[derive(Debug, Clone)]
pub(crate) struct KeySpace {
    prefix: Vec<u8>,
    count: u64,
}

impl KeySpace {
    pub(crate) fn new(prefix: &str, count: u64) -> Self {
        Self {
            prefix: prefix.as_bytes().to_vec(),
            count,
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Length of the longest key, so arguments can be checked against memcached's limit.
    pub(crate) fn longest_key_len(&self) -> usize {
        self.prefix.len() + decimal_len(self.count.saturating_sub(1))
    }

    pub(crate) fn key(&self, index: u64) -> Bytes {
        let mut key = Vec::with_capacity(self.prefix.len() + decimal_len(index));
        key.extend_from_slice(&self.prefix);
        push_decimal(&mut key, index);
        Bytes::from(key)
    }

    pub(crate) fn random_key(&self, rng: &mut Rng) -> Bytes {
        self.key(rng.below(self.count))
    }
}

fn decimal_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let start = out.len();
    let mut rest = n;
    loop {
        out.push(b'0' + (rest % 10) as u8);
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out[start..].reverse();
}

/// 64 printable characters, so a value seen through telnet or a packet capture is readable
/// and one random byte maps to one character with a mask.
const VALUE_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The endless character stream for one (key, length) pair; a value is its first `len` bytes.
///
/// The length is mixed into the seed on purpose. A value of another length (written by a
/// run with another `--value-size`) still verifies, because its bytes are the stream for
/// *its* length; but a value cut short or padded by a faulty server does not, because the
/// stream for the wrong length differs from the first byte on.
struct Pattern {
    state: u64,
    word: u64,
    left_in_word: u32,
}

impl Pattern {
    fn new(key: &[u8], len: usize) -> Self {
        Self {
            state: fnv1a(key) ^ splitmix64(len as u64),
            word: 0,
            left_in_word: 0,
        }
    }
}

impl Iterator for Pattern {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        if self.left_in_word == 0 {
            self.state = self.state.wrapping_add(GOLDEN_GAMMA);
            self.word = splitmix64(self.state);
            self.left_in_word = 8;
        }
        let byte = (self.word & 63) as usize;
        self.word >>= 8;
        self.left_in_word -= 1;
        Some(VALUE_ALPHABET[byte])
    }
}

/// FNV-1a: a tiny, well-spread hash of the key to seed its value pattern.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

/// The value the bench stores under `key` when values are `len` bytes long.
pub(crate) fn value_for(key: &[u8], len: usize) -> Bytes {
    Pattern::new(key, len).take(len).collect::<Vec<u8>>().into()
}

/// Whether `data` is exactly what some bench run would have stored under `key`.
pub(crate) fn value_matches(key: &[u8], data: &[u8]) -> bool {
    data.iter()
        .copied()
        .eq(Pattern::new(key, data.len()).take(data.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_parses_set_get() {
        assert_eq!("1:10".parse(), Ok(Ratio { sets: 1, gets: 10 }));
        assert_eq!("0:1".parse(), Ok(Ratio { sets: 0, gets: 1 }));
        assert_eq!("3:0".parse(), Ok(Ratio { sets: 3, gets: 0 }));
        assert_eq!(Ratio::default().to_string(), "1:10");
    }

    #[test]
    fn ratio_rejects_bad_shapes() {
        for bad in [
            "",
            "1",
            "1:",
            ":1",
            "1:2:3",
            "a:b",
            "-1:2",
            "+1:2",
            "1 :2",
            "1:99999999999",
        ] {
            assert_eq!(
                bad.parse::<Ratio>(),
                Err(RatioError::Shape(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!("0:0".parse::<Ratio>(), Err(RatioError::AllZero));
    }

    #[test]
    fn ratio_pick_follows_weights() {
        let mut rng = Rng::for_connection(7, 0);
        let ratio = Ratio { sets: 1, gets: 3 };
        let sets = (0..100_000)
            .filter(|_| ratio.pick(&mut rng) == Op::Set)
            .count();
        // Expected 25,000; the binomial standard deviation is about 137.
        assert!((24_300..25_700).contains(&sets), "{sets} sets");

        let only_gets = Ratio { sets: 0, gets: 1 };
        assert!((0..1000).all(|_| only_gets.pick(&mut rng) == Op::Get));
        let only_sets = Ratio { sets: 1, gets: 0 };
        assert!((0..1000).all(|_| only_sets.pick(&mut rng) == Op::Set));
    }

    #[test]
    fn rng_is_deterministic_per_connection() {
        let draw = |seed, conn| {
            let mut rng = Rng::for_connection(seed, conn);
            (0..8).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(1, 0), draw(1, 0));
        assert_ne!(draw(1, 0), draw(1, 1));
        assert_ne!(draw(1, 0), draw(2, 0));
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = Rng::for_connection(3, 9);
        let mut seen = [false; 10];
        for _ in 0..10_000 {
            let n = rng.below(10);
            assert!(n < 10);
            seen[n as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn keys_are_prefix_and_index() {
        let keys = KeySpace::new("bench:", 1000);
        assert_eq!(&keys.key(0)[..], b"bench:0");
        assert_eq!(&keys.key(999)[..], b"bench:999");
        assert_eq!(&keys.key(u64::MAX)[..], b"bench:18446744073709551615");
        assert_eq!(keys.longest_key_len(), "bench:999".len());
        assert_eq!(KeySpace::new("", 1).longest_key_len(), 1);
    }

    #[test]
    fn values_are_a_pure_function_of_key_and_length() {
        let a = value_for(b"bench:1", 100);
        assert_eq!(a.len(), 100);
        assert_eq!(a, value_for(b"bench:1", 100));
        assert_ne!(a, value_for(b"bench:2", 100));
        assert!(a.iter().all(|b| VALUE_ALPHABET.contains(b)));
        assert!(value_for(b"k", 0).is_empty());
        assert_eq!(value_for(b"k", 1_000_001).len(), 1_000_001);
    }

    #[test]
    fn verification_accepts_only_the_keys_value() {
        let key = b"bench:42";
        let value = value_for(key, 100);
        assert!(value_matches(key, &value));
        assert!(value_matches(key, &value_for(key, 7)), "another run's size");
        assert!(value_matches(key, b""), "an empty value of length 0");

        assert!(!value_matches(b"bench:43", &value), "another key's value");
        assert!(!value_matches(key, &value[..99]), "truncated");
        let mut padded = value.to_vec();
        padded.push(b'A');
        assert!(!value_matches(key, &padded), "padded");
        let mut flipped = value.to_vec();
        flipped[57] = if flipped[57] == b'A' { b'B' } else { b'A' };
        assert!(!value_matches(key, &flipped), "one byte changed");
    }
}
