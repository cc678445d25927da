//! Incremental UTF-8 decoding of a byte stream that arrives in pieces
//! (a child's pipe, an HTTP body): never splits a character across two
//! outputs, and turns invalid bytes into U+FFFD.
//!
//! Shared by the runner (pipes → chunks) and the client's SSE parser
//! (body frames → text), which both see arbitrary cut points.

/// Keeps the incomplete tail of a character until its next bytes arrive.
#[derive(Debug, Default)]
pub struct Utf8Decoder {
    /// At most 3 bytes: the start of a character cut by the last read.
    pending: Vec<u8>,
}

impl Utf8Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `bytes` after what is pending; returns every complete
    /// character and keeps an incomplete trailing one for the next call.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(bytes);
        let mut out = String::with_capacity(input.len());
        let mut rest = &input[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    out.push_str(valid);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).expect("checked valid by from_utf8"));
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        None => {
                            // An incomplete character at the very end.
                            self.pending = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// Ends the stream: a pending partial character becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        let pending = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&pending).into_owned()
    }

    /// Whether bytes of an unfinished character are waiting.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// Length of the longest prefix of `b` that does not end inside an
/// incomplete UTF-8 sequence.
pub fn complete_prefix_len(b: &[u8]) -> usize {
    // A sequence is at most 4 bytes: look back at most 3 for its lead byte.
    for back in 1..=b.len().min(4) {
        let i = b.len() - back;
        let byte = b[i];
        if byte & 0xC0 == 0x80 {
            continue;
        }
        let need = match byte {
            0x00..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            _ => 4,
        };
        return if back >= need { b.len() } else { i };
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_cut_at_every_position_arrives_whole() {
        let text = "aé€😀z";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            for cut2 in cut..=bytes.len() {
                let mut d = Utf8Decoder::new();
                let mut out = d.push(&bytes[..cut]);
                out += &d.push(&bytes[cut..cut2]);
                out += &d.push(&bytes[cut2..]);
                out += &d.finish();
                assert_eq!(out, text, "cuts at {cut} and {cut2}");
            }
        }
    }

    #[test]
    fn pieces_never_end_inside_a_character() {
        let mut d = Utf8Decoder::new();
        assert_eq!(d.push(&[b'a', 0xE2, 0x82]), "a");
        assert!(d.has_pending());
        assert_eq!(d.push(&[0xAC]), "€");
        assert!(!d.has_pending());
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut d = Utf8Decoder::new();
        assert_eq!(d.push(b"a\xFFb\xC0\x80c"), "a\u{FFFD}b\u{FFFD}\u{FFFD}c");
        // A truncated character at the end of the stream.
        assert_eq!(d.push(b"x\xE2\x82"), "x");
        assert_eq!(d.finish(), "\u{FFFD}");
        // An invalid continuation after a pending start.
        assert_eq!(d.push(b"\xE2"), "");
        assert_eq!(d.push(b"A"), "\u{FFFD}A");
    }
}
