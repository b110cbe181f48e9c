//! `lru_crawler`: the commands operators' tools use to reclaim expired items now and to
//! list every key (`memcached-tool dump`, `keys`), and the crawler's switches and knobs.
//!
//! memcached's crawler walks its slab classes' LRUs; the argument names which classes, or
//! `all`, or (for a dump) `hash`, a walk of the hash table. The wire format of a dump entry
//! is fixed by what those tools parse, so it lives here with its decoder, which lets the
//! two be tested against each other.

use bytes::{Bytes, BytesMut};

use super::tokens::{parse_i64, parse_u64, put_i64, put_u64};
use super::{Frame, Outcome, Rejection, Request};

/// The highest slab class id memcached accepts (it has 63 classes, numbered from 1).
pub const MAX_CLASS_ID: u8 = 63;

/// The reply to a crawler command naming a class that cannot exist.
pub const BAD_CLASS: &[u8] = b"BADCLASS invalid class id\r\n";

/// The longest pause `lru_crawler sleep` accepts, in microseconds (memcached's limit).
pub const MAX_CRAWLER_SLEEP_MICROS: u32 = 1_000_000;

/// An `lru_crawler` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrawlerRequest {
    /// `lru_crawler crawl <classes>`: reclaim the named classes' expired items now.
    Crawl(CrawlTarget),
    /// `lru_crawler metadump <classes>`: one [`MetadumpEntry`] line per live item, then
    /// `END`.
    Metadump(CrawlTarget),
    /// `lru_crawler enable`: start the crawler (memcached answers `ERROR failed to start
    /// lru crawler thread` if it already runs).
    Enable,
    /// `lru_crawler disable`: stop it; `crawl` and `metadump` are refused until enabled.
    Disable,
    /// `lru_crawler sleep <µs>`: the crawler's pause between steps, at most
    /// [`MAX_CRAWLER_SLEEP_MICROS`].
    Sleep(u32),
    /// `lru_crawler tocrawl <n>`: at most `n` items per step of the crawl; 0 for no limit.
    /// (memcached reads any 64-bit count; a larger one than 32 bits holds is no limit.)
    ToCrawl(u32),
}

/// Which items a crawler command covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrawlTarget {
    /// `all`.
    All,
    /// `hash` (metadump only): every item, found through the hash table.
    Hash,
    /// Slab class ids from a comma-separated list, each in `1..=MAX_CLASS_ID`.
    Classes(Vec<u8>),
    /// An argument that names no valid class, as given; answered with [`BAD_CLASS`].
    BadClass(Bytes),
}

/// `lru_crawler <crawl|metadump> <classes>`, `lru_crawler <enable|disable>`,
/// `lru_crawler <sleep|tocrawl> <n>`. Any other subcommand, or another number of
/// arguments, is `ERROR`, as memcached answers it; a number it cannot read is
/// `CLIENT_ERROR bad command line format`.
pub(super) fn parse(frame: &Frame<'_>) -> Outcome {
    let toks = &frame.tokens;
    let bad_number = || frame.line_only(Err(Rejection::client("bad command line format")));
    let request = match (toks.get(1), toks.get(2), toks.len()) {
        (Some(b"enable"), None, 2) => CrawlerRequest::Enable,
        (Some(b"disable"), None, 2) => CrawlerRequest::Disable,
        (Some(b"crawl"), Some(argument), 3) => CrawlerRequest::Crawl(target(argument, false)),
        (Some(b"metadump"), Some(argument), 3) => CrawlerRequest::Metadump(target(argument, true)),
        (Some(b"sleep"), Some(argument), 3) => match parse_u64(argument) {
            Some(micros) if micros <= u64::from(MAX_CRAWLER_SLEEP_MICROS) => {
                CrawlerRequest::Sleep(micros as u32)
            }
            Some(_) => {
                return frame.line_only(Err(Rejection::client("sleep must be one second or less")));
            }
            None => return bad_number(),
        },
        (Some(b"tocrawl"), Some(argument), 3) => match parse_u64(argument) {
            Some(count) => CrawlerRequest::ToCrawl(u32::try_from(count).unwrap_or(0)),
            None => return bad_number(),
        },
        _ => return frame.line_only(Err(Rejection::unknown())),
    };
    frame.line_only(Ok(Request::LruCrawler(request)))
}

