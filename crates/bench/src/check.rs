//! Verification of every reply against the request it answers.
//!
//! A load generator that only counts replies will happily report a fast server that returns
//! the wrong data. So each request carries what it expects, and the replies are matched to
//! it one by one. Only this module decides what counts as a hit, a miss or an error.

use std::fmt::Write as _;

use bytes::Bytes;

use crate::workload::{Op, value_matches};

/// The client flags every bench `set` stores, checked again on every hit.
pub(crate) const FLAGS: u32 = 0;

/// One reply element, reduced to what the bench tells apart.
///
/// The codec's response type has a variant for every memcached reply; the bench only needs
/// these five cases, and keeping its own enum keeps verification testable without a codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `VALUE <key> <flags> <bytes>` and its data block.
    Value { key: Bytes, flags: u32, data: Bytes },
    /// `END`, closing a retrieval.
    End,
    /// `STORED`.
    Stored,
    /// `ERROR`, `CLIENT_ERROR …` or `SERVER_ERROR …`: the server refused the request. The
    /// text is the reply line as the server sent it.
    Refused(String),
    /// Any other well-formed reply (for example `NOT_STORED`), named for the report.
    Other(String),
}

/// What a request in flight is waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expect {
    /// A `set`, which must be answered `STORED`.
    Set { key: Bytes },
    /// A single-key `get`, answered by at most one `VALUE` for that key, then `END`.
    Get { key: Bytes },
}

impl Expect {
    pub(crate) fn op(&self) -> Op {
        match self {
            Self::Set { .. } => Op::Set,
            Self::Get { .. } => Op::Get,
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Stored,
    Hit,
    Miss,
    /// Anything wrong, with a one-line description for the report.
    Error(String),
}

/// Whether a request needs more reply elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    More,
    Done(Outcome),
}

/// Matches the reply elements of one request, in order.
#[derive(Debug)]
pub(crate) struct Check {
    expect: Expect,
    values: u32,
    problem: Option<String>,
}

impl Check {
    pub(crate) fn new(expect: Expect) -> Self {
        Self {
            expect,
            values: 0,
            problem: None,
        }
    }

