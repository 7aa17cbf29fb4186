//! Finding, decoding and splitting photos, including every kind of bad file.

mod common;

use std::path::Path;

use image::{ImageBuffer, Luma, Rgb, RgbImage, Rgba};
use vlinder::dataset::{ImageFolder, ResizeFilter, decode, decode_photo, stratified_split};

fn two_colour_image(width: u32, height: u32) -> RgbImage {
    // Left half red, right half blue: easy to find again after a rotation.
    ImageBuffer::from_fn(width, height, |x, _| {
        if x < width / 2 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    })
}

fn is_red(p: &[u8]) -> bool {
    p[0] > 200 && p[2] < 60
}

fn is_blue(p: &[u8]) -> bool {
    p[2] > 200 && p[0] < 60
}

/// A baseline JPEG with an EXIF APP1 segment holding `orientation`.
fn jpeg_with_orientation(image: &RgbImage, orientation: u16) -> Vec<u8> {
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .encode_image(image)
        .unwrap();
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one IFD entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes());
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // padding, then no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rotated.jpg");
    std::fs::write(&path, jpeg_with_orientation(&two_colour_image(32, 16), 6)).unwrap();
    let image = decode::open_oriented(&path).unwrap().to_rgb8();
    // Orientation 6 turns the picture 90° clockwise: the left (red) half becomes the top.
    assert_eq!(image.dimensions(), (16, 32));
    assert!(is_red(&image.get_pixel(8, 4).0));
    assert!(is_blue(&image.get_pixel(8, 28).0));
}

#[test]
fn every_supported_format_and_pixel_type_decodes_to_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rgb = two_colour_image(40, 20);
    rgb.save(d.join("plain.PNG")).unwrap();
    rgb.save(d.join("bitmap.bmp")).unwrap();
    rgb.save(d.join("scan.TIFF")).unwrap();
    rgb.save(d.join("web.webp")).unwrap();
    ImageBuffer::from_fn(40, 20, |x, _| Luma([if x < 20 { 255u8 } else { 0 }]))
        .save(d.join("gray.png"))
        .unwrap();
    ImageBuffer::from_fn(40, 20, |x, _| {
        if x < 20 {
            Rgba([255u8, 0, 0, 128])
        } else {
            Rgba([0, 0, 255, 255])
        }
    })
    .save(d.join("alpha.png"))
    .unwrap();
    ImageBuffer::from_fn(40, 20, |x, _| {
        if x < 20 {
            Rgb([65535u16, 0, 0])
        } else {
            Rgb([0, 0, 65535])
        }
    })
    .save(d.join("deep.png"))
    .unwrap();
    write_palette_png(&d.join("palette.png"), 40, 20);
    write_progressive_jpeg(&d.join("progressive.JPEG"), &rgb);

    for name in [
        "plain.PNG",
        "bitmap.bmp",
        "scan.TIFF",
        "web.webp",
        "alpha.png",
        "deep.png",
        "palette.png",
        "progressive.JPEG",
    ] {
        let pixels = decode_photo(&d.join(name), 8, ResizeFilter::Bilinear)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(pixels.len(), 8 * 8 * 3, "{name}");
        assert!(
            is_red(&pixels[..3]),
            "{name}: top-left should be red, got {:?}",
            &pixels[..3]
        );
        assert!(
            is_blue(&pixels[7 * 3..8 * 3]),
            "{name}: top-right should be blue"
        );
    }
    let gray = decode_photo(&d.join("gray.png"), 8, ResizeFilter::Nearest).unwrap();
    assert_eq!(&gray[..3], &[255, 255, 255]);
    assert_eq!(&gray[7 * 3..8 * 3], &[0, 0, 0]);
}

fn write_palette_png(path: &Path, width: u32, height: u32) {
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(file, width, height);
    encoder.set_color(png::ColorType::Indexed);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_palette(vec![255, 0, 0, 0, 0, 255]);
    let mut writer = encoder.write_header().unwrap();
    let data: Vec<u8> = (0..height)
        .flat_map(|_| (0..width).map(move |x| u8::from(x >= width / 2)))
        .collect();
    writer.write_image_data(&data).unwrap();
}

fn write_progressive_jpeg(path: &Path, image: &RgbImage) {
    let mut encoder = jpeg_encoder::Encoder::new_file(path, 95).unwrap();
    encoder.set_progressive(true);
    encoder
        .encode(
            image.as_raw(),
            image.width() as u16,
            image.height() as u16,
            jpeg_encoder::ColorType::Rgb,
        )
        .unwrap();
    assert!(
        std::fs::read(path)
            .unwrap()
            .windows(2)
            .any(|w| w == [0xFF, 0xC2]),
        "SOF2 marks a progressive JPEG"
    );
}

#[test]
fn bad_files_are_errors_that_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let real = common::real_jpeg();
    std::fs::write(d.join("empty.jpg"), b"").unwrap();
    std::fs::write(d.join("text.jpg"), b"this is not a photo\n").unwrap();
    std::fs::write(d.join("truncated.jpg"), &real[..real.len() / 3]).unwrap();
    // A real, valid PNG whose height exceeds the limit against decompression bombs.
    ImageBuffer::from_pixel(1, 25_000, Luma([0u8]))
        .save(d.join("tall.png"))
        .unwrap();
    for name in ["empty.jpg", "text.jpg", "truncated.jpg", "tall.png"] {
        let err = decode_photo(&d.join(name), 16, ResizeFilter::Nearest)
            .expect_err(&format!("{name} must not decode"))
            .to_string();
        assert!(err.contains(name), "the error names the file: {err}");
    }
    assert!(decode_photo(&d.join("missing.jpg"), 16, ResizeFilter::Nearest).is_err());
}

