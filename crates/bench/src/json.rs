//! A minimal JSON object writer for `--json`.
//!
//! The report is one flat-ish object of numbers and short strings; writing it by hand keeps
//! serde out of the dependency tree for a single print.

use std::fmt::Write as _;

/// Builds one JSON object, field by field, in insertion order.
#[derive(Debug, Default)]
pub(crate) struct Object {
    text: String,
}

impl Object {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn key(&mut self, key: &str) {
        self.text.push(if self.text.is_empty() { '{' } else { ',' });
        push_string(&mut self.text, key);
        self.text.push(':');
    }

    pub(crate) fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        push_string(&mut self.text, value);
        self
    }

    pub(crate) fn u64(mut self, key: &str, value: u64) -> Self {
        self.key(key);
        let _ = write!(self.text, "{value}");
        self
    }

    /// Fractional numbers with three decimals: enough for rates and seconds, and never in
    /// exponent form. JSON has no NaN or infinity, so those become `null`.
    pub(crate) fn f64(mut self, key: &str, value: f64) -> Self {
        self.key(key);
        if value.is_finite() {
            let _ = write!(self.text, "{value:.3}");
        } else {
            self.text.push_str("null");
        }
        self
    }

    pub(crate) fn opt_u64(self, key: &str, value: Option<u64>) -> Self {
        match value {
            Some(v) => self.u64(key, v),
            None => self.raw(key, "null"),
        }
    }

    pub(crate) fn opt_str(self, key: &str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.str(key, v),
            None => self.raw(key, "null"),
        }
    }

    pub(crate) fn object(self, key: &str, value: Object) -> Self {
        let text = value.finish();
        self.raw(key, &text)
    }

    pub(crate) fn opt_object(self, key: &str, value: Option<Object>) -> Self {
        match value {
            Some(v) => self.object(key, v),
            None => self.raw(key, "null"),
        }
    }

    pub(crate) fn strings(mut self, key: &str, values: &[String]) -> Self {
        self.key(key);
        self.text.push('[');
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                self.text.push(',');
            }
            push_string(&mut self.text, value);
        }
        self.text.push(']');
        self
    }

    /// Appends already-encoded JSON.
    fn raw(mut self, key: &str, json: &str) -> Self {
        self.key(key);
        self.text.push_str(json);
        self
    }

    pub(crate) fn finish(mut self) -> String {
        if self.text.is_empty() {
            self.text.push('{');
        }
        self.text.push('}');
        self.text
    }
}

fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_kind_of_field() {
        let inner = Object::new().u64("n", 1);
        let text = Object::new()
            .str("s", "a\"b\\c\n\u{1}é")
            .u64("u", 18_446_744_073_709_551_615)
            .f64("f", 1234.56789)
            .f64("nan", f64::NAN)
            .opt_u64("none", None)
            .opt_str("some", Some("x"))
            .object("o", inner)
            .opt_object("no", None)
            .strings("list", &["x".to_owned(), "y\"".to_owned()])
            .strings("empty", &[])
            .finish();
        assert_eq!(
            text,
            r#"{"s":"a\"b\\c\n\u0001é","u":18446744073709551615,"f":1234.568,"nan":null,"none":null,"some":"x","o":{"n":1},"no":null,"list":["x","y\""],"empty":[]}"#
        );
        assert_eq!(Object::new().finish(), "{}");
        assert_eq!(
            Object::new().f64("big", 1e22).finish(),
            r#"{"big":10000000000000000000000.000}"#
        );
    }
}
