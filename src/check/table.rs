//! Records files as spreadsheets write them: CSV with a comma, semicolon (Dutch Excel's
//! default) or tab, found from the header row; UTF-8 with or without a byte-order mark, or
//! Windows-1252 (what Excel saves as "CSV" on Windows), found when the file is not valid UTF-8;
//! and `.xlsx` workbooks, the first sheet or a named one. Each gives a header row and then rows
//! of text fields with the line (or spreadsheet row) they came from.

use std::io::Read;
use std::path::{Path, PathBuf};

use calamine::{Data, Reader as _};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A records file's text encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// UTF-8, with or without a byte-order mark.
    #[cfg_attr(feature = "cli", value(name = "utf-8"))]
    #[serde(rename = "utf-8")]
    Utf8,
    /// Windows-1252 (Western European), as Excel on Windows saves CSV.
    #[cfg_attr(feature = "cli", value(name = "windows-1252"))]
    #[serde(rename = "windows-1252")]
    Windows1252,
}

/// How to read a records file; what is left out is found from the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableOptions {
    /// The CSV field separator (default: whichever of `,`, `;` and tab the header row has most
    /// of).
    #[serde(default)]
    pub delimiter: Option<char>,
    /// The CSV's encoding (default: UTF-8, or Windows-1252 when the file is not valid UTF-8).
    #[serde(default)]
    pub encoding: Option<Encoding>,
    /// The worksheet of an `.xlsx` workbook (default: the first).
    #[serde(default)]
    pub sheet: Option<String>,
}

/// One data row: its fields, and the line of the file (or row of the sheet) it starts on, the
/// header being line 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub line: u64,
    pub fields: Vec<String>,
}

/// A row that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub message: String,
}

/// A records file opened: its header and its rows, read one at a time (a CSV in constant
/// memory; a workbook's sheet is read whole, as spreadsheets are small).
pub struct Table {
    pub headers: Vec<String>,
    /// What was found: the delimiter and encoding of a CSV, the sheet of a workbook.
    pub dialect: String,
    rows: Box<dyn Iterator<Item = std::result::Result<Row, RowError>> + Send>,
}

impl Iterator for Table {
    type Item = std::result::Result<Row, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rows.next()
    }
}

/// Whether `path` names an Excel workbook (by its extension, in any case).
pub fn is_workbook(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("xlsx") || e.eq_ignore_ascii_case("xlsm"))
}

impl Table {
    /// Opens a CSV or `.xlsx` records file.
    pub fn open(path: &Path, options: &TableOptions) -> Result<Table> {
        if is_workbook(path) {
            return workbook(path, options.sheet.as_deref());
        }
        if options.sheet.is_some() {
            return Err(Error::invalid(
                "sheet",
                options.sheet.as_deref().unwrap_or_default(),
                "only for .xlsx workbooks; this records file is read as CSV",
            ));
        }
        csv_table(path, options)
    }
}

fn layout(path: &Path, reason: impl Into<String>) -> Error {
    Error::Layout {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Whether the whole file is valid UTF-8 (read in blocks, so a file of any size costs little
/// memory).
fn is_utf8(path: &Path) -> Result<bool> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut block = vec![0u8; 1 << 16];
    let mut carried = 0;
    loop {
        let n = file
            .read(&mut block[carried..])
            .map_err(|e| Error::io(path, e))?;
        let filled = carried + n;
        match std::str::from_utf8(&block[..filled]) {
            Ok(_) => carried = 0,
            // A character cut at the block's end is carried into the next block.
            Err(e) if e.error_len().is_none() && n > 0 => {
                let valid = e.valid_up_to();
                block.copy_within(valid..filled, 0);
                carried = filled - valid;
            }
            Err(_) => return Ok(false),
        }
        if n == 0 {
            return Ok(carried == 0);
        }
    }
}

/// The file's bytes as UTF-8 text, transcoded as they are read; a UTF-8 byte-order mark is
/// dropped.
fn text(path: &Path, encoding: Encoding) -> Result<Box<dyn Read + Send>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let encoding = match encoding {
        Encoding::Utf8 => encoding_rs::UTF_8,
        Encoding::Windows1252 => encoding_rs::WINDOWS_1252,
    };
    let decoded = encoding_rs_io::DecodeReaderBytesBuilder::new()
        .encoding(Some(encoding))
        .bom_override(true)
        .build(std::io::BufReader::new(file));
    Ok(Box::new(LineFeeds {
        inner: std::io::BufReader::new(decoded),
        carriage: false,
    }))
}

/// Text with each CR LF turned into LF. The CSV reader takes CR LF as one row's end but starts
/// counting the next row's line before its LF, so a Windows file's rows would each be reported
/// a line too early.
struct LineFeeds<R> {
    inner: R,
    /// A CR was read and not yet given out: it is dropped if an LF follows.
    carriage: bool,
}

impl<R: std::io::BufRead> Read for LineFeeds<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut written = 0;
        while written < buf.len() {
            let available = self.inner.fill_buf()?;
            if std::mem::take(&mut self.carriage) && available.first() != Some(&b'\n') {
                buf[written] = b'\r';
                written += 1;
                continue;
            }
            if available.is_empty() {
                break;
            }
            let mut used = 0;
            while used < available.len() && written < buf.len() {
                let byte = available[used];
                used += 1;
                if byte == b'\r' {
                    // Held back until the next byte is seen, which may be in the next block.
                    self.carriage = true;
                    break;
                }
                buf[written] = byte;
                written += 1;
            }
            self.inner.consume(used);
        }
        Ok(written)
    }
}

