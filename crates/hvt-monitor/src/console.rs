//! What the guest's console output (`PUTS`) may put on the operator's terminal.
//!
//! The guest is untrusted and the monitor's stdout is often a terminal: raw bytes could move the
//! cursor, rewrite earlier lines, set the window title, reprogram keys or answer terminal
//! queries (ESC and CSI/OSC/DCS sequences, C1 controls, a lone CR that overwrites a line). So the
//! output is filtered as a stream:
//!
//! * kept: printable text (any valid UTF-8 that is not a control character), `\n`, `\t`, and
//!   `\r` directly followed by `\n` (CRLF line ends);
//! * escaped, visibly: other C0 controls and DEL as `\xNN` (ESC is `\x1b`, a lone CR `\x0d`),
//!   C1 controls (U+0080–U+009F) and the bidirectional-text controls that can make a line
//!   read differently from its bytes as `\u{NNNN}`, and every byte of invalid UTF-8 as `\xNN`.
//!
//! A backslash is left as it is, so a guest can print text that looks like an escape; it cannot
//! print a real one. State carries across calls: a multi-byte character or a CRLF split between
//! two `PUTS` is handled as if it came in one.

use std::fmt::Write as _;

/// Streaming sanitiser for guest console output.
#[derive(Debug, Default, Clone)]
pub struct ConsoleFilter {
    /// The start of a UTF-8 sequence that the last input cut off (at most 3 bytes).
    partial: Vec<u8>,
    /// The last input ended with `\r`: kept only if the next one starts with `\n`.
    pending_cr: bool,
}

/// Bidirectional formatting characters (Unicode `Bidi_Control`): they reorder how a terminal
/// shows the rest of the line.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape_byte(out: &mut String, b: u8) {
    let _ = write!(out, "\\x{b:02x}");
}