#[test]
fn a_decode_stops_when_cancelled_and_refuses_too_many_pixels_from_the_header() {
    use std::sync::atomic::AtomicBool;
    use vlinder::dataset::decode::{DecodeLimits, decode_within};
    let mut png = Vec::new();
    ImageBuffer::from_pixel(300, 200, Luma([7u8]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let origin = Path::new("upload.png");
    let running = AtomicBool::new(false);
    let limits = |max_pixels, cancelled| DecodeLimits {
        max_pixels,
        cancelled: Some(cancelled),
    };
    let image = decode_within(&png, origin, limits(60_000, &running)).unwrap();
    assert_eq!((image.width(), image.height()), (300, 200));
    let err = decode_within(&png, origin, limits(59_999, &running))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("300 x 200 pixels is more than the 59999 pixels accepted"),
        "{err}"
    );
    let cancelled = AtomicBool::new(true);
    let err = decode_within(&png, origin, limits(60_000, &cancelled))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("upload.png") && err.contains("the request was cancelled"),
        "{err}"
    );
}

#[test]
fn scan_sorts_species_and_photos_and_reports_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (species, files) in [
        ("zebra", vec!["b.jpg", "A.JPG"]),
        ("aglais", vec!["x.png", "notes.txt", ".DS_Store"]),
    ] {
        std::fs::create_dir(root.join(species)).unwrap();
        for f in files {
            std::fs::write(root.join(species).join(f), b"").unwrap();
        }
    }
    std::fs::create_dir_all(root.join("zebra/nested")).unwrap();
    std::fs::write(root.join("zebra/nested/c.jpeg"), b"").unwrap();
    let folder = ImageFolder::scan(root).unwrap();
    assert_eq!(folder.species.names(), ["aglais", "zebra"]);
    let names: Vec<(String, usize)> = folder
        .photos
        .iter()
        .map(|p| {
            (
                p.path.strip_prefix(root).unwrap().display().to_string(),
                p.label,
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("aglais/x.png".into(), 0),
            ("zebra/A.JPG".into(), 1),
            ("zebra/b.jpg".into(), 1),
            ("zebra/nested/c.jpeg".into(), 1)
        ]
    );
    assert_eq!(folder.skipped.len(), 1);
    assert!(folder.skipped[0].path.ends_with("aglais/notes.txt"));
}

#[test]
fn photos_without_species_folders_are_a_layout_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.jpg"), b"").unwrap();
    let err = ImageFolder::scan(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("no species sub-folder") && err.contains("<species>"),
        "{err}"
    );
    let err = ImageFolder::scan(&dir.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn split_is_stratified_disjoint_and_reproducible() {
    let folder = ImageFolder::scan(&common::sample()).unwrap();
    let a = stratified_split(&folder.photos, 3, 0.2, 7).unwrap();
    let b = stratified_split(&folder.photos, 3, 0.2, 7).unwrap();
    let c = stratified_split(&folder.photos, 3, 0.2, 8).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.validation, c.validation);
    for class in 0..3 {
        assert_eq!(a.validation.iter().filter(|p| p.label == class).count(), 16);
        assert_eq!(a.train.iter().filter(|p| p.label == class).count(), 64);
    }
    let mut all: Vec<_> = a
        .train
        .iter()
        .chain(&a.validation)
        .map(|p| p.path.clone())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), folder.photos.len());
    assert!(
        stratified_split(&folder.photos, 3, 1.0, 7)
            .unwrap_err()
            .to_string()
            .contains("validation-split")
    );
}

#[test]
fn folds_are_stratified_disjoint_complete_and_refuse_too_many() {
    use vlinder::dataset::stratified_folds;
    // 3 species with 7, 5 and 10 photos.
    let labels: Vec<usize> = [vec![0; 7], vec![1; 5], vec![2; 10]].concat();
    let folds = stratified_folds(&labels, 3, 5, 9).unwrap();
    assert_eq!(folds, stratified_folds(&labels, 3, 5, 9).unwrap(), "seeded");
    let mut all: Vec<usize> = folds.iter().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..labels.len()).collect::<Vec<_>>(),
        "every photo in exactly one fold"
    );
    for fold in &folds {
        let per_class = |c| fold.iter().filter(|&&i| labels[i] == c).count();
        assert!(
            (1..=2).contains(&per_class(0)) && per_class(1) == 1 && per_class(2) == 2,
            "{fold:?}"
        );
    }
    let err = stratified_folds(&labels, 3, 6, 9).unwrap_err().to_string();
    assert!(
        err.contains("folds") && err.contains("smallest species"),
        "{err}"
    );
    assert!(stratified_folds(&labels, 3, 1, 9).is_err());
}

#[test]
fn nearest_resizing_picks_the_pixels_pillow_picks() {
    // tests/fixtures/nearest.py wrote the image and what Pillow's NEAREST makes of it.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("nearest.json")).unwrap())
            .unwrap();
    let sizes = expected["sizes"].as_object().unwrap();
    assert_eq!(sizes.len(), 3);
    for (side, pixels) in sizes {
        let side: u32 = side.parse().unwrap();
        let ours =
            decode_photo(&fixtures.join("nearest.png"), side, ResizeFilter::Nearest).unwrap();
        let want: Vec<u8> = pixels
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| {
                p.as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_u64().unwrap() as u8)
            })
            .collect();
        assert_eq!(want.len(), (side * side * 3) as usize);
        assert_eq!(ours, want, "{side}x{side}");
    }
}
