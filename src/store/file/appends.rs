//! The append index of an output log (SPEC section 10): one fixed-size
//! record per stored append, `(start, seq, time, length, pipe)`, in a file
//! beside the log (`output/<id>.idx` for `output/<id>.log`, and likewise
//! for each tail segment). It is what gives replayed output its time and
//! its stdout/stderr tag after a restart, what `?since=` binary-searches,
//! and what says where the log's acknowledged bytes end after a crash.
//!
//! # Format
//! A 16-byte header (`b"prochub-idx\0"` and a little-endian `u32` format
//! version, 1), then records of [`RECORD_LEN`] bytes, little-endian:
//!
//! | bytes  | field        |                                                   |
//! |--------|--------------|---------------------------------------------------|
//! | 0..8   | `start: u64` | absolute byte offset of the append's first byte   |
//! | 8..16  | `seq: u64`   | store-wide sequence number, +1 per stored append  |
//! | 16..24 | `ts_ms: i64` | when it was stored, ms since the Unix epoch; never decreasing within a process |
//! | 24..28 | `len: u32`   | its length in the log                             |
//! | 28     | `pipe: u8`   | 0 none, 1 stdout, 2 stderr                        |
//! | 29..32 | reserved, 0  |                                                   |
//!
//! Fixed-size records make "the record at i" one positioned read, so a
//! time or offset lookup is a binary search of ~20 reads for a million
//! appends, and a torn tail is a length that is not a whole number of
//! records.
//!
//! # Crash safety
//! Appends write the log bytes first, then the record, both to the page
//! cache (fsynced when the process finishes and at shutdown). A crash can
//! leave either file with a torn tail; [`repair`] cuts both back to the
//! last append whose record and bytes are all there.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use crate::model::{StreamKind, Timestamp};

/// First 12 bytes of every index file.
pub const MAGIC: &[u8; 12] = b"prochub-idx\0";
/// Format version written after [`MAGIC`].
pub const VERSION: u32 = 1;
/// Bytes before the first record.
pub const HEADER_LEN: u64 = 16;
/// Bytes per record.
pub const RECORD_LEN: u64 = 32;
/// Records read per positioned read when walking an index in order
/// (64 KiB).
pub const READ_BATCH: u64 = 2048;

/// One stored append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Append {
    /// Absolute byte offset of its first byte.
    pub start: u64,
    /// Store-wide sequence number.
    pub seq: u64,
    /// When the store took it, ms since the Unix epoch.
    pub ts_ms: i64,
    /// Bytes in the log. At most `MAX_CHUNK` for appends stored by this
    /// version; a log from before the index is one record of any length.
    pub len: u32,
    pub pipe: Option<StreamKind>,
}

impl Append {
    /// Offset just past its last byte.
    /// Saturating: a record read from a damaged file may claim a start
    /// near `u64::MAX` (repair refuses such records: it checks the sum).
    pub fn end(&self) -> u64 {
        self.start.saturating_add(u64::from(self.len))
    }

    /// Its time as a timestamp.
    pub fn ts(&self) -> Timestamp {
        ts_from_ms(self.ts_ms)
    }

    pub fn encode(&self) -> [u8; RECORD_LEN as usize] {
        let mut b = [0u8; RECORD_LEN as usize];
        b[0..8].copy_from_slice(&self.start.to_le_bytes());
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.ts_ms.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28] = match self.pipe {
            None => 0,
            Some(StreamKind::Stdout) => 1,
            Some(StreamKind::Stderr) => 2,
        };
        b
    }

    /// Decodes one record; None if it cannot be one (an unknown pipe or
    /// non-zero reserved bytes: garbage, e.g. a tail torn by a crash).
    pub fn decode(b: &[u8]) -> Option<Append> {
        let b: &[u8; RECORD_LEN as usize] = b.try_into().ok()?;
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let pipe = match b[28] {
            0 => None,
            1 => Some(StreamKind::Stdout),
            2 => Some(StreamKind::Stderr),
            _ => return None,
        };
        if b[29..32] != [0, 0, 0] {
            return None;
        }
        Some(Append {
            start: u64_at(0),
            seq: u64_at(8),
            ts_ms: u64_at(16) as i64,
            len: u32::from_le_bytes(b[24..28].try_into().expect("4 bytes")),
            pipe,
        })
    }
}

