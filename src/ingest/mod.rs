//! Reading content from files: streaming, line-numbered, bounded.
//!
//! Inputs can be larger than memory and can be wrong anywhere. So a file is read one line at a
//! time (a line longer than the limit is skipped without ever being held whole), and every problem
//! is reported with the line it came from, so one bad record never costs the rest of the file.

pub mod embed_file;
pub mod jsonl;
pub mod pipeline;
pub mod reindex;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Errors that stop reading a file altogether (bad lines are [`jsonl::RecordError`]s instead).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("read error in {} after line {line}: {source}", path.display())]
    Read {
        path: PathBuf,
        line: usize,
        source: io::Error,
    },
}

/// Standard input copied to a file under a directory, removed when dropped: ingest and tagging
/// read their input twice (once to find the last record of each id, once to process it), which a
/// pipe cannot do.
pub struct SpooledStdin(PathBuf);

impl SpooledStdin {
    /// Copy all of standard input to `dir/.stdin-<pid>.jsonl`.
    pub fn new(dir: &Path) -> Result<Self, InputError> {
        let open_err = |path: &Path, source| InputError::Open {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(dir, e))?;
        let spooled = Self(dir.join(format!(".stdin-{}.jsonl", std::process::id())));
        let mut file = File::create(&spooled.0).map_err(|e| open_err(&spooled.0, e))?;
        io::copy(&mut io::stdin().lock(), &mut file).map_err(|source| InputError::Read {
            path: PathBuf::from("<stdin>"),
            line: 0,
            source,
        })?;
        Ok(spooled)
    }

    /// Where the copy is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SpooledStdin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A file opened for streaming, plain or gzip'd (by its `.gz` suffix).
pub struct InputFile {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    /// Bytes of the file read so far (compressed bytes for `.gz`), for progress bars.
    bytes_read: Arc<AtomicU64>,
    /// File size on disk, for progress bars.
    pub size: u64,
}

impl InputFile {
    /// Open `path`; a `.gz` file is decompressed on the fly, and `-` is standard input.
    pub fn open(path: &Path) -> Result<Self, InputError> {
        let open_err = |source| InputError::Open {
            path: path.to_path_buf(),
            source,
        };
        if path == Path::new("-") {
            return Ok(Self {
                path: PathBuf::from("<stdin>"),
                reader: Box::new(BufReader::with_capacity(1 << 16, io::stdin())),
                bytes_read: Arc::new(AtomicU64::new(0)),
                size: 0,
            });
        }
        let file = File::open(path).map_err(open_err)?;
        let size = file.metadata().map_err(open_err)?.len();
        let bytes_read = Arc::new(AtomicU64::new(0));
        let counted = CountingReader {
            inner: file,
            count: bytes_read.clone(),
        };
        let reader: Box<dyn BufRead + Send> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(BufReader::with_capacity(
                1 << 16,
                flate2::read::MultiGzDecoder::new(BufReader::new(counted)),
            ))
        } else {
            Box::new(BufReader::with_capacity(1 << 16, counted))
        };
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            bytes_read,
            size,
        })
    }

    /// The path this file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle that reports how many bytes of the file have been read.
    pub fn progress(&self) -> Arc<AtomicU64> {
        self.bytes_read.clone()
    }

    /// The decompressed byte stream, for formats with their own record syntax (CSV).
    pub fn into_reader(self) -> Box<dyn BufRead + Send> {
        self.reader
    }

    /// Iterate over lines of at most `max_line_bytes` bytes (newline excluded).
    pub fn lines(self, max_line_bytes: usize) -> Lines {
        Lines {
            path: self.path,
            reader: self.reader,
            number: 0,
            max_line_bytes,
        }
    }
}

struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// One line of input: its 1-based number and content, or why it could not be kept.
#[derive(Debug)]
pub struct Line {
    pub number: usize,
    pub content: Result<String, LineProblem>,
}

/// Why a line's content is not available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineProblem {
    /// Longer than the limit; its bytes were skipped, not stored.
    TooLong { bytes: usize, limit: usize },
    /// Not valid UTF-8.
    NotUtf8,
}

impl std::fmt::Display for LineProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLong { bytes, limit } => {
                write!(
                    f,
                    "line is {bytes} bytes, over the limit of {limit} (see --max-line-bytes)"
                )
            }
            Self::NotUtf8 => write!(f, "line is not valid UTF-8"),
        }
    }
}

/// Iterator over the lines of an [`InputFile`].
pub struct Lines {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    number: usize,
    max_line_bytes: usize,
}

impl Iterator for Lines {
    type Item = Result<Line, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut buf = Vec::new();
        let mut total = 0usize;
        let mut saw_any = false;
        loop {
            let chunk = match self.reader.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Some(Err(InputError::Read {
                        path: self.path.clone(),
                        line: self.number,
                        source,
                    }))
                }
            };
            if chunk.is_empty() {
                if !saw_any {
                    return None;
                }
                break;
            }
            saw_any = true;
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (chunk.len(), false),
            };
            if total + take <= self.max_line_bytes {
                buf.extend_from_slice(&chunk[..take]);
            }
            total += take;
            self.reader.consume(take + usize::from(done));
            if done {
                break;
            }
        }
        self.number += 1;
        // A UTF-8 byte-order mark (Windows editors write one) is not part of the first record.
        if self.number == 1 && buf.starts_with(b"\xEF\xBB\xBF") {
            buf.drain(..3);
            total -= 3;
        }
        if buf.last() == Some(&b'\r') && total <= self.max_line_bytes {
            buf.pop();
            total -= 1;
        }
        let content = if total > self.max_line_bytes {
            Err(LineProblem::TooLong {
                bytes: total,
                limit: self.max_line_bytes,
            })
        } else {
            String::from_utf8(buf).map_err(|_| LineProblem::NotUtf8)
        };
        Some(Ok(Line {
            number: self.number,
            content,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn lines_are_numbered_and_long_lines_are_skipped_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        let long = "y".repeat(100);
        std::fs::write(&path, format!("a\r\n{long}\n\nb\n\u{e9}")).unwrap();
        let lines: Vec<Line> = InputFile::open(&path)
            .unwrap()
            .lines(10)
            .map(Result::unwrap)
            .collect();
        let got: Vec<(usize, Result<String, LineProblem>)> =
            lines.into_iter().map(|l| (l.number, l.content)).collect();
        assert_eq!(
            got,
            vec![
                (1, Ok("a".into())),
                (
                    2,
                    Err(LineProblem::TooLong {
                        bytes: 100,
                        limit: 10
                    })
                ),
                (3, Ok(String::new())),
                (4, Ok("b".into())),
                (5, Ok("\u{e9}".into())),
            ]
        );
    }

    #[test]
    fn gzip_files_are_read_transparently() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::default(),
        );
        gz.write_all(b"{\"id\":1}\n{\"id\":2}\n").unwrap();
        gz.finish().unwrap();
        let input = InputFile::open(&path).unwrap();
        let progress = input.progress();
        let n = input.lines(1 << 20).count();
        assert_eq!(n, 2);
        assert_eq!(
            progress.load(Ordering::Relaxed),
            std::fs::metadata(&path).unwrap().len()
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = InputFile::open(Path::new("/nonexistent/x.jsonl"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nonexistent/x.jsonl"));
    }
}
