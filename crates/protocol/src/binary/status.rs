//! Response status codes and the text memcached sends with each error.

/// The status field of a binary response.
///
/// It exists as a closed enum so the gateway cannot invent a code a client library would not
/// understand; the values and error texts are memcached's (`protocol_binary.h`,
/// `write_bin_error` in `proto_bin.c`), because clients such as libmemcached match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Status {
    /// Success.
    NoError = 0x00,
    /// The key does not exist (or a replace found nothing to replace).
    KeyNotFound = 0x01,
    /// A CAS mismatch, or an add found the key already present.
    KeyExists = 0x02,
    /// The value is larger than the server accepts.
    ValueTooLarge = 0x03,
    /// The frame's lengths or fields do not fit the command.
    InvalidArguments = 0x04,
    /// The item was not stored (append/prepend to a missing key, for example).
    ItemNotStored = 0x05,
    /// incr/decr on a value that is not a decimal number.
    NonNumeric = 0x06,
    /// Authentication is required or failed.
    AuthError = 0x20,
    /// A multi-step SASL exchange needs another step.
    AuthContinue = 0x21,
    /// The opcode is not one the server serves.
    UnknownCommand = 0x81,
    /// The server could not allocate memory for the item.
    OutOfMemory = 0x82,
    /// The command is understood but not supported here.
    NotSupported = 0x83,
    /// The server hit an internal error.
    InternalError = 0x84,
    /// The server is too busy; retry later.
    Busy = 0x85,
    /// A temporary failure, such as a cluster map change in progress; retry later.
    TemporaryFailure = 0x86,
}

impl Status {
    /// Every status, in code order. Handy for tests and for decoding.
    pub const ALL: [Status; 15] = [
        Status::NoError,
        Status::KeyNotFound,
        Status::KeyExists,
        Status::ValueTooLarge,
        Status::InvalidArguments,
        Status::ItemNotStored,
        Status::NonNumeric,
        Status::AuthError,
        Status::AuthContinue,
        Status::UnknownCommand,
        Status::OutOfMemory,
        Status::NotSupported,
        Status::InternalError,
        Status::Busy,
        Status::TemporaryFailure,
    ];

    /// The status code as sent on the wire.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The status for a wire code, or `None` for a code this protocol version does not define.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    /// Whether this status reports a failure. Quiet commands stay quiet only on success, so
    /// this is what decides whether a quiet command's reply is sent.
    pub fn is_error(self) -> bool {
        self != Status::NoError
    }

    /// The text memcached puts in the value of an error response with this status.
    ///
    /// Success and `AuthContinue` carry no text (an auth-continue reply carries the SASL
    /// challenge instead). The codes memcached never sends itself get a text in the same
    /// style, so that every error a client sees explains itself.
    pub fn message(self) -> &'static str {
        match self {
            Status::NoError | Status::AuthContinue => "",
            Status::KeyNotFound => "Not found",
            Status::KeyExists => "Data exists for key.",
            Status::ValueTooLarge => "Too large.",
            Status::InvalidArguments => "Invalid arguments",
            Status::ItemNotStored => "Not stored.",
            Status::NonNumeric => "Non-numeric server-side value for incr or decr",
            Status::AuthError => "Auth failure.",
            Status::UnknownCommand => "Unknown command",
            Status::OutOfMemory => "Out of memory",
            Status::NotSupported => "Not supported",
            Status::InternalError => "Internal error",
            Status::Busy => "Busy",
            Status::TemporaryFailure => "Temporary failure",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_match_memcached() {
        for s in Status::ALL {
            assert_eq!(Status::from_code(s.code()), Some(s));
        }
        assert_eq!(Status::NoError.code(), 0x00);
        assert_eq!(Status::ValueTooLarge.code(), 0x03);
        assert_eq!(Status::AuthError.code(), 0x20);
        assert_eq!(Status::AuthContinue.code(), 0x21);
        assert_eq!(Status::UnknownCommand.code(), 0x81);
        assert_eq!(Status::TemporaryFailure.code(), 0x86);
        assert_eq!(Status::from_code(0x07), None);
        assert_eq!(Status::from_code(0xffff), None);
    }

    #[test]
    fn memcached_error_texts() {
        assert_eq!(Status::KeyNotFound.message(), "Not found");
        assert_eq!(Status::KeyExists.message(), "Data exists for key.");
        assert_eq!(Status::ValueTooLarge.message(), "Too large.");
        assert_eq!(Status::InvalidArguments.message(), "Invalid arguments");
        assert_eq!(Status::ItemNotStored.message(), "Not stored.");
        assert_eq!(
            Status::NonNumeric.message(),
            "Non-numeric server-side value for incr or decr"
        );
        assert_eq!(Status::AuthError.message(), "Auth failure.");
        assert_eq!(Status::UnknownCommand.message(), "Unknown command");
        assert_eq!(Status::OutOfMemory.message(), "Out of memory");
        assert_eq!(Status::NoError.message(), "");
        assert!(!Status::NoError.is_error());
        assert!(Status::ALL[1..].iter().all(|s| s.is_error()));
    }
}
