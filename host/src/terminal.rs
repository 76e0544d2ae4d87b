//! Text for the terminal from sources sparkhost does not control (a guest's
//! name, description, phase names, error messages, a server's error body):
//! control characters are shown escaped, so a workload cannot move the
//! cursor, recolour or retitle the user's terminal. Newlines and tabs stay.

use std::borrow::Cow;

/// `s` with every control character except `\n` and `\t` escaped (`\u{1b}`).
pub fn safe(s: &str) -> Cow<'_, str> {
    let bad = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !s.chars().any(bad) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::safe;

    #[test]
    fn escapes_control_sequences_and_keeps_layout() {
        assert_eq!(safe("main\tphase\n"), "main\tphase\n");
        assert_eq!(
            safe("\u{1b}[2J\u{1b}]0;pwned\u{7}x"),
            "\\u{1b}[2J\\u{1b}]0;pwned\\u{7}x"
        );
        assert_eq!(safe("cr\rover"), "cr\\u{d}over");
        assert_eq!(safe("\u{9b}31m"), "\\u{9b}31m", "C1 CSI too");
        assert!(matches!(safe("plain"), std::borrow::Cow::Borrowed(_)));
    }
}
