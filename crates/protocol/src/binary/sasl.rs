//! The SASL PLAIN mechanism's message format (RFC 4616).

/// Longest authzid, authcid or password RFC 4616 allows, in octets.
const MAX_FIELD_LEN: usize = 255;

/// Splits a SASL PLAIN message, `[authzid] NUL authcid NUL passwd`, into
/// `(authzid, authcid, passwd)`.
///
/// This lives in the protocol crate, not in the gateway's auth code, because it is wire
/// format: the credentials a client sends in `SASL Auth` with mechanism `PLAIN`. Returns
/// `None` unless the message has exactly two NULs, a non-empty authcid and password, and every
/// field within 255 octets. The authzid may be empty (it usually is: "act as myself"). The
/// fields are returned as bytes; RFC 4616 says they are UTF-8, and comparing them with
/// configured credentials byte for byte needs no decoding.
pub fn parse_sasl_plain(data: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let mut parts = data.splitn(3, |&b| b == 0);
    let authzid = parts.next()?;
    let authcid = parts.next()?;
    let passwd = parts.next()?;
    let well_formed = !authcid.is_empty()
        && !passwd.is_empty()
        && !passwd.contains(&0)
        && [authzid, authcid, passwd]
            .iter()
            .all(|field| field.len() <= MAX_FIELD_LEN);
    well_formed.then_some((authzid, authcid, passwd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_three_fields() {
        assert_eq!(
            parse_sasl_plain(b"\0alice\0secret"),
            Some((&b""[..], &b"alice"[..], &b"secret"[..]))
        );
        assert_eq!(
            parse_sasl_plain(b"admin\0alice\0s e c r e t"),
            Some((&b"admin"[..], &b"alice"[..], &b"s e c r e t"[..]))
        );
    }

    #[test]
    fn refuses_malformed_messages() {
        for bad in [
            &b""[..],
            b"alice",
            b"\0alice",
            b"\0\0secret",
            b"\0alice\0",
            b"\0alice\0sec\0ret",
        ] {
            assert_eq!(parse_sasl_plain(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn enforces_field_lengths() {
        let long = vec![b'x'; MAX_FIELD_LEN + 1];
        let edge = vec![b'x'; MAX_FIELD_LEN];
        let msg = |a: &[u8], c: &[u8], p: &[u8]| [a, b"\0", c, b"\0", p].concat();
        assert!(parse_sasl_plain(&msg(&edge, &edge, &edge)).is_some());
        assert!(parse_sasl_plain(&msg(&long, b"u", b"p")).is_none());
        assert!(parse_sasl_plain(&msg(b"", &long, b"p")).is_none());
        assert!(parse_sasl_plain(&msg(b"", b"u", &long)).is_none());
    }
}