/// Reads a class argument the way memcached does: `all`, `hash` where allowed, or ids
/// separated by commas (empty items skipped); anything else is a bad class.
fn target(argument: &[u8], hash_allowed: bool) -> CrawlTarget {
    match argument {
        b"all" => return CrawlTarget::All,
        b"hash" if hash_allowed => return CrawlTarget::Hash,
        _ => {}
    }
    let ids: Option<Vec<u8>> = argument
        .split(|&b| b == b',')
        .filter(|id| !id.is_empty())
        .map(|id| {
            parse_u64(id)
                .and_then(|id| u8::try_from(id).ok())
                .filter(|id| (1..=MAX_CLASS_ID).contains(id))
        })
        .collect();
    match ids {
        Some(ids) if !ids.is_empty() => CrawlTarget::Classes(ids),
        _ => CrawlTarget::BadClass(Bytes::copy_from_slice(argument)),
    }
}

pub(super) fn encode(request: &CrawlerRequest, out: &mut BytesMut) {
    out.extend_from_slice(b"lru_crawler ");
    match request {
        CrawlerRequest::Crawl(target) => {
            out.extend_from_slice(b"crawl ");
            encode_target(target, out);
        }
        CrawlerRequest::Metadump(target) => {
            out.extend_from_slice(b"metadump ");
            encode_target(target, out);
        }
        CrawlerRequest::Enable => out.extend_from_slice(b"enable"),
        CrawlerRequest::Disable => out.extend_from_slice(b"disable"),
        CrawlerRequest::Sleep(micros) => {
            out.extend_from_slice(b"sleep ");
            put_u64(out, u64::from(*micros));
        }
        CrawlerRequest::ToCrawl(count) => {
            out.extend_from_slice(b"tocrawl ");
            put_u64(out, u64::from(*count));
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn encode_target(target: &CrawlTarget, out: &mut BytesMut) {
    match target {
        CrawlTarget::All => out.extend_from_slice(b"all"),
        CrawlTarget::Hash => out.extend_from_slice(b"hash"),
        CrawlTarget::Classes(ids) => {
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b",");
                }
                put_u64(out, u64::from(*id));
            }
        }
        CrawlTarget::BadClass(argument) => out.extend_from_slice(argument),
    }
}

/// One item of a metadump, as memcached 1.6 prints it:
/// `key=<uri-encoded> exp=<unix time or -1> la=<unix time> cas=<n> fetch=<yes|no> cls=<n>
/// size=<n>`, ended by a bare `\n` (the `END` after the last one has `\r\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadumpEntry {
    /// The key, raw (encoding is the wire's business).
    pub key: Bytes,
    /// Absolute expiry in Unix seconds; `-1` for never.
    pub exp: i64,
    /// Last access, Unix seconds.
    pub last_access: u64,
    /// CAS unique.
    pub cas: u64,
    /// Fetched since it was written.
    pub fetched: bool,
    /// Slab class.
    pub class: u32,
    /// Bytes the item occupies.
    pub size: u64,
}

/// Appends `entry`'s line.
pub fn encode_metadump_entry(entry: &MetadumpEntry, out: &mut BytesMut) {
    out.extend_from_slice(b"key=");
    uri_encode(&entry.key, out);
    out.extend_from_slice(b" exp=");
    put_i64(out, entry.exp);
    out.extend_from_slice(b" la=");
    put_u64(out, entry.last_access);
    out.extend_from_slice(b" cas=");
    put_u64(out, entry.cas);
    out.extend_from_slice(if entry.fetched {
        b" fetch=yes cls="
    } else {
        b" fetch=no cls="
    });
    put_u64(out, u64::from(entry.class));
    out.extend_from_slice(b" size=");
    put_u64(out, entry.size);
    out.extend_from_slice(b"\n");
}