/// Milliseconds since the epoch of a timestamp (the index's time unit).
pub fn ms_of(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

/// The timestamp of an index time (out-of-range values clamp to the epoch).
pub fn ts_from_ms(ms: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// The 16-byte header.
pub fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..12].copy_from_slice(MAGIC);
    h[12..16].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Whole records in an index file of `file_len` bytes.
pub fn record_count(file_len: u64) -> u64 {
    file_len.saturating_sub(HEADER_LEN) / RECORD_LEN
}

/// Byte position of record `i`.
pub fn record_pos(i: u64) -> u64 {
    HEADER_LEN + i * RECORD_LEN
}

/// Creates (or empties) an index file and writes its header. Opened for
/// reading and writing; records go in with [`write_records`].
pub fn create(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all_at(&header(), 0)?;
    Ok(f)
}

/// Opens an existing index for appending records (read and write).
pub fn open_for_writing(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// Writes `records` as records `first..first + records.len()` of the index
/// in `file` (one positioned write). Positioned, like the log's writes: a
/// write a full disk cut short is overwritten by the next one.
pub fn write_records(file: &File, first: u64, records: &[Append]) -> io::Result<()> {
    if let [one] = records {
        return file.write_all_at(&one.encode(), record_pos(first));
    }
    let mut buf = Vec::with_capacity(records.len() * RECORD_LEN as usize);
    for r in records {
        buf.extend_from_slice(&r.encode());
    }
    file.write_all_at(&buf, record_pos(first))
}

/// Read access to one index file: positioned reads, so it can be shared
/// and needs no seek state. It sees the records that were there when it
/// was opened ([`IndexReader::count`]).
#[derive(Debug)]
pub struct IndexReader {
    file: File,
    count: u64,
}

impl IndexReader {
    /// Opens `path`, checks its header, and counts its whole records.
    pub fn open(path: &Path) -> io::Result<IndexReader> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        check_header(&file, len)?;
        Ok(IndexReader {
            file,
            count: record_count(len),
        })
    }

    /// Like [`IndexReader::open`], but reads only the first `count`
    /// records even if the file has more (a snapshot taken under the log
    /// lock: records written after it are not seen).
    pub fn open_with_count(path: &Path, count: u64) -> io::Result<IndexReader> {
        let mut r = IndexReader::open(path)?;
        r.count = r.count.min(count);
        Ok(r)
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Reads the first `count` records from now on (a newer snapshot of
    /// the same, still open, index: a replay keeps one reader per segment
    /// instead of reopening it for every block).
    pub fn set_count(&mut self, count: u64) {
        self.count = count;
    }

    /// Record `i` (< count).
    pub fn get(&self, i: u64) -> io::Result<Append> {
        let mut b = [0u8; RECORD_LEN as usize];
        self.file.read_exact_at(&mut b, record_pos(i))?;
        Append::decode(&b).ok_or_else(|| bad_record(i))
    }

    /// Records `i..i + n` (clipped to count), in one positioned read.
    pub fn read(&self, i: u64, n: u64) -> io::Result<Vec<Append>> {
        let n = n.min(self.count.saturating_sub(i));
        let mut buf = vec![0u8; (n * RECORD_LEN) as usize];
        self.file.read_exact_at(&mut buf, record_pos(i))?;
        buf.chunks_exact(RECORD_LEN as usize)
            .enumerate()
            .map(|(k, b)| Append::decode(b).ok_or_else(|| bad_record(i + k as u64)))
            .collect()
    }

    /// The first record for which `pred` is false, given that `pred` is
    /// true for a prefix of the records and false after (binary search,
    /// one read per probe).
    pub fn partition_point(&self, mut pred: impl FnMut(&Append) -> bool) -> io::Result<u64> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&self.get(mid)?) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The first record stored at or after `ts_ms` (times never decrease
    /// within a process), or `count` if none.
    pub fn first_at_or_after(&self, ts_ms: i64) -> io::Result<u64> {
        self.partition_point(|a| a.ts_ms < ts_ms)
    }

    /// The first record stored after `ts_ms`, or `count` if none.
    pub fn first_after(&self, ts_ms: i64) -> io::Result<u64> {
        self.partition_point(|a| a.ts_ms <= ts_ms)
    }

    /// The first record that ends after `offset` (the one holding byte
    /// `offset`, if any), or `count` if none.
    pub fn first_ending_after(&self, offset: u64) -> io::Result<u64> {
        self.partition_point(|a| a.end() <= offset)
    }
}

fn check_header(file: &File, len: u64) -> io::Result<()> {
    if len < HEADER_LEN {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "index file has no header"));
    }
    let mut h = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut h, 0)?;
    check_header_bytes(&h)
}

