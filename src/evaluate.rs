//! `vlinder evaluate`: how well a trained model names the species of labelled photos.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dataset::{ImageFolder, PhotoSet, SkippedPhoto, stratified_split};
use crate::device::Backend;
use crate::metrics::Evaluation;
use crate::model::{ModelDir, WeightsChoice};
use crate::train::data::relabel;
use crate::{Error, Result, files, plot};

/// Which photos of `--data` to evaluate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SplitChoice {
    /// Every photo in the folder.
    All,
    /// The training part of the model's own --validation-split of this folder.
    Train,
    /// The validation part of the model's own --validation-split of this folder.
    Validation,
}

/// The configuration of `vlinder evaluate`, saved in `evaluation.json`.
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct EvaluateConfig {
    /// The model directory.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// A folder with one sub-folder of photos per species.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Which of its photos to use.
    #[arg(long, value_enum, default_value_t = SplitChoice::All)]
    pub split: SplitChoice,
    /// Which saved weights to use.
    #[arg(long, value_enum, default_value_t = WeightsChoice::Last)]
    pub weights: WeightsChoice,
    /// Where `evaluation.json` and `confusion-matrix.png` go (default: the model directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Backend::Flex)]
    pub device: Backend,
}

/// What `evaluation.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvaluationReport {
    pub config: EvaluateConfig,
    #[serde(flatten)]
    pub evaluation: Evaluation,
    pub skipped: Vec<SkippedPhoto>,
}

/// Evaluates the model on the photos `config` names and writes the report and the confusion
/// matrix plot.
pub fn evaluate(config: &EvaluateConfig) -> Result<EvaluationReport> {
    let dir = ModelDir::new(&config.model);
    let model = dir.load(config.weights, &config.device.device()?)?;
    let card = &model.card;
    let folder = ImageFolder::scan(&config.data)?;
    let mut photos = relabel(&folder, &card.species)?;
    if config.split != SplitChoice::All {
        if card.training.data.is_none() {
            return Err(Error::invalid(
                "split",
                format!("{:?}", config.split).to_lowercase(),
                "`all`: this model was trained on separate --train and --validation folders, not a --validation-split",
            ));
        }
        let split = stratified_split(
            &photos,
            card.species.len(),
            card.training.validation_split,
            card.training.seed,
        )?;
        photos = match config.split {
            SplitChoice::Train => split.train,
            _ => split.validation,
        };
    }
    let (set, mut skipped) = PhotoSet::decode(
        &photos,
        card.image_size,
        card.preprocessing.resize,
        "evaluation",
    );
    skipped.splice(0..0, folder.skipped);
    if set.is_empty() {
        return Err(Error::Layout {
            path: config.data.clone(),
            reason: "no readable photo to evaluate on".into(),
        });
    }
    let pixels: Vec<&[u8]> = (0..set.len()).map(|i| set.pixels(i)).collect();
    let probabilities = model.probabilities(&pixels);
    let report = EvaluationReport {
        config: config.clone(),
        evaluation: Evaluation::compute(&probabilities, &set.labels, &card.species),
        skipped,
    };
    let out = output_dir(config);
    files::create_dir(out)?;
    files::write_json(&out.join("evaluation.json"), &report)?;
    plot::confusion_matrix(
        &report.evaluation.confusion,
        &report.evaluation.species,
        &out.join("confusion-matrix.png"),
    )?;
    Ok(report)
}

/// The report as a text table: overall metrics, per-species scores and the confusion matrix.
pub fn render_table(e: &Evaluation) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "photos    {}", e.photos);
    let _ = writeln!(s, "accuracy  {:.4}", e.accuracy);
    let _ = writeln!(s, "log loss  {:.4}", e.log_loss);
    if let Some(auc) = e.roc_auc {
        let _ = writeln!(s, "ROC AUC   {auc:.4}");
    }
    let _ = writeln!(s, "macro F1  {:.4}\n", e.macro_f1);
    let width = e.species.iter().map(|n| n.len()).max().unwrap_or(7).max(7);
    let _ = writeln!(
        s,
        "{:width$}  precision  recall  f1      support",
        "species"
    );
    for sp in &e.per_species {
        let _ = writeln!(
            s,
            "{:width$}  {:<9.4}  {:<6.4}  {:<6.4}  {}",
            sp.species, sp.precision, sp.recall, sp.f1, sp.support
        );
    }
    let _ = writeln!(
        s,
        "\nconfusion (rows: true, columns: predicted, in the order above)"
    );
    for (name, row) in e.species.iter().zip(&e.confusion) {
        let cells: Vec<String> = row.iter().map(|c| format!("{c:>6}")).collect();
        let _ = writeln!(s, "{name:width$}  {}", cells.join(""));
    }
    s
}

/// The default output folder of an evaluation.
pub fn output_dir(config: &EvaluateConfig) -> &Path {
    config.out.as_deref().unwrap_or(&config.model)
}