/// Reads one entry line (without its `\n`); `None` if it is not one.
pub fn decode_metadump_entry(line: &[u8]) -> Option<MetadumpEntry> {
    let mut fields = line.split(|&b| b == b' ');
    let mut field = |name: &[u8]| -> Option<&[u8]> {
        let field = fields.next()?;
        let (found, value) = field.split_at(field.iter().position(|&b| b == b'=')?);
        (found == name).then_some(&value[1..])
    };
    let entry = MetadumpEntry {
        key: uri_decode(field(b"key")?)?,
        exp: parse_i64(field(b"exp")?)?,
        last_access: parse_u64(field(b"la")?)?,
        cas: parse_u64(field(b"cas")?)?,
        fetched: match field(b"fetch")? {
            b"yes" => true,
            b"no" => false,
            _ => return None,
        },
        class: u32::try_from(parse_u64(field(b"cls")?)?).ok()?,
        size: parse_u64(field(b"size")?)?,
    };
    fields.next().is_none().then_some(entry)
}

/// Whether memcached prints `byte` as itself in a dumped key: RFC 3986's unreserved
/// characters; everything else becomes `%XX`.
fn unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Writes `key` as memcached prints keys in metadumps and `watch` logs: RFC 3986's
/// unreserved characters as themselves, every other byte as `%XX`.
pub fn uri_encode(key: &[u8], out: &mut BytesMut) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in key {
        if unreserved(byte) {
            out.extend_from_slice(&[byte]);
        } else {
            out.extend_from_slice(&[
                b'%',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]);
        }
    }
}

