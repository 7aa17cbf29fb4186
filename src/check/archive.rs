//! Darwin Core Archives, as GBIF, Observation.org, iDigBio and an IPT publish records: a folder
//! or a zip with `meta.xml`, which says which file is the core (one row per occurrence) and
//! which columns hold which terms, and extension files with rows that point at the core's id.
//! A record's id is its occurrenceID (else the core's id), its claimed name the scientificName
//! (else the vernacularName), its date and place eventDate, decimalLatitude and
//! decimalLongitude; its photos are the still images of the Simple Multimedia extension
//! (`identifier`) or the Audubon Core one (`accessURI`), else the core's associatedMedia.
//!
//! A zip's files are unpacked into a temporary folder, each refused beyond [`MAX_UNPACKED`]
//! bytes, so that a zip bomb stops with an error; a location that leads outside the archive is
//! refused. The core is read a row at a time; the media extension is read first and held as
//! the photos of each id.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use super::records::{Record, RecordError};
use super::table::Encoding;
use crate::context::Context;
use crate::{Error, Result};

/// The most a file of a zipped archive may unpack to.
pub const MAX_UNPACKED: u64 = 2 << 30;

/// Text compresses some tenfold; a file declared to unpack to more than this many times its
/// packed size (and more than a few megabytes) is a zip bomb, refused before it is unpacked.
const MAX_RATIO: u64 = 200;

const DWC: &str = "http://rs.tdwg.org/dwc/terms/";
const SIMPLE_MULTIMEDIA: &str = "http://rs.gbif.org/terms/1.0/multimedia";
const AUDUBON: &str = "http://rs.tdwg.org/ac/terms/multimedia";

/// Whether `path` is a Darwin Core Archive: a zip (other than a workbook, which is one too), or a
/// folder with a meta.xml.
pub fn is_archive(path: &Path) -> bool {
    if path.is_dir() {
        return path.join("meta.xml").is_file();
    }
    if super::table::is_workbook(path) {
        return false;
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|_| magic == *b"PK\x03\x04")
}

/// One data file of the archive as meta.xml describes it.
#[derive(Debug, Clone)]
struct DataFile {
    location: PathBuf,
    delimiter: u8,
    quote: Option<u8>,
    header_lines: usize,
    encoding: Encoding,
    /// The column of the row's id (the core's `id`, an extension's `coreid`).
    id: usize,
    /// Columns by term, the term's last path segment in lower case (`scientificname`).
    terms: HashMap<String, usize>,
    /// The largest column index meta.xml names.
    widest: usize,
}

impl DataFile {
    fn column(&self, term: &str) -> Option<usize> {
        self.terms.get(&term.to_ascii_lowercase()).copied()
    }
}

/// A `fieldsTerminatedBy` or `fieldsEnclosedBy` value: `\t` and the like as written in XML.
fn separator(value: &str) -> Option<u8> {
    match value {
        "" => None,
        "\\t" | "\t" => Some(b'\t'),
        "\\n" => Some(b'\n'),
        other => other.bytes().next(),
    }
}

/// The last segment of a term's URI, lower case: `http://rs.tdwg.org/dwc/terms/eventDate`
/// is `eventdate`.
fn term_name(uri: &str) -> String {
    uri.rsplit(['/', '#', ':'])
        .next()
        .unwrap_or(uri)
        .to_ascii_lowercase()
}

