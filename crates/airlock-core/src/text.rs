//! Free text that people type (reasons, tickets, comments, descriptions) is
//! stored in both databases and shown to other people in terminals and
//! browsers. One rule decides what such text may hold, so a requester cannot
//! hide or rewrite what an approver reads (escape sequences, bidirectional
//! overrides) or make the database refuse a write (NUL).

use std::fmt;

/// What a piece of text is used as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// One line: a ticket reference, a description, a key line.
    Line,
    /// Prose that may run over several lines: a reason or a comment. Line
    /// feeds and tabs are kept; every other control character is refused.
    Note,
}

/// Why a piece of text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("must not contain {found} (character {position}); control characters, escape sequences and bidirectional overrides are refused")]
    Forbidden { found: Shown, position: usize },
    #[error("must be at most {max} characters long")]
    TooLong { max: usize },
}

/// A refused character, named by its code point so the message itself
/// carries nothing that a terminal would act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown(pub char);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            '\0' => " (NUL)",
            '\u{1b}' => " (ESC)",
            '\r' => " (carriage return)",
            '\n' => " (line feed)",
            '\t' => " (tab)",
            '\u{7f}' => " (DEL)",
            _ => "",
        };
        write!(f, "U+{:04X}{name}", u32::from(self.0))
    }
}

/// Whether `c` may appear in text of `kind`.
pub fn allowed(c: char, kind: TextKind) -> bool {
    if kind == TextKind::Note && matches!(c, '\n' | '\t') {
        return true;
    }
    !(c.is_control() || is_invisible_control(c))
}

/// Characters that are not `Cc` but still change how the text around them
/// is shown: bidirectional embeddings, overrides and isolates (the "Trojan
/// Source" characters) and the Unicode line and paragraph separators.
fn is_invisible_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

/// Checks `raw` against the rule for `kind` and a length in characters.
pub fn check(raw: &str, kind: TextKind, max_chars: usize) -> Result<(), TextError> {
    let mut count = 0;
    for (position, c) in raw.chars().enumerate() {
        if !allowed(c, kind) {
            return Err(TextError::Forbidden {
                found: Shown(c),
                position: position + 1,
            });
        }
        count += 1;
        if count > max_chars {
            return Err(TextError::TooLong { max: max_chars });
        }
    }
    Ok(())
}

/// Renders text received from elsewhere so that a terminal shows it and does
/// nothing else: every character [`allowed`] would refuse in a line (line
/// feeds and tabs included) is written as a visible escape.
pub fn escape_for_terminal(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if allowed(c, TextKind::Line) {
            out.push(c);
        } else {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                _ => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            }
        }
    }
    out
}

/// The candidate closest to `word` by edit distance, if it is close enough
/// to be a likely typo (at most a third of the word's length, and at most 3).
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = i;
        let mut left = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let up = row.get(j + 1).copied().unwrap_or(usize::MAX);
            let best = (diagonal + usize::from(ca != *cb))
                .min(up + 1)
                .min(left + 1);
            diagonal = up;
            if let Some(slot) = row.get_mut(j + 1) {
                *slot = best;
            }
            left = best;
        }
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
    }
    row.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_likely_typo_gets_the_closest_name() {
        let names = ["prod-db-admin", "staging-shell"];
        assert_eq!(did_you_mean("prod-db-admn", names), Some("prod-db-admin"));
        assert_eq!(did_you_mean("stagin-shell", names), Some("staging-shell"));
        assert_eq!(did_you_mean("billing", names), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn lines_refuse_every_control_character_and_notes_keep_line_breaks() {
        assert_eq!(check("INC-1", TextKind::Line, 10), Ok(()));
        assert_eq!(check("two\nlines\tand a tab", TextKind::Note, 100), Ok(()));
        for bad in [
            '\0', '\u{1b}', '\r', '\u{7f}', '\u{9b}', '\u{202e}', '\u{2067}', '\u{2028}',
        ] {
            let text = format!("ok{bad}");
            assert_eq!(
                check(&text, TextKind::Note, 100),
                Err(TextError::Forbidden {
                    found: Shown(bad),
                    position: 3
                }),
                "{bad:?}"
            );
        }
        assert!(check("a\nb", TextKind::Line, 10).is_err());
        assert_eq!(
            check("ééé", TextKind::Line, 2),
            Err(TextError::TooLong { max: 2 })
        );
    }

    #[test]
    fn the_message_names_the_character_without_containing_it() {
        let e = check("x\u{1b}[2J", TextKind::Note, 100).unwrap_err();
        let message = e.to_string();
        assert!(message.contains("U+001B (ESC)"), "{message}");
        assert!(message.chars().all(|c| allowed(c, TextKind::Line)));
    }

    #[test]
    fn terminal_escaping_leaves_nothing_a_terminal_acts_on() {
        let hostile = "fine\u{1b}[1A\u{1b}[2K\rapproved\u{202e}txt\u{7}\n";
        let shown = escape_for_terminal(hostile);
        assert!(shown.chars().all(|c| allowed(c, TextKind::Line)), "{shown}");
        assert_eq!(
            shown,
            "fine\\u{1b}[1A\\u{1b}[2K\\rapproved\\u{202e}txt\\u{7}\\n"
        );
        assert_eq!(escape_for_terminal("plain: ünïcode ✓"), "plain: ünïcode ✓");
    }
}
