//! Reading submitted records from CSV and fetching their photos from disk or the web.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::archive::{Archive, is_archive};
use super::table::{Row, RowError, Table, TableOptions};
use crate::context::Context;
use crate::dataset::{ResizeFilter, decode};
use crate::sources::http::{Reach, Service};
use crate::{Error, Result};

/// The header names of the columns vlinder reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Columns {
    /// The column with the record's id.
    pub id_column: String,
    /// The columns with the record's photos, paths or http(s) URLs: one or more, and a cell may
    /// hold several photos separated by `|`.
    pub photo_columns: Vec<String>,
    /// The column with the species the volunteer named.
    pub species_column: String,
    /// The column with the observation date (2021-04-25 or 25-04-2021, a time may follow),
    /// for a model with a date and place prior.
    #[serde(default)]
    pub date_column: Option<String>,
    /// The column with the latitude in decimal degrees.
    #[serde(default)]
    pub latitude_column: Option<String>,
    /// The column with the longitude in decimal degrees.
    #[serde(default)]
    pub longitude_column: Option<String>,
}

impl Columns {
    /// Whether any column of date or place is named.
    pub fn has_context(&self) -> bool {
        self.date_column.is_some() || self.latitude_column.is_some()
    }
}

impl Default for Columns {
    /// `id`, `photo` and `species`, no date or place: the command line's defaults.
    fn default() -> Self {
        Columns {
            id_column: "id".into(),
            photo_columns: vec!["photo".into()],
            species_column: "species".into(),
            date_column: None,
            latitude_column: None,
            longitude_column: None,
        }
    }
}

/// One submitted record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The line of the file it came from (the header is line 1).
    pub row: u64,
    pub id: String,
    /// Its photos, in the order given: paths relative to the records file or http(s) URLs.
    pub photos: Vec<String>,
    pub claimed: String,
    /// The date and place read from the record's columns.
    #[serde(flatten)]
    pub context: Context,
    /// What of the date or place could not be used, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_warnings: Vec<String>,
}

impl Record {
    /// An empty record of line `row`, for one that could not be read.
    pub fn unread(row: u64) -> Self {
        Record {
            row,
            id: String::new(),
            photos: Vec::new(),
            claimed: String::new(),
            context: Context::default(),
            context_warnings: Vec::new(),
        }
    }
}

/// Why a record could not be checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordError {
    /// Boxed: a record is large beside the photo that most results carry.
    pub record: Box<Record>,
    pub message: String,
}

/// Reads the records; a malformed row becomes an error of its own, the rest are read.
pub fn read(
    path: &Path,
    columns: &Columns,
    options: &TableOptions,
) -> Result<Vec<Result<Record, RecordError>>> {
    Ok(Reader::open(path, columns, options)?.collect())
}

/// The photos of a cell: `|`-separated, each trimmed, empty ones left out.
fn photos_of(cell: &str) -> impl Iterator<Item = String> + '_ {
    cell.split('|')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
}

/// The records of a CSV, a workbook or a Darwin Core Archive one at a time, so that an export
/// of any size is read in constant memory (but for a workbook, and an archive's photo
/// links); a malformed row is an error of its own.
pub struct Reader {
    records: Box<dyn Iterator<Item = Result<Record, RecordError>> + Send>,
    /// An archive's unpacked files, kept while its rows are read.
    _archive: Option<Archive>,
}

impl Reader {
    /// Opens the records file and finds the named columns (an archive's come from its
    /// meta.xml), or says which is missing.
    pub fn open(path: &Path, columns: &Columns, options: &TableOptions) -> Result<Self> {
        if is_archive(path) {
            let archive = Archive::open(path)?;
            return Ok(Reader {
                records: Box::new(archive.records()?),
                _archive: Some(archive),
            });
        }
        Ok(Reader {
            records: Box::new(TableRecords::open(path, columns, options)?),
            _archive: None,
        })
    }
}

/// The longest id or name a record may give, in characters (a name with its author is some
/// 50): a longer one is a mistake or an attack, and would be stored and sent with every page.
pub const MAX_FIELD: usize = 500;
/// The longest photo path or URL, in bytes (browsers and servers stop near 8 KiB).
pub const MAX_PHOTO: usize = 8 * 1024;