/// Checks the first [`HEADER_LEN`] bytes of an index file.
fn check_header_bytes(h: &[u8]) -> io::Result<()> {
    if &h[..12] != MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a prochub index file"));
    }
    let version = u32::from_le_bytes(h[12..16].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("index format version {version}, this prochub reads {VERSION}"),
        ));
    }
    Ok(())
}

fn bad_record(i: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("index record {i} is not a valid record"),
    )
}

/// What [`repair`] found and cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Repaired {
    /// Whole, consistent records kept.
    pub records: u64,
    /// Bytes kept in the log (`last.end() - segment start`, or 0).
    pub log_len: u64,
    /// The first record kept (what open chains a segment to the one
    /// before it by).
    pub first: Option<Append>,
    /// The last record kept.
    pub last: Option<Append>,
    /// Records dropped (their bytes were not all in the log, or they were
    /// not valid records): a torn tail. Zero padding is not counted here.
    pub cut_records: u64,
    /// All-zero records after the last real one (an index file grown
    /// ahead of its records, or a tail a crash left zeroed): never
    /// written, so absent. Cut with the rest, without a warning.
    pub padding_records: u64,
    /// Bytes cut from the index (dropped records, padding and a partial
    /// one).
    pub cut_index_bytes: u64,
    /// Bytes cut from the end of the log (beyond the last kept record).
    pub cut_log_bytes: u64,
    /// The cuts could not be written (a read-only disk): the values above
    /// are what is served; the files are cut when next written or opened.
    pub cut_deferred: bool,
}

impl Repaired {
    /// Whether a torn tail was cut (worth a warning): anything beyond
    /// zero padding.
    pub fn cut_anything(&self) -> bool {
        self.cut_records > 0 || self.cut_index_bytes > self.padding_records * RECORD_LEN || self.cut_log_bytes > 0
    }
}

/// Bytes of an index [`repair`] reads first: the whole of most indexes
/// (the header and 127 records), so their repair is one read.
const FIRST_READ: usize = 4096;