fn data_file(node: roxmltree::Node, id_tag: &str, meta: &Path) -> Result<DataFile> {
    let bad = |reason: String| Error::Layout {
        path: meta.to_path_buf(),
        reason,
    };
    let attribute = |name: &str, default: &str| node.attribute(name).unwrap_or(default).to_string();
    let location = node
        .descendants()
        .find(|n| n.has_tag_name("location"))
        .and_then(|n| n.text())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| {
            bad(format!(
                "a <{}> without a <files><location>",
                node.tag_name().name()
            ))
        })?;
    let location = PathBuf::from(location);
    if location.is_absolute()
        || location
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(bad(format!(
            "the location {} leads outside the archive; an archive names its own files",
            location.display()
        )));
    }
    let index = |n: roxmltree::Node| -> Result<usize> {
        n.attribute("index")
            .and_then(|i| i.trim().parse().ok())
            .ok_or_else(|| bad(format!("<{}> without a column index", n.tag_name().name())))
    };
    let id = node
        .children()
        .find(|n| n.has_tag_name(id_tag))
        .map(index)
        .transpose()?
        .ok_or_else(|| {
            bad(format!(
                "no <{id_tag} index=...> for {}",
                location.display()
            ))
        })?;
    let mut terms = HashMap::new();
    let mut widest = id;
    for field in node.children().filter(|n| n.has_tag_name("field")) {
        // A field with a default value and no index is the same for every row: not a column.
        let Some(i) = field.attribute("index") else {
            continue;
        };
        let i: usize = i
            .trim()
            .parse()
            .map_err(|_| bad(format!("a field index {i:?} that is not a number")))?;
        widest = widest.max(i);
        if let Some(term) = field.attribute("term") {
            terms.entry(term_name(term)).or_insert(i);
        }
    }
    let written = attribute("encoding", "UTF-8");
    let encoding = match written.to_ascii_lowercase().as_str() {
        "utf-8" | "utf8" => Encoding::Utf8,
        "windows-1252" | "cp1252" | "iso-8859-1" | "latin1" | "iso-latin-1" => {
            Encoding::Windows1252
        }
        _ => {
            return Err(bad(format!(
                "{} is in {written:?}, which vlinder cannot read; it reads UTF-8 and Windows-1252",
                location.display()
            )));
        }
    };
    Ok(DataFile {
        location,
        delimiter: separator(&attribute("fieldsTerminatedBy", ",")).unwrap_or(b','),
        quote: separator(&attribute("fieldsEnclosedBy", "\"")),
        header_lines: attribute("ignoreHeaderLines", "0")
            .trim()
            .parse()
            .unwrap_or(0),
        encoding,
        id,
        terms,
        widest,
    })
}

/// A Darwin Core Archive opened: where its files are (a zip's, unpacked) and what meta.xml
/// says of its core and its media.
pub struct Archive {
    /// Shown in messages: the archive as the user named it.
    path: PathBuf,
    folder: PathBuf,
    /// The unpacked files of a zip, removed when the archive is dropped.
    _unpacked: Option<tempfile::TempDir>,
    core: DataFile,
    media: Option<(DataFile, MediaKind)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum MediaKind {
    Simple,
    Audubon,
}

impl Archive {
    pub fn open(path: &Path) -> Result<Archive> {
        let (folder, unpacked) = if path.is_dir() {
            (path.to_path_buf(), None)
        } else {
            let dir = tempfile::Builder::new()
                .prefix("vlinder-archive-")
                .tempdir()
                .map_err(|e| Error::io(path, e))?;
            unpack(path, Path::new("meta.xml"), dir.path())?;
            (dir.path().to_path_buf(), Some(dir))
        };
        let meta = folder.join("meta.xml");
        let shown = path.join("meta.xml");
        let text = std::fs::read_to_string(&meta).map_err(|e| Error::Layout {
            path: shown.clone(),
            reason: format!("cannot read it ({e}); a Darwin Core Archive has a meta.xml"),
        })?;
        let doc = roxmltree::Document::parse(&text).map_err(|e| Error::Layout {
            path: shown.clone(),
            reason: format!("not valid XML ({e})"),
        })?;
        let root = doc.root_element();
        let core = root
            .children()
            .find(|n| n.has_tag_name("core"))
            .ok_or_else(|| Error::Layout {
                path: shown.clone(),
                reason: "no <core>: meta.xml must name the archive's core file".into(),
            })?;
        let core = data_file(core, "id", &shown)?;
        let mut media = None;
        for extension in root.children().filter(|n| n.has_tag_name("extension")) {
            let kind = match extension.attribute("rowType").map(str::to_ascii_lowercase) {
                Some(t) if t == SIMPLE_MULTIMEDIA => MediaKind::Simple,
                Some(t) if t == AUDUBON => MediaKind::Audubon,
                _ => continue,
            };
            media = Some((data_file(extension, "coreid", &shown)?, kind));
            break;
        }
        if let Some(dir) = &unpacked {
            let files = std::iter::once(&core).chain(media.as_ref().map(|(m, _)| m));
            for file in files {
                unpack(path, &file.location, dir.path())?;
            }
        }
        Ok(Archive {
            path: path.to_path_buf(),
            folder,
            _unpacked: unpacked,
            core,
            media,
        })
    }

