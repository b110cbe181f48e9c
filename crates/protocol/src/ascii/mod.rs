//! The ascii framing: memcached text and meta commands. (being written)