/// The separator the header row has most of, outside quotes (a comma on a tie or none).
fn sniff_delimiter(header: &str) -> u8 {
    let mut counts = [(b',', 0usize), (b';', 0), (b'\t', 0)];
    let mut quoted = false;
    for b in header.bytes() {
        match b {
            b'"' => quoted = !quoted,
            _ if !quoted => {
                if let Some(c) = counts.iter_mut().find(|(d, _)| *d == b) {
                    c.1 += 1;
                }
            }
            _ => {}
        }
    }
    counts
        .iter()
        .fold((b',', 0), |best, &c| if c.1 > best.1 { c } else { best })
        .0
}

fn csv_table(path: &Path, options: &TableOptions) -> Result<Table> {
    let encoding = match options.encoding {
        Some(e) => e,
        None if is_utf8(path)? => Encoding::Utf8,
        None => Encoding::Windows1252,
    };
    let delimiter = match options.delimiter {
        Some(d) if d.is_ascii() && d != '"' && d != '\n' && d != '\r' => d as u8,
        Some(d) => {
            return Err(Error::invalid(
                "delimiter",
                d.escape_debug(),
                "a single ASCII character other than a quote or a line break, e.g. ';' or tab",
            ));
        }
        None => {
            let mut first = String::new();
            let mut reader = std::io::BufReader::new(text(path, encoding)?);
            std::io::BufRead::read_line(&mut reader, &mut first)
                .map_err(|e| layout(path, format!("cannot read the header row ({e})")))?;
            sniff_delimiter(&first)
        }
    };
    // Rows must have the header's fields: one more is a comma in a name that was not quoted,
    // and would shift every column after it.
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_reader(text(path, encoding)?);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| layout(path, format!("cannot read the header row ({e})")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if headers.iter().all(String::is_empty) {
        return Err(layout(
            path,
            "the file is empty: a records file starts with a header row naming its columns",
        ));
    }
    let file: PathBuf = path.to_path_buf();
    let rows = reader.into_records().map(move |row| match row {
        Ok(fields) => Ok(Row {
            line: fields.position().map_or(0, |p| p.line()),
            fields: fields.iter().map(str::to_string).collect(),
        }),
        Err(e) => Err(RowError {
            line: e.position().map_or(0, |p| p.line()),
            message: match e.kind() {
                csv::ErrorKind::Utf8 { .. } => format!(
                    "not valid UTF-8 text; give {} the right --encoding",
                    file.display()
                ),
                _ => format!("malformed CSV row ({e})"),
            },
        }),
    });
    let name = match delimiter {
        b'\t' => "tab".to_string(),
        d => format!("{:?}", d as char),
    };
    Ok(Table {
        headers,
        dialect: format!(
            "{} separated, {}",
            name,
            match encoding {
                Encoding::Utf8 => "UTF-8",
                Encoding::Windows1252 => "Windows-1252",
            }
        ),
        rows: Box::new(rows),
    })
}

/// A cell as the text a person sees in the spreadsheet: whole numbers without a decimal
/// point, dates as 2021-04-25 (with the time when it has one).
fn cell_text(cell: &Data) -> String {
    match cell {
        Data::Empty => String::new(),
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        Data::DateTime(d) => {
            let (y, m, day, h, min, s, _) = d.to_ymd_hms_milli();
            if (h, min, s) == (0, 0, 0) {
                format!("{y:04}-{m:02}-{day:02}")
            } else {
                format!("{y:04}-{m:02}-{day:02} {h:02}:{min:02}:{s:02}")
            }
        }
        other => other.to_string(),
    }
}

fn workbook(path: &Path, sheet: Option<&str>) -> Result<Table> {
    let unreadable =
        |e: calamine::XlsxError| layout(path, format!("cannot read it as an Excel workbook ({e})"));
    let mut book: calamine::Xlsx<_> = calamine::open_workbook(path).map_err(unreadable)?;
    let names = book.sheet_names();
    let name = match sheet {
        Some(wanted) => names
            .iter()
            .find(|n| *n == wanted)
            .cloned()
            .ok_or_else(|| {
                layout(
                    path,
                    format!("no sheet named {wanted:?} (sheets: {})", names.join(", ")),
                )
            })?,
        None => names
            .first()
            .cloned()
            .ok_or_else(|| layout(path, "the workbook has no sheet"))?,
    };
    let range = book.worksheet_range(&name).map_err(unreadable)?;
    // Rows are numbered as the spreadsheet shows them, from where the sheet's data starts.
    let first_row = range.start().map_or(0, |(row, _)| row as u64);
    let mut rows = range.rows().enumerate();
    let headers: Vec<String> = match rows.next() {
        Some((_, header)) => header
            .iter()
            .map(|c| cell_text(c).trim().to_string())
            .collect(),
        None => return Err(layout(path, format!("sheet {name:?} is empty"))),
    };
    let data: Vec<std::result::Result<Row, RowError>> = rows
        .map(|(i, cells)| {
            Ok(Row {
                line: first_row + i as u64 + 1,
                fields: cells.iter().map(cell_text).collect(),
            })
        })
        .filter(|row| {
            row.as_ref()
                .is_ok_and(|r| r.fields.iter().any(|f| !f.is_empty()))
        })
        .collect();
    Ok(Table {
        headers,
        dialect: format!("sheet {name:?}"),
        rows: Box::new(data.into_iter()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delimiter_is_the_separator_the_header_has_most_of() {
        assert_eq!(sniff_delimiter("id,photo,species\n"), b',');
        assert_eq!(sniff_delimiter("ID;Foto;Soort\r\n"), b';');
        assert_eq!(sniff_delimiter("id\tphoto\tspecies"), b'\t');
        assert_eq!(
            sniff_delimiter("\"a;b\",c,d"),
            b',',
            "quoted separators do not count"
        );
        assert_eq!(sniff_delimiter("id"), b',');
    }

    #[test]
    fn utf8_is_told_from_windows_1252_across_block_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let utf8 = dir.path().join("utf8.csv");
        // A two-byte character straddling the first 64 KiB block's end.
        let mut text = "a".repeat((1 << 16) - 1);
        text.push_str("ë\n");
        std::fs::write(&utf8, &text).unwrap();
        assert!(is_utf8(&utf8).unwrap());
        let latin = dir.path().join("latin.csv");
        std::fs::write(&latin, b"id;Soort\n1;Citroenvlinder \xe9\n").unwrap();
        assert!(!is_utf8(&latin).unwrap());
        let table = Table::open(&latin, &TableOptions::default()).unwrap();
        assert_eq!(table.headers, ["id", "Soort"]);
        assert_eq!(table.dialect, "';' separated, Windows-1252");
        let rows: Vec<Row> = table.map(|r| r.unwrap()).collect();
        assert_eq!(rows[0].fields, ["1", "Citroenvlinder é"]);
        assert_eq!(rows[0].line, 2);
    }

    #[test]
    fn windows_line_ends_are_counted_as_an_editor_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let crlf = dir.path().join("crlf.csv");
        // A lone CR inside a quoted cell stays; CR LF, also at a read block's end, is one line.
        let mut text = "id,note\r\n1,\"a\rb\"\r\n".to_string();
        text.push_str(&format!("2,{}\r\n3,c\r\n", "x".repeat(8190)));
        std::fs::write(&crlf, &text).unwrap();
        let rows: Vec<Row> = Table::open(&crlf, &TableOptions::default())
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 3, 4]);
        assert_eq!(rows[0].fields, ["1", "a\rb"]);
        assert_eq!(rows[2].fields, ["3", "c"]);
    }
}