impl Iterator for Reader {
    type Item = Result<Record, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(
            self.records
                .next()?
                .and_then(|record| match unfit(&record) {
                    None => Ok(record),
                    Some(message) => Err(RecordError {
                        record: Box::new(Record::unread(record.row)),
                        message: format!("line {}: {message}", record.row),
                    }),
                }),
        )
    }
}

/// Why a record read whole cannot be stored or shown: a NUL character (no database takes it in
/// text, and no name or path has one) or a field beyond [`MAX_FIELD`] or [`MAX_PHOTO`].
fn unfit(record: &Record) -> Option<String> {
    let fields = [("id", &record.id), ("species", &record.claimed)];
    for (what, text) in fields
        .into_iter()
        .chain(record.photos.iter().map(|p| ("photo", p)))
    {
        if text.contains('\0') {
            return Some(format!(
                "the {what} contains a NUL character (\\0); remove it"
            ));
        }
    }
    for (what, text) in fields {
        let n = text.chars().count();
        if n > MAX_FIELD {
            return Some(format!(
                "the {what} is {n} characters long, more than the {MAX_FIELD} allowed"
            ));
        }
    }
    record.photos.iter().find(|p| p.len() > MAX_PHOTO).map(|p| {
        format!(
            "a photo is {} bytes long, more than the {MAX_PHOTO} allowed for a path or URL",
            p.len()
        )
    })
}

/// The records of a CSV or workbook: its rows by the named columns.
struct TableRecords {
    path: PathBuf,
    rows: Table,
    /// The positions of the id, photo, species, date, latitude and longitude columns.
    id: usize,
    photos: Vec<usize>,
    species: usize,
    date: Option<usize>,
    latitude: Option<usize>,
    longitude: Option<usize>,
}

impl TableRecords {
    fn open(path: &Path, columns: &Columns, options: &TableOptions) -> Result<Self> {
        let table = Table::open(path, options)?;
        let headers = table.headers.clone();
        let find = |name: &str, option: &str| {
            headers
                .iter()
                .position(|h| h.trim() == name.trim())
                .ok_or_else(|| Error::Layout {
                    path: path.to_path_buf(),
                    reason: format!(
                        "no column named {name:?} (read as {}; columns: {}); name the right one with {option}",
                        table.dialect,
                        headers.join(", ")
                    ),
                })
        };
        let optional = |name: &Option<String>, option: &str| {
            name.as_deref().map(|n| find(n, option)).transpose()
        };
        if columns.photo_columns.is_empty() {
            return Err(Error::invalid(
                "photo-column",
                "(none)",
                "name at least one column with the records' photos",
            ));
        }
        Ok(TableRecords {
            id: find(&columns.id_column, "--id-column")?,
            photos: columns
                .photo_columns
                .iter()
                .map(|c| find(c, "--photo-column"))
                .collect::<Result<_>>()?,
            species: find(&columns.species_column, "--species-column")?,
            date: optional(&columns.date_column, "--date-column")?,
            latitude: optional(&columns.latitude_column, "--latitude-column")?,
            longitude: optional(&columns.longitude_column, "--longitude-column")?,
            path: path.to_path_buf(),
            rows: table,
        })
    }
}

impl Iterator for TableRecords {
    type Item = Result<Record, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(match self.rows.next()? {
            Ok(Row { line, fields }) => {
                let field =
                    |c: Option<usize>| c.and_then(|c| fields.get(c)).map_or("", String::as_str);
                let (context, context_warnings) = Context::parse(
                    field(self.date),
                    field(self.latitude),
                    field(self.longitude),
                );
                Ok(Record {
                    row: line,
                    id: field(Some(self.id)).to_string(),
                    photos: self
                        .photos
                        .iter()
                        .flat_map(|&c| photos_of(field(Some(c))).collect::<Vec<_>>())
                        .collect(),
                    claimed: field(Some(self.species)).to_string(),
                    context,
                    context_warnings,
                })
            }
            Err(RowError { line, message }) => Err(RecordError {
                record: Box::new(Record::unread(line)),
                message: format!("line {line} of {}: {message}", self.path.display()),
            }),
        })
    }
}