    /// The folder photo paths in the archive are relative to.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// A data file's rows, after its header lines: (line, fields).
    fn rows(
        &self,
        file: &DataFile,
    ) -> Result<impl Iterator<Item = (u64, std::result::Result<Vec<String>, String>)> + Send + use<>>
    {
        let path = self.folder.join(&file.location);
        let shown = self.path.join(&file.location);
        let opened = std::fs::File::open(&path).map_err(|e| Error::Layout {
            path: shown.clone(),
            reason: format!("meta.xml names it, but it cannot be read ({e})"),
        })?;
        let encoding = match file.encoding {
            Encoding::Utf8 => encoding_rs::UTF_8,
            Encoding::Windows1252 => encoding_rs::WINDOWS_1252,
        };
        let mut text = BufReader::new(
            encoding_rs_io::DecodeReaderBytesBuilder::new()
                .encoding(Some(encoding))
                .bom_override(true)
                .build(opened),
        );
        // Header lines are skipped as lines, not parsed: a header with an unbalanced quote
        // would otherwise swallow the first row.
        let mut skipped = String::new();
        for _ in 0..file.header_lines {
            skipped.clear();
            text.read_line(&mut skipped)
                .map_err(|e| Error::io(&shown, e))?;
        }
        let mut builder = csv::ReaderBuilder::new();
        builder
            .has_headers(false)
            .flexible(true)
            .delimiter(file.delimiter);
        match file.quote {
            Some(q) => builder.quote(q),
            None => builder.quoting(false),
        };
        let first_line = file.header_lines as u64;
        let widest = file.widest;
        let location = file.location.display().to_string();
        Ok(builder.from_reader(text).into_records().map(move |row| match row {
            Ok(fields) => {
                let line = first_line + fields.position().map_or(0, |p| p.line());
                if fields.len() <= widest {
                    return (
                        line,
                        Err(format!(
                            "line {line} of {location} has {} columns; meta.xml names column {widest}",
                            fields.len()
                        )),
                    );
                }
                (line, Ok(fields.iter().map(str::to_string).collect()))
            }
            Err(e) => {
                let line = first_line + e.position().map_or(0, |p| p.line());
                (line, Err(format!("line {line} of {location}: malformed row ({e})")))
            }
        }))
    }

    /// Each core id's photos from the media extension, in the file's order; still images only.
    fn photos_by_id(&self) -> Result<HashMap<String, Vec<String>>> {
        let mut photos: HashMap<String, Vec<String>> = HashMap::new();
        let Some((file, kind)) = &self.media else {
            return Ok(photos);
        };
        let url = match kind {
            MediaKind::Simple => file.column("identifier"),
            MediaKind::Audubon => file.column("accessURI"),
        };
        let Some(url) = url else {
            return Err(Error::Layout {
                path: self.path.join("meta.xml"),
                reason: format!(
                    "the media extension {} has no {} column",
                    file.location.display(),
                    match kind {
                        MediaKind::Simple => "identifier",
                        MediaKind::Audubon => "accessURI",
                    }
                ),
            });
        };
        let (kind_column, format) = (file.column("type"), file.column("format"));
        for (_, row) in self.rows(file)? {
            // A malformed media row loses that photo, not the record.
            let Ok(fields) = row else { continue };
            let get = |c: Option<usize>| c.and_then(|c| fields.get(c)).map_or("", |f| f.trim());
            let still = {
                let t = get(kind_column).to_ascii_lowercase();
                t.is_empty() || t.ends_with("stillimage") || t == "image"
            };
            let image = {
                let f = get(format).to_ascii_lowercase();
                f.is_empty() || f.starts_with("image/")
            };
            let link = get(Some(url));
            if still && image && !link.is_empty() {
                photos
                    .entry(get(Some(file.id)).to_string())
                    .or_default()
                    .push(link.to_string());
            }
        }
        Ok(photos)
    }

