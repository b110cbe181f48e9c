//! The binary framing. (being written)
