//! The charts people look at: the learning curve of a training run and a confusion matrix,
//! drawn with plotters into PNG files. The font is embedded, so no system font is needed.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::calibrate::Calibration;
use crate::train::EpochRecord;
use crate::{Error, Result, files};

const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans font is valid"));
    });
}

/// Draws into an RGB canvas of `width` x `height` and writes it to `path` as PNG.
fn render(
    path: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<()> {
    register_font();
    let mut buffer = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| Error::output(path, e))?;
        draw(&root).map_err(|e| Error::output(path, e))?;
        root.present().map_err(|e| Error::output(path, e))?;
    }
    let image = image::RgbImage::from_raw(width, height, buffer).expect("the buffer fits the size");
    let mut png = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| Error::output(path, e))?;
    files::write_atomic(path, png.get_ref())
}

/// Loss and accuracy per epoch, train and validation, side by side.
pub fn learning_curve(history: &[EpochRecord], path: &Path) -> Result<()> {
    render(path, (1200, 500), |root| {
        let panels = root.split_evenly((1, 2));
        let epochs = history.len().max(1) as f64;
        type Metric = fn(&EpochRecord) -> f64;
        let series: [(&str, Metric, Metric); 2] = [
            ("loss", |r| r.train_loss, |r| r.validation_loss),
            ("accuracy", |r| r.train_accuracy, |r| r.validation_accuracy),
        ];
        for (panel, (name, train, validation)) in panels.iter().zip(series) {
            let top = history
                .iter()
                .flat_map(|r| [train(r), validation(r)])
                .fold(if name == "accuracy" { 1.0 } else { 0.0 }, f64::max);
            let mut chart = ChartBuilder::on(panel)
                .caption(name, (FONT, 24))
                .margin(15)
                .x_label_area_size(40)
                .y_label_area_size(55)
                .build_cartesian_2d(1.0..epochs.max(2.0), 0.0..top * 1.05)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .x_labels(history.len().clamp(2, 10))
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_desc(name)
                .label_style((FONT, 14))
                .draw()?;
            for (label, pick, colour) in [("train", train, BLUE), ("validation", validation, RED)] {
                chart
                    .draw_series(LineSeries::new(
                        history.iter().map(|r| (r.epoch as f64, pick(r))),
                        colour.stroke_width(2),
                    ))?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .label_font((FONT, 14))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
        Ok(())
    })
}

/// A confusion matrix as a heat map with the counts written in each cell.
pub fn confusion_matrix(confusion: &[Vec<usize>], species: &[String], path: &Path) -> Result<()> {
    let k = species.len();
    let cell = (560 / k.max(1)).clamp(40, 120) as u32;
    let label_width = 8 * species.iter().map(|s| s.len()).max().unwrap_or(4) as u32 + 20;
    let size = (
        label_width + cell * k as u32 + 40,
        label_width + cell * k as u32 + 60,
    );
    render(path, size, |root| {
        let root = root.titled(
            "confusion matrix (rows: true species, columns: predicted)",
            (FONT, 18),
        )?;
        let max = confusion
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let x0 = label_width as i32;
        let y0 = 10;
        for (t, row) in confusion.iter().enumerate() {
            let total: usize = row.iter().sum();
            for (p, &count) in row.iter().enumerate() {
                let x = x0 + (p as u32 * cell) as i32;
                let y = y0 + (t as u32 * cell) as i32;
                let shade = count as f64 / max;
                let colour = RGBColor(
                    (255.0 * (1.0 - 0.8 * shade)) as u8,
                    (255.0 * (1.0 - 0.55 * shade)) as u8,
                    255,
                );
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell as i32, y + cell as i32)],
                    colour.filled(),
                ))?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell as i32, y + cell as i32)],
                    BLACK,
                ))?;
                let share = if total > 0 {
                    100.0 * count as f64 / total as f64
                } else {
                    0.0
                };
                let text_colour = if shade > 0.6 { WHITE } else { BLACK };
                root.draw(&Text::new(
                    format!("{count}"),
                    (x + 6, y + cell as i32 / 2 - 14),
                    (FONT, 16).into_font().color(&text_colour),
                ))?;
                root.draw(&Text::new(
                    format!("{share:.0}%"),
                    (x + 6, y + cell as i32 / 2 + 4),
                    (FONT, 12).into_font().color(&text_colour),
                ))?;
            }
            root.draw(&Text::new(
                species[t].clone(),
                (5, y0 + (t as u32 * cell + cell / 2) as i32 - 6),
                (FONT, 14),
            ))?;
        }
        for (p, name) in species.iter().enumerate() {
            let x = x0 + (p as u32 * cell + cell / 2) as i32;
            let y = y0 + (k as u32 * cell) as i32 + 8;
            root.draw(&Text::new(
                name.clone(),
                (x, y),
                (FONT, 14).into_font().transform(FontTransform::Rotate90),
            ))?;
        }
        Ok(())
    })
}

/// Accuracy against confidence per bin, before and after temperature scaling, with the diagonal
/// of perfect calibration.
pub fn reliability_diagram(c: &Calibration, path: &Path) -> Result<()> {
    render(path, (700, 620), |root| {
        let caption = format!(
            "reliability (T = {:.2}; ECE {:.3} -> {:.3}, {} photos)",
            c.temperature, c.ece_before, c.ece_after, c.photos
        );
        let mut chart = ChartBuilder::on(root)
            .caption(caption, (FONT, 20))
            .margin(20)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)?;
        chart
            .configure_mesh()
            .x_desc("confidence (top probability)")
            .y_desc("accuracy")
            .label_style((FONT, 14))
            .draw()?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.4)))?
            .label("perfect calibration")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.4)));
        for (label, bins, colour) in [
            ("before", &c.reliability_before, RED),
            ("after", &c.reliability_after, BLUE),
        ] {
            let points: Vec<(f64, f64)> = bins
                .iter()
                .filter(|b| b.count > 0)
                .map(|b| (b.confidence, b.accuracy))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, colour.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

/// One panel of [`bar_panels`]: a title, the unit, and a (contender, value) per bar.
pub type BarPanel = (String, String, Vec<(String, f64)>);

/// One panel per measure, a bar per contender, each bar labelled with its contender and value:
/// benchmark results side by side.
pub fn bar_panels(measures: &[BarPanel], path: &Path) -> Result<()> {
    let panels = measures.len().max(1);
    render(path, (440 * panels as u32, 440), |root| {
        for (panel, (title, unit, bars)) in root.split_evenly((1, panels)).iter().zip(measures) {
            let top = bars.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(1e-9) * 1.25;
            let mut chart = ChartBuilder::on(panel)
                .caption(title, (FONT, 18))
                .margin(15)
                .x_label_area_size(10)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..bars.len().max(1) as f64, 0.0..top)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(0)
                .y_desc(unit.as_str())
                .label_style((FONT, 13))
                .draw()?;
            for (i, (name, value)) in bars.iter().enumerate() {
                let x = i as f64;
                chart.draw_series([Rectangle::new(
                    [(x + 0.15, 0.0), (x + 0.85, *value)],
                    Palette99::pick(i).filled(),
                )])?;
                chart.draw_series([
                    Text::new(name.clone(), (x + 0.15, value + top * 0.1), (FONT, 13)),
                    Text::new(
                        format!("{value:.1}"),
                        (x + 0.15, value + top * 0.05),
                        (FONT, 13),
                    ),
                ])?;
            }
        }
        Ok(())
    })
}