    /// The archive's records, one core row at a time.
    pub fn records(
        &self,
    ) -> Result<impl Iterator<Item = std::result::Result<Record, RecordError>> + Send + use<>> {
        let photos = self.photos_by_id()?;
        let core = &self.core;
        let column = |term: &str| core.column(term);
        let (occurrence, scientific, vernacular) = (
            column("occurrenceID"),
            column("scientificName"),
            column("vernacularName"),
        );
        let (date, latitude, longitude, associated) = (
            column("eventDate"),
            column("decimalLatitude"),
            column("decimalLongitude"),
            column("associatedMedia"),
        );
        if scientific.is_none() && vernacular.is_none() {
            return Err(Error::Layout {
                path: self.path.join("meta.xml"),
                reason: format!(
                    "its core has neither a {DWC}scientificName nor a vernacularName column: no claimed species to check"
                ),
            });
        }
        let id = core.id;
        Ok(self.rows(core)?.map(move |(line, row)| {
            let fields = row.map_err(|message| RecordError {
                record: Box::new(Record::unread(line)),
                message,
            })?;
            let get = |c: Option<usize>| c.and_then(|c| fields.get(c)).map_or("", |f| f.trim());
            let core_id = get(Some(id));
            let record_id = match get(occurrence) {
                "" => core_id,
                occurrence => occurrence,
            };
            let claimed = match get(scientific) {
                "" => get(vernacular),
                name => name,
            };
            let mut record_photos = photos.get(core_id).cloned().unwrap_or_default();
            if record_photos.is_empty() {
                record_photos = get(associated)
                    .split('|')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            let (context, context_warnings) =
                Context::parse(get(date), get(latitude), get(longitude));
            Ok(Record {
                row: line,
                id: record_id.to_string(),
                photos: record_photos,
                claimed: claimed.to_string(),
                context,
                context_warnings,
            })
        }))
    }
}

/// Unpacks the zip's `name` into `dir`, refusing a file that unpacks beyond [`MAX_UNPACKED`].
fn unpack(zip_path: &Path, name: &Path, dir: &Path) -> Result<()> {
    let bad = |reason: String| Error::Layout {
        path: zip_path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(zip_path).map_err(|e| Error::io(zip_path, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        bad(format!(
            "not a readable zip ({e}); a Darwin Core Archive is a zip or a folder"
        ))
    })?;
    let wanted = name.to_string_lossy().replace('\\', "/");
    // GBIF's archives keep their files at the top; others put them in one folder.
    let index = (0..zip.len())
        .find(|&i| {
            zip.by_index(i).is_ok_and(|e| {
                let n = e.name().to_string();
                n == wanted || n.ends_with(&format!("/{wanted}"))
            })
        })
        .ok_or_else(|| bad(format!("it has no {wanted}")))?;
    let mut entry = zip
        .by_index(index)
        .map_err(|e| bad(format!("cannot read {wanted} ({e})")))?;
    if entry.size() > (8 << 20) && entry.size() > MAX_RATIO * entry.compressed_size().max(1) {
        return Err(bad(format!(
            "{wanted} is declared to unpack from {} to {} bytes; not read (a zip bomb?)",
            entry.compressed_size(),
            entry.size()
        )));
    }
    let out_path = dir.join(name);
    if let Some(parent) = out_path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let mut out = std::fs::File::create(&out_path).map_err(|e| Error::io(&out_path, e))?;
    let copied = std::io::copy(&mut (&mut entry).take(MAX_UNPACKED + 1), &mut out)
        .map_err(|e| bad(format!("cannot unpack {wanted} ({e})")))?;
    if copied > MAX_UNPACKED {
        drop(out);
        let _ = std::fs::remove_file(&out_path);
        return Err(bad(format!(
            "{wanted} unpacks to more than {} GiB; not read (a zip bomb?)",
            MAX_UNPACKED >> 30
        )));
    }
    Ok(())
}