/// [`repair`] with the log's size taken by a `stat`.
pub fn repair_path(idx: &Path, log: &Path, segment_start: u64) -> io::Result<Repaired> {
    let log_len = match std::fs::metadata(log) {
        Ok(m) => Some(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    repair(None, idx, log, log_len, segment_start)
}

/// Opens `path` for reading: by its file name relative to `dir`, the
/// folder holding it, when given (open's repair threads: a name lookup
/// instead of a whole path walk per file), else by the path.
fn open_in(dir: Option<&File>, path: &Path) -> io::Result<File> {
    let (Some(dir), Some(name)) = (dir, path.file_name()) else {
        return File::open(path);
    };
    let flags = nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC;
    let fd = nix::fcntl::openat(dir, name, flags, nix::sys::stat::Mode::empty()).map_err(io::Error::from)?;
    Ok(File::from(fd))
}

/// The size of `path`, looked up by name in `dir` like [`open_in`] (None:
/// no such file).
pub fn size_in(dir: &File, path: &Path) -> io::Result<Option<u64>> {
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a file path"));
    };
    match nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::empty()) {
        Ok(st) => Ok(Some(st.st_size as u64)),
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Makes the index at `idx` and the log at `log` (`log_len` bytes, None if
/// missing: empty) of a segment starting at absolute offset
/// `segment_start` consistent after a crash. The log's size comes from
/// open's `stat` (nothing else writes the files while the store opens);
/// `dir`, if given, is the folder holding them, open already.
///
/// Kept: the longest prefix of records whose last record is real and
/// chained to the one before it: not all-zero (trailing zero records are
/// padding, never written), `len > 0` and `seq > 0` (a writer never stores
/// either), starting where the record before it ends (the segment start
/// for the first) with a larger SEQ, ending (without overflow) within the
/// log, and, when the log goes on past it, ending on a whole UTF-8
/// character. Cut: a partial trailing record, the records after the kept
/// ones, and log bytes past the last kept record.
///
/// Cheap in the consistent case, which open meets thousands of times: an
/// index of up to [`FIRST_READ`] bytes costs one open and one read (no
/// `fstat`: the read's length is the file's), a larger one an `fstat` and
/// one read of its last block more; the log is not opened at all when the
/// last record ends exactly at its length. A suspicious tail costs a
/// binary search (zero padding longer than a block, records past the log's
/// end) plus the blocks walked back. An index without a valid header is an
/// error (`InvalidData`): it is not ours to cut.
pub fn repair(
    dir: Option<&File>,
    idx: &Path,
    log: &Path,
    log_len: Option<u64>,
    segment_start: u64,
) -> io::Result<Repaired> {
    let file = open_in(dir, idx)?;
    let mut head = [0u8; FIRST_READ];
    let got = read_once(&file, &mut head)?;
    let short = got < FIRST_READ;
    let idx_len = if short { got as u64 } else { file.metadata()?.len() };
    let seg = Segment {
        idx,
        file: &file,
        log,
        log_len,
        start: segment_start,
    };
    let found = seg.examine(&head[..got], idx_len)?;
    if !short || !found.needs_cut(idx_len, log_len, segment_start) {
        return seg.cut(found, idx_len);
    }
    // About to cut after a read that came back short: a regular file's
    // read is short only at its end, but cutting on the word of one read is
    // not worth the `fstat` it saves.
    let real_len = file.metadata()?.len();
    let found = if real_len == idx_len {
        found
    } else {
        seg.examine(&head[..got], real_len)?
    };
    seg.cut(found, real_len)
}

/// One read at offset 0 (retried if interrupted). A short read is the
/// end of a regular file; [`repair`] checks it with `fstat` before cutting.
fn read_once(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read_at(buf, 0) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// What [`Segment::examine`] found: the records to keep.
struct Found {
    /// Records before the trailing zero ones.
    real: u64,
    count: u64,
    keep: u64,
    first: Option<Append>,
    last: Option<Append>,
    /// The log, if checking a record opened it (read and write).
    log_file: Option<File>,
}

impl Found {
    fn needs_cut(&self, idx_len: u64, log_len: Option<u64>, start: u64) -> bool {
        let keep_log = self.last.map_or(0, |a| a.end() - start);
        idx_len > record_pos(self.keep) || log_len.unwrap_or(0) > keep_log
    }
}

/// One segment's files being repaired.
struct Segment<'a> {
    idx: &'a Path,
    file: &'a File,
    log: &'a Path,
    log_len: Option<u64>,
    start: u64,
}

impl Segment<'_> {
    /// Finds the records to keep in an index of `idx_len` bytes whose
    /// first bytes are `head`.
    fn examine(&self, head: &[u8], idx_len: u64) -> io::Result<Found> {
        if idx_len < HEADER_LEN || head.len() < HEADER_LEN as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "index file has no header"));
        }
        check_header_bytes(&head[..HEADER_LEN as usize])?;
        let count = record_count(idx_len);
        let mut tail = Tail::new(self.file, count);
        if record_pos(count) as usize <= head.len() {
            tail.set(0, head[HEADER_LEN as usize..record_pos(count) as usize].to_vec());
        } else {
            tail.load(count)?;
        }
        let real = tail.real_records()?;
        let check = Check {
            segment_start: self.start,
            log_end: self.start.saturating_add(self.log_len.unwrap_or(0)),
            log: self.log,
        };
        let mut log_file = None;
        let keep = tail.last_fitting(real, &check, &mut log_file)?;
        let last = if keep > 0 { tail.get(keep - 1) } else { None };
        let first = if keep > 0 {
            head.get(HEADER_LEN as usize..record_pos(1) as usize)
                .and_then(Append::decode)
        } else {
            None
        };
        Ok(Found {
            real,
            count,
            keep,
            first,
            last,
            log_file,
        })
    }

    /// Cuts the index (of `idx_len` bytes) and the log back to what
    /// `found` keeps.
    fn cut(&self, found: Found, idx_len: u64) -> io::Result<Repaired> {
        let keep_idx = record_pos(found.keep);
        let keep_log = found.last.map_or(0, |a| a.end() - self.start);
        let log_len = self.log_len.unwrap_or(0);
        let mut cut_deferred = false;
        if idx_len > keep_idx {
            cut_deferred |= cut(self.idx, None, keep_idx).is_err();
        }
        if log_len > keep_log {
            cut_deferred |= cut(self.log, found.log_file.as_ref(), keep_log).is_err();
        }
        Ok(Repaired {
            records: found.keep,
            log_len: keep_log,
            first: found.first,
            last: found.last,
            cut_records: found.real - found.keep,
            padding_records: found.count - found.real,
            cut_index_bytes: idx_len - keep_idx,
            cut_log_bytes: log_len.saturating_sub(keep_log),
            cut_deferred,
        })
    }
}

