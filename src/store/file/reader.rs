//! [`OutputReader`]: the stored output of a process read block by block,
//! for `GET /api/processes/:id/output`.
//!
//! # Why a reader, not a buffer
//! The endpoint used to read the whole range into memory before answering:
//! 100 clients asking for a 16 MiB log and never reading held 1.66 GB. A
//! reader holds a position and reads one [`REPLAY_BLOCK`] when the HTTP
//! body is polled, which hyper does only when the socket takes more, so a
//! client that stops reading costs its socket buffers plus one block.
//!
//! The range is fixed when the reader is made (bytes appended later are
//! not included). Each block opens the log, reads and closes it on the
//! blocking pool, so a stalled client holds no file descriptor. Blocks
//! never split a character: the decoder keeps an incomplete one for the
//! next block; a start inside a character moves to the next one, and
//! invalid bytes become U+FFFD, as in a follow replay.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

use super::FileProcessStore;
use super::error::{Result, StoreError};
use super::log::REPLAY_BLOCK;
use crate::model::{Id, OutputRange};
use crate::utf8::Utf8Decoder;

/// Most bytes of a character that a range can start inside: the leading
/// continuation bytes skipped at its start.
const MAX_CONTINUATION: usize = 3;

impl FileProcessStore {
    /// A reader of `range` of `id`'s stored output as it is now. Nothing
    /// is read until [`OutputReader::next_block`].
    pub fn output_reader(&self, id: &Id, range: OutputRange) -> Result<OutputReader> {
        let entry = self.read_index().by_id.get(id).cloned();
        let entry = entry.ok_or_else(|| StoreError::NotFound {
            kind: "process",
            id: id.to_string(),
        })?;
        let stored = entry.log.lock().stored;
        let from = match range {
            OutputRange::All => 0,
            OutputRange::From(n) => n.min(stored),
            OutputRange::Tail(n) => stored.saturating_sub(n),
        };
        Ok(OutputReader {
            path: self.log_path(id),
            pos: from,
            end: stored,
            at_start: true,
            decoder: Utf8Decoder::new(),
            done: false,
        })
    }
}

/// A fixed byte range of one output log, read as UTF-8 text in blocks.
pub struct OutputReader {
    path: PathBuf,
    /// Next byte to read.
    pos: u64,
    /// End of the range: what was stored when the reader was made.
    end: u64,
    /// No block read yet: leading continuation bytes are skipped.
    at_start: bool,
    decoder: Utf8Decoder,
    /// Everything was returned.
    done: bool,
}

impl OutputReader {
    /// The next block of text (at most [`REPLAY_BLOCK`] bytes of the log,
    /// a few more where U+FFFD replaces invalid bytes), or None at the end.
    /// A log that vanishes (the process was deleted) or is shorter than
    /// recorded ends the text where it ends.
    pub async fn next_block(&mut self) -> Result<Option<String>> {
        while !self.done {
            if self.pos >= self.end {
                self.done = true;
                let tail = self.decoder.finish();
                return Ok((!tail.is_empty()).then_some(tail));
            }
            let want = (self.end - self.pos).min(REPLAY_BLOCK as u64) as usize;
            let (path, from) = (self.path.clone(), self.pos);
            let read = tokio::task::spawn_blocking(move || read_at(&path, from, want))
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?;
            let bytes = match read {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(StoreError::io("read", &self.path)(e)),
            };
            if bytes.is_empty() {
                self.end = self.pos;
                continue;
            }
            self.pos += bytes.len() as u64;
            let whole = self.skip_partial_start(&bytes);
            let mut text = self.decoder.push(whole);
            if self.pos >= self.end {
                self.done = true;
                text.push_str(&self.decoder.finish());
            }
            if !text.is_empty() {
                return Ok(Some(text));
            }
        }
        Ok(None)
    }

    /// Whether every block was returned (after the first call: the whole
    /// range fit in one block, so its length is known).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// `bytes` without the continuation bytes that begin the range (it
    /// started inside a character: the text starts at the next one).
    fn skip_partial_start<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        if !std::mem::take(&mut self.at_start) {
            return bytes;
        }
        let skip = bytes
            .iter()
            .take(MAX_CONTINUATION)
            .take_while(|b| (**b & 0xC0) == 0x80)
            .count();
        &bytes[skip..]
    }
}

/// Reads up to `want` bytes at `from` (fewer only at the end of the file).
fn read_at(path: &std::path::Path, from: u64, want: usize) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::with_capacity(want);
    f.take(want as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(path: PathBuf, pos: u64, end: u64) -> OutputReader {
        OutputReader {
            path,
            pos,
            end,
            at_start: true,
            decoder: Utf8Decoder::new(),
            done: false,
        }
    }

    async fn read_all(mut r: OutputReader) -> Vec<String> {
        let mut blocks = Vec::new();
        while let Some(b) = r.next_block().await.expect("readable") {
            blocks.push(b);
        }
        blocks
    }

    #[tokio::test]
    async fn blocks_never_split_a_character_and_a_cut_start_moves_on() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.log");
        // "€" (3 bytes) straddles the first block boundary.
        let mut text = "a".repeat(REPLAY_BLOCK - 1);
        text.push('€');
        text.push_str("tail");
        std::fs::write(&path, &text).expect("write log");
        let blocks = read_all(reader(path.clone(), 0, text.len() as u64)).await;
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks.concat(), text);
        assert!(blocks[1].starts_with('€'));
        // Starting inside "€" starts at the next character.
        let inside = REPLAY_BLOCK as u64;
        let blocks = read_all(reader(path, inside, text.len() as u64)).await;
        assert_eq!(blocks.concat(), "tail");
    }

    #[tokio::test]
    async fn a_missing_log_reads_as_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        let blocks = read_all(reader(dir.path().join("none.log"), 0, 10)).await;
        assert!(blocks.is_empty());
    }
}
