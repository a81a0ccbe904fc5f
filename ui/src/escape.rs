//! The HTML escaper of every template (set in `askama.toml`): `& < > " '` as `&amp;`,
//! `&lt;`, `&gt;`, `&quot;` and `&#39;`, safe in text and in quoted attribute values.

use std::fmt::{self, Write};

/// HTML escaping with named entities.
#[derive(Debug, Clone, Copy, Default)]
pub struct Html;

impl askama::filters::Escaper for Html {
    fn write_escaped_str<W: Write>(&self, mut dest: W, s: &str) -> fmt::Result {
        let mut last = 0;
        for (i, b) in s.bytes().enumerate() {
            let entity = match b {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                b'\'' => "&#39;",
                _ => continue,
            };
            dest.write_str(&s[last..i])?;
            dest.write_str(entity)?;
            last = i + 1;
        }
        dest.write_str(&s[last..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use askama::filters::Escaper;

    #[test]
    fn escapes_markup() {
        let mut out = String::new();
        Html.write_escaped_str(&mut out, r#"<a href="x" title='y'>&é</a>"#)
            .unwrap();
        assert_eq!(
            out,
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;é&lt;/a&gt;"
        );
    }
}