fn uri_decode(encoded: &[u8]) -> Option<Bytes> {
    let mut key = Vec::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            key.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            key.push(byte);
            rest = tail;
        }
    }
    Some(Bytes::from(key))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{encoded, ok, rejected};
    use super::*;

    fn metadump(target: CrawlTarget) -> Request {
        Request::LruCrawler(CrawlerRequest::Metadump(target))
    }

    #[test]
    fn targets_read_like_memcached() {
        assert_eq!(
            ok(b"lru_crawler metadump all\r\n"),
            metadump(CrawlTarget::All)
        );
        assert_eq!(
            ok(b"lru_crawler metadump hash\r\n"),
            metadump(CrawlTarget::Hash)
        );
        assert_eq!(
            ok(b"lru_crawler metadump 1,,5,63\r\n"),
            metadump(CrawlTarget::Classes(vec![1, 5, 63]))
        );
        for bad in [&b"0"[..], b"64", b"99", b"1,x", b",", b"-1", b"all,1"] {
            let line = [&b"lru_crawler metadump "[..], bad, b"\r\n"].concat();
            assert_eq!(
                ok(&line),
                metadump(CrawlTarget::BadClass(Bytes::copy_from_slice(bad))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // `hash` is a way to dump, not to crawl.
        assert_eq!(
            ok(b"lru_crawler crawl hash\r\n"),
            Request::LruCrawler(CrawlerRequest::Crawl(CrawlTarget::BadClass(
                Bytes::from_static(b"hash")
            )))
        );
        assert_eq!(
            ok(b"lru_crawler crawl 1\r\n"),
            Request::LruCrawler(CrawlerRequest::Crawl(CrawlTarget::Classes(vec![1])))
        );
    }

    #[test]
    fn switches_and_knobs_read_like_memcached() {
        let crawler = Request::LruCrawler;
        assert_eq!(
            ok(b"lru_crawler enable\r\n"),
            crawler(CrawlerRequest::Enable)
        );
        assert_eq!(
            ok(b"lru_crawler disable\r\n"),
            crawler(CrawlerRequest::Disable)
        );
        assert_eq!(
            ok(b"lru_crawler sleep 0\r\n"),
            crawler(CrawlerRequest::Sleep(0))
        );
        assert_eq!(
            ok(b"lru_crawler sleep 1000000\r\n"),
            crawler(CrawlerRequest::Sleep(1_000_000))
        );
        assert_eq!(
            rejected(b"lru_crawler sleep 1000001\r\n").0,
            "CLIENT_ERROR sleep must be one second or less"
        );
        assert_eq!(
            ok(b"lru_crawler tocrawl 0\r\n"),
            crawler(CrawlerRequest::ToCrawl(0))
        );
        assert_eq!(
            ok(b"lru_crawler tocrawl 4294967295\r\n"),
            crawler(CrawlerRequest::ToCrawl(u32::MAX))
        );
        // memcached takes a 64-bit count here; one beyond 32 bits is no limit at all.
        assert_eq!(
            ok(b"lru_crawler tocrawl 4294967296\r\n"),
            crawler(CrawlerRequest::ToCrawl(0))
        );
        for line in [
            &b"lru_crawler sleep abc\r\n"[..],
            b"lru_crawler sleep -1\r\n",
            b"lru_crawler tocrawl abc\r\n",
            b"lru_crawler tocrawl -5\r\n",
        ] {
            assert_eq!(
                rejected(line).0,
                "CLIENT_ERROR bad command line format",
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn other_forms_are_unknown() {
        for line in [
            &b"lru_crawler\r\n"[..],
            b"lru_crawler metadump\r\n",
            b"lru_crawler metadump all extra\r\n",
            b"lru_crawler enable now\r\n",
            b"lru_crawler sleep\r\n",
            b"lru_crawler tocrawl 1 2\r\n",
            b"lru_crawler restart\r\n",
        ] {
            assert_eq!(
                rejected(line).0,
                "ERROR",
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn requests_encode_as_parsed() {
        for line in [
            &b"lru_crawler metadump all\r\n"[..],
            b"lru_crawler metadump hash\r\n",
            b"lru_crawler crawl 1,2,3\r\n",
            b"lru_crawler metadump 0\r\n",
            b"lru_crawler enable\r\n",
            b"lru_crawler disable\r\n",
            b"lru_crawler sleep 250\r\n",
            b"lru_crawler tocrawl 7\r\n",
        ] {
            assert_eq!(encoded(&ok(line)), line);
        }
    }

    #[test]
    fn entries_print_as_memcached_does() {
        let entry = MetadumpEntry {
            key: Bytes::from_static(b"bench:8071 %\xff"),
            exp: -1,
            last_access: 1_796_301_056,
            cas: 682_376,
            fetched: true,
            class: 1,
            size: 169,
        };
        let mut out = BytesMut::new();
        encode_metadump_entry(&entry, &mut out);
        assert_eq!(
            &out[..],
            b"key=bench%3A8071%20%25%FF exp=-1 la=1796301056 cas=682376 fetch=yes cls=1 size=169\n"
        );
        assert_eq!(
            decode_metadump_entry(out.strip_suffix(b"\n").unwrap()),
            Some(entry)
        );
        // memcached's own line.
        assert_eq!(
            decode_metadump_entry(
                b"key=b%25c exp=1796301505 la=1796301405 cas=2 fetch=no cls=1 size=67"
            )
            .map(|e| (e.key, e.exp, e.fetched)),
            Some((Bytes::from_static(b"b%c"), 1_796_301_505, false))
        );
        assert_eq!(decode_metadump_entry(b"key=a exp=-1"), None);
        assert_eq!(
            decode_metadump_entry(b"key=%4 exp=-1 la=1 cas=1 fetch=no cls=1 size=1"),
            None
        );
    }
}
