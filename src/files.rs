//! Atomic file writes: a reader sees the old file or the new one, never half of one.

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// Writes `bytes` to `path` through a temporary file in the same folder, then renames it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |out| {
        out.write_all(bytes).map_err(|e| Error::io(path, e))
    })
}

/// Writes `path` as `write` streams it (buffered), through a temporary file in the same folder
/// that is renamed once `write` succeeded and the data is on disk; on an error the temporary
/// file is removed and the old `path`, if any, stays.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(path, e))?;
        let mut out = std::io::BufWriter::new(file);
        write(&mut out)?;
        let file = out
            .into_inner()
            .map_err(|e| Error::io(path, e.into_error()))?;
        file.sync_all()
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    sync_dir(dir);
    Ok(())
}

/// Flushes `dir`'s entries (a rename into it) to disk, so that the rename survives a power cut.
/// Best effort: some file systems cannot sync a folder, and the data itself is already synced.
pub fn sync_dir(dir: &Path) {
    if let Ok(folder) = std::fs::File::open(dir) {
        let _ = folder.sync_all();
    }
}

/// True for the names of what an interrupted atomic write leaves behind: `.name.pid.tmp`.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Removes the temporary files and folders that an interrupted run left in `root` and in the
/// folders directly inside it.
pub fn remove_temporary(root: &Path) -> Result<()> {
    let read = |dir: &Path| std::fs::read_dir(dir).map_err(|e| Error::io(dir, e));
    let mut folders = vec![root.to_path_buf()];
    for entry in read(root)? {
        let path = entry.map_err(|e| Error::io(root, e))?.path();
        if path.is_dir() && !is_temporary(&path.file_name().unwrap_or_default().to_string_lossy()) {
            folders.push(path);
        }
    }
    for folder in folders {
        for entry in read(&folder)? {
            let path = entry.map_err(|e| Error::io(&folder, e))?.path();
            if !is_temporary(&path.file_name().unwrap_or_default().to_string_lossy()) {
                continue;
            }
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Copies `from` to `to` through a temporary file beside `to`, then renames it.
pub fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).map_err(|e| Error::io(from, e))?;
    write_atomic(to, &bytes)
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("vlinder's records serialise to JSON");
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Creates `dir` and its parents, with the path in the error.
pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// A CSV field: quoted when it holds a comma, quote or line break, and, when it starts with a
/// character that makes a spreadsheet read it as a formula (`= + - @`, tab, carriage return),
/// preceded by an apostrophe so that it stays text.
/// Opens a CSV with a header row: a row with another number of fields is an error of its own
/// when read. Returns the reader and the header, or an error naming the file.
pub fn csv_with_header(path: &Path) -> Result<(csv::Reader<std::fs::File>, csv::StringRecord)> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(path)
        .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
    let headers = reader
        .headers()
        .map_err(|e| Error::Layout {
            path: path.to_path_buf(),
            reason: format!("cannot read the header row: {e}"),
        })?
        .clone();
    Ok((reader, headers))
}

pub fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// `text` for a terminal: control characters (escape sequences, line breaks) written out as
/// escapes, so that a file name or record id cannot move the cursor or recolour the screen.
pub fn terminal_text(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreadsheet_formulas_stay_text_and_escapes_stay_visible() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(
            csv_field("=HYPERLINK(\"http://x\",\"y\")"),
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\""
        );
        for risky in ["+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert!(
                csv_field(risky).trim_start_matches('"').starts_with('\''),
                "{risky}"
            );
        }
        assert_eq!(
            terminal_text("id\u{1b}[31mred\nnext"),
            "id\\u{1b}[31mred\\nnext"
        );
        assert_eq!(terminal_text("vlinder é"), "vlinder é");
    }
}