/// Cuts a file to `len` bytes, through `open` if the log is already open
/// for writing.
fn cut(path: &Path, open: Option<&File>, len: u64) -> io::Result<()> {
    let r = match open {
        Some(f) => f.set_len(len),
        None => OpenOptions::new().write(true).open(path).and_then(|f| f.set_len(len)),
    };
    if let Err(e) = &r {
        tracing::warn!(%e, file = %path.display(), "cannot cut a torn output tail now; served as cut, cut when next opened");
    }
    r
}

/// What a kept record must agree with.
struct Check<'p> {
    segment_start: u64,
    /// Absolute offset of the log's end.
    log_end: u64,
    log: &'p Path,
}

impl Check<'_> {
    /// Whether `a` (record `i`, after `prev`) can be the last record kept.
    /// Opens the log (into `log_file`, kept for the cut) only when the
    /// record ends before the log does.
    fn fits(&self, i: u64, a: &Append, prev: Option<&Append>, log_file: &mut Option<File>) -> io::Result<bool> {
        let Some(end) = a.start.checked_add(u64::from(a.len)) else {
            return Ok(false);
        };
        let chained = match (i, prev) {
            (0, _) => a.start == self.segment_start,
            (_, Some(p)) => p.len > 0 && p.seq > 0 && a.start == p.end() && a.seq > p.seq,
            (_, None) => false,
        };
        if a.len == 0 || a.seq == 0 || !chained || end > self.log_end {
            return Ok(false);
        }
        if end == self.log_end {
            // Every byte is there and nothing follows: the consistent
            // case (pieces are cut at characters when written).
            return Ok(true);
        }
        if log_file.is_none() {
            *log_file = Some(OpenOptions::new().read(true).write(true).open(self.log)?);
        }
        ends_on_char(log_file.as_ref(), end - self.segment_start, a.len)
    }
}

/// The records of an index that [`repair`] has read: one block of them
/// (`first..first + n`) in memory.
struct Tail<'f> {
    file: &'f File,
    count: u64,
    first: u64,
    bytes: Vec<u8>,
}

impl<'f> Tail<'f> {
    fn new(file: &'f File, count: u64) -> Self {
        Tail {
            file,
            count,
            first: 0,
            bytes: Vec::new(),
        }
    }

    fn set(&mut self, first: u64, bytes: Vec<u8>) {
        (self.first, self.bytes) = (first, bytes);
    }

    /// Reads the block of records ending just before `end`.
    fn load(&mut self, end: u64) -> io::Result<()> {
        let first = end.saturating_sub(READ_BATCH);
        let mut bytes = vec![0u8; ((end - first) * RECORD_LEN) as usize];
        self.file.read_exact_at(&mut bytes, record_pos(first))?;
        self.set(first, bytes);
        Ok(())
    }

    fn end(&self) -> u64 {
        self.first + self.bytes.len() as u64 / RECORD_LEN
    }

    fn raw(&self, i: u64) -> &[u8] {
        let at = ((i - self.first) * RECORD_LEN) as usize;
        &self.bytes[at..at + RECORD_LEN as usize]
    }

    /// Record `i` if it is in the block and decodes.
    fn get(&self, i: u64) -> Option<Append> {
        (i >= self.first && i < self.end())
            .then(|| Append::decode(self.raw(i)))
            .flatten()
    }

    /// One record read from the file (a binary search probe).
    fn read_one(&self, i: u64) -> io::Result<[u8; RECORD_LEN as usize]> {
        let mut b = [0u8; RECORD_LEN as usize];
        self.file.read_exact_at(&mut b, record_pos(i))?;
        Ok(b)
    }

    /// Records before the trailing all-zero ones. Zeros past the block in
    /// memory are found by binary search (padding is a suffix).
    fn real_records(&mut self) -> io::Result<u64> {
        let zero = |b: &[u8]| b.iter().all(|&x| x == 0);
        let mut i = self.end();
        while i > self.first && zero(self.raw(i - 1)) {
            i -= 1;
        }
        if i > self.first || self.first == 0 {
            return Ok(i);
        }
        let (mut lo, mut hi) = (0, self.first);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if zero(&self.read_one(mid)?) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        if lo > 0 {
            self.load(lo)?;
        }
        Ok(lo)
    }

