//! Everything the CLI prints passes through here. What it prints comes from a
//! server (reasons and comments other people typed, error messages quoting
//! their input), and a terminal acts on control characters: a requester must
//! not be able to hide or rewrite what an approver reads. Whatever the server
//! returns, only printable text reaches the terminal; the rule for what is
//! printable is the core's ([`airlock_core::text`]).

use airlock_core::text::{allowed, escape_for_terminal, TextKind};

/// Output text with every character a terminal would act on escaped; line
/// breaks the CLI itself put between lines are kept.
pub fn printable(text: &str) -> String {
    text.split('\n')
        .map(escape_for_terminal)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One value on one line: a line break inside it is escaped too, so a value
/// cannot start a line of its own that looks like the CLI's.
pub fn one_line(value: &str) -> String {
    escape_for_terminal(value)
}

/// Serialized JSON with every character a terminal would act on written as
/// a JSON `\u` escape. Such characters can only stand inside strings (JSON's
/// own whitespace is spaces and line breaks), so the document means the same.
pub fn json_safe(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c == '\n' || allowed(c, TextKind::Line) {
            out.push(c);
        } else {
            // Every character the rule refuses is in the Basic Multilingual Plane.
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// `println!` for the CLI: formats, then makes the text printable.
macro_rules! say {
    () => { println!() };
    ($($arg:tt)*) => { println!("{}", $crate::terminal::printable(&format!($($arg)*))) };
}

/// `eprintln!` for the CLI: formats, then makes the text printable.
macro_rules! say_err {
    ($($arg:tt)*) => { eprintln!("{}", $crate::terminal::printable(&format!($($arg)*))) };
}

pub(crate) use {say, say_err};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_a_terminal_acts_on_gets_through() {
        let hostile = "ok\u{1b}]0;owned\u{7}\u{1b}[2K\r\u{9b}31m\u{202e}";
        for shown in [printable(hostile), one_line(hostile)] {
            assert!(
                shown.chars().all(|c| allowed(c, TextKind::Line)),
                "{shown:?}"
            );
        }
        assert_eq!(printable("a\nb"), "a\nb");
        assert_eq!(one_line("a\nb"), "a\\nb");
    }

    #[test]
    fn json_stays_the_same_document() {
        let value = serde_json::json!({"reason": "x\u{1b}[1Ay\u{9b}\u{202e}\n"});
        let text = serde_json::to_string_pretty(&value).unwrap();
        let safe = json_safe(&text);
        assert!(safe
            .chars()
            .all(|c| c == '\n' || allowed(c, TextKind::Line)));
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, value);
    }
}
