//! Opcode bytes of the commands memcached serves over the binary protocol.
//!
//! Opcodes stay plain `u8` constants rather than an enum because a request may carry any byte:
//! unknown ones must still be echoed back in an "Unknown command" reply, and the response
//! header copies the request's opcode byte verbatim (a `GetQ` hit answers with opcode `0x09`).

/// Get a value; a miss answers "Not found".
pub const GET: u8 = 0x00;
/// Store a value unconditionally (or under CAS when the header's cas is non-zero).
pub const SET: u8 = 0x01;
/// Store only if the key is absent.
pub const ADD: u8 = 0x02;
/// Store only if the key is present.
pub const REPLACE: u8 = 0x03;
/// Remove a key.
pub const DELETE: u8 = 0x04;
/// Add to a counter, optionally creating it.
pub const INCREMENT: u8 = 0x05;
/// Subtract from a counter (never below zero), optionally creating it.
pub const DECREMENT: u8 = 0x06;
/// Close the connection after replying.
pub const QUIT: u8 = 0x07;
/// Invalidate all items, now or at a given time.
pub const FLUSH: u8 = 0x08;
/// Quiet get: a miss sends nothing.
pub const GETQ: u8 = 0x09;
/// No operation; forces quiet commands' pending replies out.
pub const NOOP: u8 = 0x0a;
/// Server version string.
pub const VERSION: u8 = 0x0b;
/// Get that also returns the key.
pub const GETK: u8 = 0x0c;
/// Quiet get that also returns the key.
pub const GETKQ: u8 = 0x0d;
/// Append data to an existing value.
pub const APPEND: u8 = 0x0e;
/// Prepend data to an existing value.
pub const PREPEND: u8 = 0x0f;
/// Statistics, answered as a series of key/value packets ending with an empty key.
pub const STAT: u8 = 0x10;
/// Quiet set.
pub const SETQ: u8 = 0x11;
/// Quiet add.
pub const ADDQ: u8 = 0x12;
/// Quiet replace.
pub const REPLACEQ: u8 = 0x13;
/// Quiet delete.
pub const DELETEQ: u8 = 0x14;
/// Quiet increment.
pub const INCREMENTQ: u8 = 0x15;
/// Quiet decrement.
pub const DECREMENTQ: u8 = 0x16;
/// Quiet quit: close without replying.
pub const QUITQ: u8 = 0x17;
/// Quiet flush.
pub const FLUSHQ: u8 = 0x18;
/// Quiet append.
pub const APPENDQ: u8 = 0x19;
/// Quiet prepend.
pub const PREPENDQ: u8 = 0x1a;
/// Set the server's logging verbosity.
pub const VERBOSITY: u8 = 0x1b;
/// Change an item's expiry without fetching it.
pub const TOUCH: u8 = 0x1c;
/// Get and touch.
pub const GAT: u8 = 0x1d;
/// Quiet get and touch.
pub const GATQ: u8 = 0x1e;
/// List the SASL mechanisms the server accepts.
pub const SASL_LIST_MECHS: u8 = 0x20;
/// Start a SASL authentication.
pub const SASL_AUTH: u8 = 0x21;
/// Continue a multi-step SASL authentication.
pub const SASL_STEP: u8 = 0x22;
/// Get and touch, returning the key.
pub const GATK: u8 = 0x23;
/// Quiet get and touch, returning the key.
pub const GATKQ: u8 = 0x24;

/// The command's name as memcached's documentation spells it, for logs and stats; `None`
/// for opcodes memcached does not serve.
pub fn name(opcode: u8) -> Option<&'static str> {
    Some(match opcode {
        GET => "Get",
        SET => "Set",
        ADD => "Add",
        REPLACE => "Replace",
        DELETE => "Delete",
        INCREMENT => "Increment",
        DECREMENT => "Decrement",
        QUIT => "Quit",
        FLUSH => "Flush",
        GETQ => "GetQ",
        NOOP => "No-op",
        VERSION => "Version",
        GETK => "GetK",
        GETKQ => "GetKQ",
        APPEND => "Append",
        PREPEND => "Prepend",
        STAT => "Stat",
        SETQ => "SetQ",
        ADDQ => "AddQ",
        REPLACEQ => "ReplaceQ",
        DELETEQ => "DeleteQ",
        INCREMENTQ => "IncrementQ",
        DECREMENTQ => "DecrementQ",
        QUITQ => "QuitQ",
        FLUSHQ => "FlushQ",
        APPENDQ => "AppendQ",
        PREPENDQ => "PrependQ",
        VERBOSITY => "Verbosity",
        TOUCH => "Touch",
        GAT => "GAT",
        GATQ => "GATQ",
        SASL_LIST_MECHS => "SASL list mechs",
        SASL_AUTH => "SASL Auth",
        SASL_STEP => "SASL Step",
        GATK => "GATK",
        GATKQ => "GATKQ",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_served_opcodes_have_names() {
        let named: Vec<u8> = (0..=u8::MAX).filter(|&op| name(op).is_some()).collect();
        let mut expected: Vec<u8> = (0x00..=0x1e).chain(0x20..=0x24).collect();
        expected.sort_unstable();
        assert_eq!(named, expected);
    }
}