/// `path` with its `.` and `..` taken away as written, without looking at the file system.
fn lexically_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut normal = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                normal.pop();
            }
            Component::CurDir => {}
            other => normal.push(other),
        }
    }
    normal
}

/// A record's photo, ready for the model, with a thumbnail for the report or the queue.
pub struct LoadedPhoto {
    pub pixels: Vec<u8>,
    /// A JPEG at most `thumbnail` pixels on its longer side.
    pub thumbnail: Vec<u8>,
}

/// Largest photo accepted, from a file or a URL.
const MAX_DOWNLOAD: u64 = 50 * 1024 * 1024;

/// Where the records' photos come from.
pub struct PhotoSources {
    /// The folder relative paths start from (the CSV's).
    pub base: PathBuf,
    /// The folder every local photo must lie inside (canonical).
    pub root: PathBuf,
    /// Downloads of photo URLs.
    pub web: Service,
}

/// The downloader of photo URLs: no retries (a record that fails is reported, not waited for),
/// private addresses refused unless `allow_private`.
pub fn web(allow_private: bool) -> Service {
    Service::new(
        u32::MAX,
        Duration::from_secs(30),
        0,
        Duration::ZERO,
        Reach::from_allow_private(allow_private),
    )
}

/// Loads the photo of a record from an http(s) URL or a path, relative to `sources.base`, that
/// must lie inside `sources.root`.
pub fn load_photo(
    photo: &str,
    sources: &PhotoSources,
    size: u32,
    filter: ResizeFilter,
    thumbnail: u32,
) -> Result<LoadedPhoto, String> {
    let photo = photo.trim();
    if photo.is_empty() {
        return Err("the photo column is empty".into());
    }
    let (bytes, origin) = if photo.starts_with("http://") || photo.starts_with("https://") {
        let bytes = sources
            .web
            .retrying(|| sources.web.get(photo, &[], MAX_DOWNLOAD, false))
            .map_err(|why| format!("{photo}: {why}"))?;
        (bytes, PathBuf::from(photo))
    } else {
        let path = sources.base.join(photo);
        (read_local(photo, &path, &sources.root)?, path)
    };
    let image = decode::image_from_bytes(&bytes, &origin).map_err(|e| e.to_string())?;
    let rgb = image.to_rgb8();
    drop(image);
    let mut jpeg = Vec::new();
    // Never larger than the photo itself.
    decode::shrink_within(&rgb, thumbnail)
        .as_ref()
        .unwrap_or(&rgb)
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .map_err(|e| format!("cannot make a thumbnail: {e}"))?;
    Ok(LoadedPhoto {
        pixels: decode::square_from_rgb(rgb, size, filter),
        thumbnail: jpeg,
    })
}

/// The bytes of the photo file `written` (a record's path, at `path` once joined to the
/// records' folder) inside `root`: a path leading elsewhere (through `..` or a link),
/// anything but a regular file (a FIFO would block, a device never end) and a file over the
/// size limit are refused before reading. Messages name the path as the record wrote it, and
/// a path outside the folder gets the same answer whether or not something is there.
fn read_local(written: &str, path: &Path, root: &Path) -> std::result::Result<Vec<u8>, String> {
    let shown = written;
    let outside = || {
        format!(
            "{shown}: outside the photos folder {}; photos must lie inside it (--photos-root names another)",
            root.display()
        )
    };
    if !lexically_normal(path).starts_with(root) {
        return Err(outside());
    }
    let real = path.canonicalize().map_err(|e| format!("{shown}: {e}"))?;
    if !real.starts_with(root) {
        return Err(outside());
    }
    let metadata = std::fs::metadata(&real).map_err(|e| format!("{shown}: {e}"))?;
    if !metadata.is_file() {
        return Err(format!("{shown}: not a regular file"));
    }
    if metadata.len() > MAX_DOWNLOAD {
        return Err(format!(
            "{shown}: larger than {} MiB",
            MAX_DOWNLOAD / 1024 / 1024
        ));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    std::fs::File::open(&real)
        .and_then(|f| f.take(MAX_DOWNLOAD + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("{shown}: {e}"))?;
    Ok(bytes)
}