    /// Takes the next reply element addressed to this request.
    pub(crate) fn feed(&mut self, reply: Reply) -> Step {
        match &self.expect {
            Expect::Set { key } => Step::Done(match reply {
                Reply::Stored => Outcome::Stored,
                other => Outcome::Error(format!(
                    "set {}: expected STORED, got {}",
                    show(key),
                    describe(&other)
                )),
            }),
            Expect::Get { key } => match reply {
                Reply::Value {
                    key: got_key,
                    flags,
                    data,
                } => {
                    self.values += 1;
                    if self.problem.is_none() {
                        self.problem = if self.values > 1 {
                            Some(format!("get {}: more than one VALUE", show(key)))
                        } else if got_key != *key {
                            Some(format!(
                                "get {}: VALUE carried key {}",
                                show(key),
                                show(&got_key)
                            ))
                        } else if flags != FLAGS {
                            Some(format!(
                                "get {}: flags {flags}, expected {FLAGS}",
                                show(key)
                            ))
                        } else if !value_matches(key, &data) {
                            Some(format!(
                                "get {}: wrong value ({} bytes: {})",
                                show(key),
                                data.len(),
                                show(&data)
                            ))
                        } else {
                            None
                        };
                    }
                    Step::More
                }
                Reply::End => Step::Done(match self.problem.take() {
                    Some(problem) => Outcome::Error(problem),
                    None if self.values == 1 => Outcome::Hit,
                    None => Outcome::Miss,
                }),
                other => Step::Done(Outcome::Error(format!(
                    "get {}: expected VALUE or END, got {}",
                    show(key),
                    describe(&other)
                ))),
            },
        }
    }
}

fn describe(reply: &Reply) -> String {
    match reply {
        Reply::Value { key, .. } => format!("VALUE {}", show(key)),
        Reply::End => "END".to_owned(),
        Reply::Stored => "STORED".to_owned(),
        Reply::Refused(line) | Reply::Other(line) => show(line.as_bytes()),
    }
}

/// Renders untrusted bytes for a one-line report: printable ASCII as is, the rest escaped,
/// and long input cut, so a garbage reply cannot flood the terminal.
pub(crate) fn show(bytes: &[u8]) -> String {
    const MAX: usize = 48;
    let mut out = String::with_capacity(bytes.len().min(MAX) + 2);
    out.push('"');
    for &b in bytes.iter().take(MAX) {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
    if bytes.len() > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::value_for;

    fn get(key: &str) -> Check {
        Check::new(Expect::Get {
            key: Bytes::copy_from_slice(key.as_bytes()),
        })
    }

    fn value(key: &str, data: Bytes) -> Reply {
        Reply::Value {
            key: Bytes::copy_from_slice(key.as_bytes()),
            flags: FLAGS,
            data,
        }
    }

    fn error_text(step: Step) -> String {
        match step {
            Step::Done(Outcome::Error(text)) => text,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn set_needs_stored() {
        let set = || {
            Check::new(Expect::Set {
                key: Bytes::from_static(b"k"),
            })
        };
        assert_eq!(set().feed(Reply::Stored), Step::Done(Outcome::Stored));
        let text = error_text(set().feed(Reply::Refused("SERVER_ERROR out of memory".into())));
        assert_eq!(
            text,
            r#"set "k": expected STORED, got "SERVER_ERROR out of memory""#
        );
        let text = error_text(set().feed(Reply::Other("NOT_STORED".into())));
        assert!(text.contains("NOT_STORED"), "{text}");
        error_text(set().feed(Reply::End));
    }

    #[test]
    fn get_hit_and_miss() {
        let mut check = get("bench:1");
        assert_eq!(
            check.feed(value("bench:1", value_for(b"bench:1", 100))),
            Step::More
        );
        assert_eq!(check.feed(Reply::End), Step::Done(Outcome::Hit));

        assert_eq!(get("bench:1").feed(Reply::End), Step::Done(Outcome::Miss));
    }

    #[test]
    fn get_wrong_value_key_flags_or_count_is_an_error() {
        let mut check = get("bench:1");
        assert_eq!(
            check.feed(value("bench:1", value_for(b"bench:2", 100))),
            Step::More
        );
        assert!(error_text(check.feed(Reply::End)).contains("wrong value (100 bytes"));

        let mut check = get("bench:1");
        check.feed(value("bench:2", value_for(b"bench:2", 100)));
        assert!(error_text(check.feed(Reply::End)).contains(r#"VALUE carried key "bench:2""#));

        let mut check = get("bench:1");
        check.feed(Reply::Value {
            key: Bytes::from_static(b"bench:1"),
            flags: 5,
            data: value_for(b"bench:1", 10),
        });
        assert!(error_text(check.feed(Reply::End)).contains("flags 5"));

        let mut check = get("bench:1");
        let good = value("bench:1", value_for(b"bench:1", 10));
        check.feed(good.clone());
        assert_eq!(check.feed(good), Step::More, "keeps reading until END");
        assert!(error_text(check.feed(Reply::End)).contains("more than one VALUE"));
    }

    #[test]
    fn get_refused_or_odd_reply_is_an_error() {
        let text = error_text(get("k").feed(Reply::Refused("ERROR".into())));
        assert_eq!(text, r#"get "k": expected VALUE or END, got "ERROR""#);
        error_text(get("k").feed(Reply::Stored));
    }

    #[test]
    fn show_escapes_and_truncates() {
        assert_eq!(show(b"a\"b\\c\r\n\x00"), r#""a\"b\\c\x0d\x0a\x00""#);
        let long = show(&[b'x'; 100]);
        assert!(long.ends_with("\"…"));
        assert_eq!(long.chars().filter(|&c| c == 'x').count(), 48);
    }
}