    /// How many records to keep: the last `i <= real` whose record `i - 1`
    /// [`Check::fits`], walking back through the block, after a binary
    /// search when the records past the log's end reach before it.
    fn last_fitting(&mut self, real: u64, check: &Check, log_file: &mut Option<File>) -> io::Result<u64> {
        let mut n = real;
        let mut searched = false;
        while n > 0 {
            let i = n - 1;
            if i < self.first {
                if !searched {
                    searched = true;
                    // Records ending past the log form a suffix: skip them.
                    n = n.min(self.first_past_log(n, check.log_end)?);
                    if n == 0 {
                        break;
                    }
                }
                self.load(n)?;
                continue;
            }
            if i == self.first && i > 0 {
                // The chain check needs the record before: read the block
                // ending with this record (it starts before it, as
                // READ_BATCH > 1).
                self.load(n)?;
                continue;
            }
            let prev = if i > 0 { self.get(i - 1) } else { None };
            if let Some(a) = self.get(i)
                && check.fits(i, &a, prev.as_ref(), log_file)?
            {
                return Ok(n);
            }
            n -= 1;
        }
        Ok(0)
    }

    /// The number of records among the first `upto` that end within the
    /// log (binary search; an invalid record counts as past it).
    fn first_past_log(&self, upto: u64, log_end: u64) -> io::Result<u64> {
        let (mut lo, mut hi) = (0, upto.min(self.count));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let inside = Append::decode(&self.read_one(mid)?)
                .and_then(|a| a.start.checked_add(u64::from(a.len)))
                .is_some_and(|end| end <= log_end);
            if inside {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

/// Whether the `len` bytes of an append ending at `end` (a position in the
/// log) end on a whole UTF-8 character: the last 1-4 bytes are read.
fn ends_on_char(log: Option<&File>, end: u64, len: u32) -> io::Result<bool> {
    let Some(log) = log else { return Ok(len == 0) };
    let n = u64::from(len).min(4);
    let mut b = [0u8; 4];
    let b = &mut b[..n as usize];
    log.read_exact_at(b, end - n)?;
    Ok(crate::utf8::complete_prefix_len(b) == b.len())
}

/// Writes a fresh index for a log from before the index existed (or whose
/// index was lost): the log, cut back to its last whole character, becomes
/// one append per 4 GiB (the record length's limit) with the given time and
/// consecutive SEQs from `first_seq`, no pipe. Returns the records written.
pub fn synthesize(idx: &Path, log: &Path, segment_start: u64, first_seq: u64, ts_ms: i64) -> io::Result<Vec<Append>> {
    let log_file = OpenOptions::new().read(true).write(true).open(log)?;
    let mut len = log_file.metadata()?.len();
    let tail_n = len.min(4);
    let mut b = [0u8; 4];
    log_file.read_exact_at(&mut b[..tail_n as usize], len - tail_n)?;
    let whole = crate::utf8::complete_prefix_len(&b[..tail_n as usize]) as u64;
    if whole < tail_n {
        len -= tail_n - whole;
        log_file.set_len(len)?;
    }
    let mut records = Vec::new();
    let mut at = 0u64;
    while at < len {
        let piece = (len - at).min(u64::from(u32::MAX));
        records.push(Append {
            start: segment_start + at,
            seq: first_seq + records.len() as u64,
            ts_ms,
            len: piece as u32,
            pipe: None,
        });
        at += piece;
    }
    let f = create(idx)?;
    write_records(&f, 0, &records)?;
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(start: u64, len: u32, seq: u64) -> Append {
        Append {
            start,
            seq,
            ts_ms: 1_000 + seq as i64,
            len,
            pipe: Some(StreamKind::Stderr),
        }
    }

    fn write_pair(dir: &Path, text: &[u8], records: &[Append]) -> (std::path::PathBuf, std::path::PathBuf) {
        let (idx, log) = (dir.join("a.idx"), dir.join("a.log"));
        std::fs::write(&log, text).expect("log");
        let f = create(&idx).expect("index");
        write_records(&f, 0, records).expect("records");
        (idx, log)
    }

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let a = rec(7, 3, 9);
        assert_eq!(Append::decode(&a.encode()), Some(a));
        let mut b = a.encode();
        b[28] = 3;
        assert_eq!(Append::decode(&b), None);
        let mut b = a.encode();
        b[30] = 1;
        assert_eq!(Append::decode(&b), None);
    }

    #[test]
    fn lookups_are_binary_searches_over_time_and_offset() {
        let dir = tempfile::tempdir().expect("temp dir");
        let records: Vec<_> = (0..100).map(|i| rec(i * 10, 10, i)).collect();
        let (idx, _) = write_pair(dir.path(), &[b'x'; 1000], &records);
        let r = IndexReader::open(&idx).expect("open");
        assert_eq!(r.count(), 100);
        assert_eq!(r.get(42).expect("get"), records[42]);
        assert_eq!(r.read(98, 10).expect("read"), records[98..].to_vec());
        assert_eq!(r.first_at_or_after(1_050).expect("search"), 50);
        assert_eq!(r.first_after(1_050).expect("search"), 51);
        assert_eq!(r.first_at_or_after(5_000).expect("search"), 100);
        assert_eq!(r.first_ending_after(0).expect("search"), 0);
        assert_eq!(r.first_ending_after(15).expect("search"), 1);
        assert_eq!(r.first_ending_after(20).expect("search"), 2);
        assert_eq!(IndexReader::open_with_count(&idx, 5).expect("open").count(), 5);
    }

    #[test]
    fn repair_cuts_a_partial_record_and_log_bytes_past_the_last_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (idx, log) = write_pair(dir.path(), b"helloworld+torn", &[rec(0, 5, 1), rec(5, 5, 2)]);
        let f = open_for_writing(&idx).expect("open");
        f.write_all_at(&[1, 2, 3], record_pos(2)).expect("partial record");
        let r = repair_path(&idx, &log, 0).expect("repair");
        assert_eq!((r.records, r.log_len, r.cut_records), (2, 10, 0));
        assert_eq!((r.cut_index_bytes, r.cut_log_bytes), (3, 5));
        assert_eq!(std::fs::read(&log).expect("log"), b"helloworld");
        assert_eq!(std::fs::metadata(&idx).expect("idx").len(), record_pos(2));
        assert!(!repair_path(&idx, &log, 0).expect("again").cut_anything());
    }

    #[test]
    fn repair_drops_records_whose_bytes_never_reached_the_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        // The last record says 5 bytes at 10, the log has 2 of them; the
        // one before ends inside "é" (a torn character).
        let text = "hello\u{e9}xyz".as_bytes()[..8].to_vec(); // "hello" + é + "x" … cut
        let (idx, log) = write_pair(
            dir.path(),
            &text,
            &[rec(0, 5, 1), rec(5, 2, 2), rec(7, 1, 3), rec(8, 5, 4)],
        );
        let r = repair_path(&idx, &log, 0).expect("repair");
        assert_eq!((r.records, r.log_len, r.cut_records), (3, 8, 1));
        // A record ending inside a character, with log bytes after it (a
        // record ending exactly at the log's end is trusted unread: a
        // writer cuts pieces at characters, so only a record it never
        // wrote could end inside one).
        let (idx2, log2) = (dir.path().join("b.idx"), dir.path().join("b.log"));
        std::fs::write(&log2, &"hello\u{e9}".as_bytes()[..6]).expect("log");
        append_raw(&log2, b"z");
        write_records(&create(&idx2).expect("idx"), 0, &[rec(100, 5, 1), rec(105, 1, 2)]).expect("records");
        let r = repair_path(&idx2, &log2, 100).expect("repair");
        assert_eq!(
            (r.records, r.log_len),
            (1, 5),
            "a record ending inside a character is dropped"
        );
        assert_eq!(std::fs::read(&log2).expect("log"), b"hello");
    }

