//! [`Chunk`], one piece of output as it travels from an append to its
//! followers, and how an append is cut into chunks: never inside a
//! character, never larger than [`MAX_CHUNK`], so what an emitter buffers
//! is bounded in bytes.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::model::StreamKind;

/// Appends larger than this are split (at character boundaries) into several
/// chunks, so an emitter's buffer holds at most
/// `EMITTER_CAPACITY * MAX_CHUNK` bytes = 16 MiB.
pub const MAX_CHUNK: usize = 16 * 1024;

/// One piece of output as it travels from an append to its followers.
#[derive(Debug)]
pub struct Chunk {
    /// Byte offset of the output after this chunk (the SSE `id`).
    pub offset: u64,
    /// Always valid UTF-8 and never split inside a character.
    pub content: String,
    /// Set for chunks of server-run commands, live only (replayed output
    /// comes from the log, which does not keep it).
    pub stream: Option<StreamKind>,
    /// A transport's encoding of this chunk (e.g. the SSE frame), filled by
    /// the first follower that needs it so 1,000 followers encode it once.
    pub encoded: OnceLock<Bytes>,
}

impl Chunk {
    pub fn new(offset: u64, content: String, stream: Option<StreamKind>) -> Self {
        Chunk {
            offset,
            content,
            stream,
            encoded: OnceLock::new(),
        }
    }

    /// Offset of the first byte of this chunk.
    pub fn start(&self) -> u64 {
        self.offset - self.content.len() as u64
    }

    /// Hands `send` the chunks of an append of `content` that starts at
    /// byte `start`: the content itself when it fits in [`MAX_CHUNK`] (the
    /// common case: no copy), else pieces of at most that size.
    pub(crate) fn split(start: u64, content: String, stream: Option<StreamKind>, mut send: impl FnMut(Chunk)) {
        if content.len() <= MAX_CHUNK {
            send(Chunk::new(start + content.len() as u64, content, stream));
            return;
        }
        for (at, piece) in split_chunks(&content) {
            let end = start + (at + piece.len()) as u64;
            send(Chunk::new(end, piece.to_owned(), stream));
        }
    }
}

/// Splits `s` into pieces of at most [`MAX_CHUNK`] bytes at character
/// boundaries, with each piece's byte index.
fn split_chunks(s: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= s.len() {
            return None;
        }
        let end = floor_char_boundary(s.as_bytes(), (at + MAX_CHUNK).min(s.len()));
        let end = if end <= at { s.len() } else { end };
        let piece = (at, &s[at..end]);
        at = end;
        Some(piece)
    })
}

/// The largest index `<= i` that is not inside a UTF-8 sequence.
fn floor_char_boundary(b: &[u8], mut i: usize) -> usize {
    while i > 0 && i < b.len() && (b[i] & 0xC0) == 0x80 {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting_never_cuts_a_character() {
        let s = "é".repeat(MAX_CHUNK);
        let pieces: Vec<_> = split_chunks(&s).collect();
        assert!(pieces.len() > 1);
        assert_eq!(pieces.iter().map(|(_, p)| *p).collect::<String>(), s);
        assert!(pieces.iter().all(|(_, p)| p.len() <= MAX_CHUNK));
    }

    #[test]
    fn split_offsets_are_absolute_and_contiguous() {
        let s = "é".repeat(MAX_CHUNK);
        let mut chunks = Vec::new();
        Chunk::split(100, s.clone(), None, |c| chunks.push(c));
        assert_eq!(chunks.first().map(Chunk::start), Some(100));
        assert!(chunks.windows(2).all(|w| w[0].offset == w[1].start()));
        assert_eq!(chunks.last().map(|c| c.offset), Some(100 + s.len() as u64));
        let mut one = Vec::new();
        Chunk::split(7, "abc".into(), None, |c| one.push(c));
        assert_eq!((one.len(), one[0].offset), (1, 10));
    }
}