impl ConsoleFilter {
    /// A filter with no carried state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sanitises `input` and appends the result to `out`. Bytes that may complete in the next
    /// call (a cut-off character, a trailing CR) are held back until then or [`Self::finish`].
    pub fn push(&mut self, input: &[u8], out: &mut String) {
        if input.is_empty() {
            return;
        }
        let joined;
        let mut data = input;
        if !self.partial.is_empty() {
            let mut j = std::mem::take(&mut self.partial);
            j.extend_from_slice(input);
            joined = j;
            data = &joined;
        }
        if std::mem::take(&mut self.pending_cr) {
            // The previous input ended with CR (never with a partial character as well).
            if data.first() == Some(&b'\n') {
                out.push('\r');
            } else {
                escape_byte(out, b'\r');
            }
        }
        loop {
            match std::str::from_utf8(data) {
                Ok(text) => {
                    self.text(text, true, out);
                    return;
                }
                Err(e) => {
                    let (valid, rest) = data.split_at(e.valid_up_to());
                    // `valid_up_to` bytes are valid UTF-8 by definition.
                    if let Ok(text) = std::str::from_utf8(valid) {
                        self.text(text, false, out);
                    }
                    match e.error_len() {
                        Some(n) => {
                            rest[..n].iter().for_each(|&b| escape_byte(out, b));
                            data = &rest[n..];
                        }
                        None => {
                            // A character cut off at the end: wait for its other bytes.
                            self.partial = rest.to_vec();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Emits whatever is held back (the input ended): a lone CR or a cut-off character is
    /// escaped.
    pub fn finish(&mut self, out: &mut String) {
        if std::mem::take(&mut self.pending_cr) {
            escape_byte(out, b'\r');
        }
        for b in std::mem::take(&mut self.partial) {
            escape_byte(out, b);
        }
    }

    /// Filters valid text. `at_end`: nothing follows `text` in this input, so a final CR may
    /// still pair with an LF in the next one.
    fn text(&mut self, text: &str, at_end: bool, out: &mut String) {
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\n' | '\t' => out.push(c),
                '\r' => match chars.peek() {
                    Some('\n') => out.push('\r'),
                    None if at_end => self.pending_cr = true,
                    _ => escape_byte(out, b'\r'),
                },
                '\0'..='\x1f' | '\x7f' => escape_byte(out, c as u8),
                '\u{80}'..='\u{9f}' => {
                    let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
                }
                c if is_bidi_control(c) => {
                    let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
                }
                c => out.push(c),
            }
        }
    }
}

/// Sanitises one complete output (no state carried in or out).
pub fn sanitize(input: &[u8]) -> String {
    let mut f = ConsoleFilter::new();
    let mut out = String::with_capacity(input.len());
    f.push(input, &mut out);
    f.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn text_newlines_and_tabs_pass() {
        assert_eq!(sanitize(b"hello\n\tworld\n"), "hello\n\tworld\n");
        assert_eq!(sanitize("grüße, 世界 🦀\n".as_bytes()), "grüße, 世界 🦀\n");
        assert_eq!(sanitize(br"C:\path \x1b"), r"C:\path \x1b");
        assert_eq!(sanitize(b"line\r\n"), "line\r\n");
    }

    #[test]
    fn terminal_controls_are_escaped() {
        // Clear screen + cursor home, a window title (OSC … BEL), a bell, backspace, DEL.
        assert_eq!(sanitize(b"\x1b[2J\x1b[H"), r"\x1b[2J\x1b[H");
        assert_eq!(sanitize(b"\x1b]0;pwned\x07ok"), r"\x1b]0;pwned\x07ok");
        assert_eq!(sanitize(b"a\x08\x7f\x00b"), r"a\x08\x7f\x00b");
        // A lone CR would let the guest overwrite what the line said.
        assert_eq!(sanitize(b"PASS\rFAIL\n"), "PASS\\x0dFAIL\n");
        assert_eq!(sanitize(b"end\r"), r"end\x0d");
        assert_eq!(sanitize(b"\r\r\n"), "\\x0d\r\n");
    }

    #[test]
    fn c1_controls_and_bidi_are_escaped() {
        // U+009B is CSI on terminals that honour 8-bit controls; as UTF-8 it is C2 9B.
        assert_eq!(sanitize("x\u{9b}31m".as_bytes()), r"x\u{009b}31m");
        assert_eq!(sanitize("\u{85}".as_bytes()), r"\u{0085}");
        assert_eq!(
            sanitize("abc\u{202e}fed\u{2066}".as_bytes()),
            r"abc\u{202e}fed\u{2066}"
        );
    }

    #[test]
    fn invalid_utf8_is_escaped_byte_by_byte() {
        // A raw 0x9B byte is CSI on 8-bit terminals; 0xff is never UTF-8; an overlong '/'.
        assert_eq!(sanitize(b"\x9b2J"), r"\x9b2J");
        assert_eq!(sanitize(b"a\xffb"), r"a\xffb");
        assert_eq!(sanitize(b"\xc0\xaf"), r"\xc0\xaf");
        // Truncated at the very end.
        assert_eq!(sanitize(b"ok\xe4\xb8"), r"ok\xe4\xb8");
    }

    #[test]
    fn state_carries_across_calls() {
        let mut f = ConsoleFilter::new();
        let mut out = String::new();
        // A 3-byte character split 1 + 2, and a CRLF split between two calls.
        let crab = "世".as_bytes();
        f.push(&[b'a', crab[0]], &mut out);
        assert_eq!(out, "a");
        f.push(&[crab[1], crab[2], b'\r'], &mut out);
        assert_eq!(out, "a世");
        f.push(b"\nnext\r", &mut out);
        assert_eq!(out, "a世\r\nnext");
        f.push(b"x", &mut out);
        assert_eq!(out, "a世\r\nnext\\x0dx");
        // A cut-off character that never completes is escaped by finish.
        f.push(&crab[..2], &mut out);
        f.finish(&mut out);
        assert_eq!(out, "a世\r\nnext\\x0dx\\xe4\\xb8");
        // And one followed by a non-continuation byte is escaped right away.
        let mut out = String::new();
        f.push(&crab[..1], &mut out);
        f.push(b"z", &mut out);
        assert_eq!(out, r"\xe4z");
    }

    /// Whether `s` contains anything a terminal interprets other than as text, LF, TAB, CRLF.
    fn has_control(s: &str) -> bool {
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            let bad = match c {
                '\n' | '\t' => false,
                '\r' => chars.peek() != Some(&'\n'),
                c => c.is_control() || is_bidi_control(c),
            };
            if bad {
                return true;
            }
        }
        false
    }

    proptest! {
        #[test]
        fn output_never_holds_controls(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert!(!has_control(&sanitize(&input)));
        }

        #[test]
        fn splitting_the_input_changes_nothing(
            input in proptest::collection::vec(any::<u8>(), 0..200),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
            at.sort_unstable();
            let mut f = ConsoleFilter::new();
            let mut out = String::new();
            let mut start = 0;
            for end in at.into_iter().chain([input.len()]) {
                f.push(&input[start..end], &mut out);
                start = end;
            }
            f.finish(&mut out);
            prop_assert_eq!(out, sanitize(&input));
        }

        #[test]
        fn clean_text_is_unchanged(s in "[ -~\t\n\u{a0}-\u{5ff}\u{4e00}-\u{4fff}]{0,100}") {
            prop_assert_eq!(sanitize(s.as_bytes()), s);
        }
    }
}