    #[test]
    fn a_log_without_an_index_becomes_one_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (idx, log) = (dir.path().join("c.idx"), dir.path().join("c.log"));
        std::fs::write(&log, &"ab\u{20ac}".as_bytes()[..4]).expect("log");
        let recs = synthesize(&idx, &log, 0, 77, 5).expect("synthesize");
        assert_eq!(
            recs,
            vec![Append {
                start: 0,
                seq: 77,
                ts_ms: 5,
                len: 2,
                pipe: None
            }]
        );
        assert_eq!(std::fs::read(&log).expect("log"), b"ab", "the torn character is cut");
        assert_eq!(IndexReader::open(&idx).expect("open").read(0, 9).expect("read"), recs);
        assert!(!repair_path(&idx, &log, 0).expect("repair").cut_anything());
    }

    /// Appends raw bytes to the end of a file.
    fn append_raw(path: &Path, bytes: &[u8]) {
        use std::io::Write as _;
        let mut f = OpenOptions::new().append(true).open(path).expect("open for append");
        f.write_all(bytes).expect("append");
    }

    /// Regression (review C3): an all-zero record decodes as `start 0,
    /// len 0`, which used to pass the checks and cut the head log to 0.
    #[test]
    fn a_zero_record_after_the_index_does_not_empty_the_head_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (idx, log) = write_pair(dir.path(), b"precious output\n", &[rec(0, 16, 1)]);
        append_raw(&idx, &[0u8; 32]);
        let r = repair_path(&idx, &log, 0).expect("repair");
        assert_eq!((r.records, r.log_len, r.padding_records), (1, 16, 1));
        assert!(!r.cut_anything(), "padding is not a torn tail: {r:?}");
        assert_eq!(std::fs::read(&log).expect("log"), b"precious output\n");
        assert_eq!(
            std::fs::metadata(&idx).expect("idx").len(),
            record_pos(1),
            "the padding is cut"
        );
    }

    #[test]
    fn long_zero_padding_is_absent_and_found_without_reading_it_all() {
        let dir = tempfile::tempdir().expect("temp dir");
        let records: Vec<_> = (0..3000).map(|i| rec(i * 2, 2, i + 1)).collect();
        for (pad, name) in [(2048u64, "a"), (10_000, "b")] {
            let sub = dir.path().join(name);
            std::fs::create_dir(&sub).expect("dir");
            let (idx, log) = write_pair(&sub, &[b'x'; 6000], &records);
            append_raw(&idx, &vec![0u8; (pad * RECORD_LEN) as usize]);
            let r = repair_path(&idx, &log, 0).expect("repair");
            assert_eq!(
                (r.records, r.log_len, r.padding_records, r.cut_records),
                (3000, 6000, pad, 0)
            );
            assert_eq!(r.first, Some(records[0]));
            assert_eq!(r.last, Some(records[2999]));
            assert!(!r.cut_anything());
            assert_eq!(IndexReader::open(&idx).expect("open").count(), 3000);
        }
    }

    #[test]
    fn a_torn_record_before_padding_is_cut_with_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (idx, log) = write_pair(dir.path(), b"aabbcc", &[rec(0, 2, 1), rec(2, 2, 2)]);
        // Record 3 half written (its last bytes still zero), then padding.
        let mut torn = rec(4, 2, 3).encode();
        torn[12..].fill(0);
        append_raw(&idx, &torn);
        append_raw(&idx, &[0u8; 64 * 32]);
        let r = repair_path(&idx, &log, 0).expect("repair");
        assert_eq!((r.records, r.log_len, r.cut_records, r.padding_records), (2, 4, 1, 64));
        assert!(r.cut_anything());
        assert_eq!(std::fs::read(&log).expect("log"), b"aabb");
    }

    /// Review C3 and L4: records a writer never stores (len 0, SEQ 0), one
    /// not chained to the one before, and one whose end overflows are not
    /// kept (and do not panic).
    #[test]
    fn records_no_writer_stores_are_not_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bad = [
            rec(4, 0, 3),
            Append { seq: 0, ..rec(4, 2, 3) },
            rec(5, 1, 3),
            rec(4, 2, 2),
            Append {
                start: u64::MAX - 1,
                ..rec(0, 4, 3)
            },
        ];
        for (k, last) in bad.into_iter().enumerate() {
            let sub = dir.path().join(k.to_string());
            std::fs::create_dir(&sub).expect("dir");
            let (idx, log) = write_pair(&sub, b"aabbcc", &[rec(0, 2, 1), rec(2, 2, 2), last]);
            let r = repair_path(&idx, &log, 0).expect("repair");
            assert_eq!((r.records, r.log_len, r.cut_records), (2, 4, 1), "case {k}: {last:?}");
        }
        assert_eq!(
            Append {
                start: u64::MAX - 1,
                ..rec(0, 4, 3)
            }
            .end(),
            u64::MAX
        );
    }

    #[test]
    fn a_large_index_past_a_shortened_log_is_binary_searched_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let records: Vec<_> = (0..10_000).map(|i| rec(i, 1, i + 1)).collect();
        let (idx, log) = write_pair(dir.path(), &[b'y'; 10_000], &records);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .and_then(|f| f.set_len(1234))
            .expect("shorten the log");
        let r = repair_path(&idx, &log, 0).expect("repair");
        assert_eq!((r.records, r.log_len, r.cut_records), (1234, 1234, 10_000 - 1234));
        assert_eq!(r.last, Some(records[1233]));
        let (idx2, log2) = (dir.path().join("z.idx"), dir.path().join("z.log"));
        std::fs::write(&idx2, [0u8; 8]).expect("idx");
        let e = repair_path(&idx2, &log2, 0).expect_err("no header");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
