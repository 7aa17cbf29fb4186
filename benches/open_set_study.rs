//! The open-set study: which unknown-ness score tells the species a fine-tuned model knows from
//! those it never saw. For every fold model of a `vlinder cv` run it computes, once per photo,
//! the features each candidate score works on (the fine-tuned network's own, the pooled
//! activations of the frozen blocks before the tuned ones, the ImageNet network's at several
//! depths), fits every candidate on the fold's training photos, sets its threshold on the
//! fold's validation photos (`--keep` 0.95), and scores the photos of unknown species: AUROC,
//! the share that pass, the share that get `agrees` when named as the top species, and the
//! validation photos named rightly that get `agrees`. One table, mean ± sd over the folds.
//!
//!     VLINDER_STUDY_CV=cv-dir VLINDER_STUDY_DATA=photos VLINDER_STUDY_UNKNOWN=other-species \
//!         VLINDER_STUDY_BACKBONE=lite0.pth cargo bench --bench open_set_study
//!
//! `VLINDER_STUDY_OTHERS=1` instead splits the unknown folder's species folders in two halves
//! and fits each Mahalanobis score with one half as `--others`, scored on the other half
//! (both ways round).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;
use vlinder::dataset::{ImageFolder, PhotoSet};
use vlinder::metrics::{argmax, roc_auc};
use vlinder::model::Network;
use vlinder::model::efficientnet::{EfficientNetLite, LITE0, Pooling, TransferNet};
use vlinder::model::input::{batch_tensor, planar_tensor};
use vlinder::novelty::{Detector, threshold};
use vlinder::train::batches::layout;
use vlinder::trained::{ModelDir, TrainedModel, WeightsChoice};

const KEEP: f64 = 0.95;
const AGREE: f32 = 0.9;
const BATCH: usize = 16;

/// Feature rows by name, with their width; the calibrated probabilities of the same photos.
#[derive(Default)]
struct Features {
    rows: BTreeMap<&'static str, (Vec<f32>, usize)>,
    calibrated: Vec<Vec<f32>>,
}

impl Features {
    fn add(&mut self, name: &'static str, rows: Vec<f32>, dim: usize) {
        self.rows
            .entry(name)
            .or_insert((Vec::new(), dim))
            .0
            .extend(rows);
    }

    fn get(&self, name: &str) -> (&[f32], usize) {
        let (rows, dim) = &self.rows[name];
        (rows, *dim)
    }

    /// The rows of `names` side by side, each group raised to the score's power and scaled to
    /// unit length on its own, then written so that the score's own transform (the 4th root,
    /// then unit length) gives them back.
    fn grouped(&self, names: &[&str]) -> (Vec<f32>, usize) {
        if let [name] = names {
            let (rows, dim) = self.get(name);
            return (rows.to_vec(), dim);
        }
        let n = self.calibrated.len();
        let parts: Vec<(&[f32], usize)> = names.iter().map(|name| self.get(name)).collect();
        let scale = 1.0 / (parts.len() as f32).sqrt();
        let mut out = Vec::new();
        for i in 0..n {
            for (rows, d) in &parts {
                let row = normalised(&rows[i * d..(i + 1) * d], *d);
                out.extend(row.iter().map(|v| (v * scale).powi(4)));
            }
        }
        (out, parts.iter().map(|(_, d)| d).sum())
    }
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Mean-pooled activations `[n, c, h, w]`, which are signed (a block's output has no ReLU),
/// as two non-negative halves, so that the score's power transform keeps the sign.
fn pooled_signed(activations: Tensor<4>) -> (Vec<f32>, usize) {
    let [n, c, _, _] = activations.dims();
    let pooled = values(activations.mean_dims(&[2, 3]).reshape([n, c]));
    let mut out = Vec::with_capacity(2 * pooled.len());
    for row in pooled.chunks(c) {
        out.extend(row.iter().map(|v| v.max(0.0)));
        out.extend(row.iter().map(|v| (-v).max(0.0)));
    }
    (out, 2 * c)
}

/// Each row raised to the score's power and scaled to unit length, as the score does.
fn normalised(rows: &[f32], dim: usize) -> Vec<f32> {
    let mut out: Vec<f32> = rows.iter().map(|v| v.max(0.0).powf(0.25)).collect();
    for row in out.chunks_mut(dim) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= norm);
    }
    out
}

/// The networks a fold's features come from.
struct Networks<'a> {
    model: &'a TrainedModel,
    tuned: &'a TransferNet,
    /// The ImageNet backbone, frozen for the CPU and on burn's layers.
    imagenet: &'a EfficientNetLite,
    imagenet_layers: &'a EfficientNetLite,
}

impl Networks<'_> {
    /// Every candidate's features of the photos in `set`.
    fn features(&self, set: &PhotoSet) -> Features {
        let card = &self.model.card;
        let blocks = self.tuned.backbone.block_count();
        let tuned_from = blocks - card.training.fine_tune;
        let mut f = Features::default();
        let pixels = set.all_pixels();
        for chunk in pixels.chunks(BATCH) {
            let x = batch_tensor(
                chunk.iter().copied(),
                card.image_size,
                card.preprocessing.normalisation,
                &self.model.device,
            );
            f.add("tuned", values(self.tuned.features(x.clone())), 1280);
            let shared = self.tuned.backbone.activations(x.clone(), tuned_from);
            let (rows, dim) = pooled_signed(shared.clone());
            f.add("shared blocks", rows, dim);
            let (rows, dim) =
                pooled_signed(self.tuned.backbone.activations(x.clone(), tuned_from - 1));
            f.add("shared blocks, one earlier", rows, dim);
            let imagenet = self.imagenet.pooled(x.clone(), Pooling::Gem);
            f.add("imagenet", values(imagenet), 1280);
            for (name, depth) in [
                ("imagenet blocks 1-13", 13),
                ("imagenet blocks 1-14", 14),
                ("imagenet blocks 1-15", 15),
                ("imagenet blocks 1-16", 16),
            ] {
                let (rows, dim) = pooled_signed(self.imagenet.activations(x.clone(), depth));
                f.add(name, rows, dim);
            }
            let tuned_blocks = self.tuned.backbone.activations(x.clone(), blocks);
            let head = self.imagenet_layers.feature_map_from(tuned_blocks, blocks);
            f.add(
                "imagenet head on the tuned blocks",
                values(Pooling::Gem.pool(head)),
                1280,
            );
            let halved = avg_pool2d(shared, AvgPoolOptions::new([2, 2]));
            let tail = self.imagenet_layers.feature_map_from(halved, tuned_from);
            f.add(
                "imagenet tail at half size",
                values(Pooling::Gem.pool(tail)),
                1280,
            );
        }
        f.calibrated = self
            .model
            .assess(&pixels)
            .into_iter()
            .map(|a| a.calibrated)
            .collect();
        f
    }

    /// The ImageNet features of the training photos' augmented copies, as training made them.
    fn copies(&self, train: &PhotoSet) -> Vec<f32> {
        let card = &self.model.card;
        let indices: Vec<usize> = (0..train.len()).collect();
        let mut rows = Vec::new();
        for copy in 1..=card.training.feature_copies {
            for chunk in indices.chunks(BATCH) {
                let augment = Some((&card.training.augment, card.training.seed, copy));
                let images = layout(train, chunk, augment, card.preprocessing.normalisation);
                let x = planar_tensor(images, card.image_size, &self.model.device);
                rows.extend(values(self.imagenet.pooled(x, Pooling::Gem)));
            }
        }
        rows
    }
}

/// A candidate's scores of the validation and the unknown photos.
struct Scored {
    validation: Vec<f32>,
    unknown: Vec<f32>,
}

impl Scored {
    /// Standardised by the validation scores' mean and deviation.
    fn standardised(&self) -> Scored {
        let n = self.validation.len() as f32;
        let mean = self.validation.iter().sum::<f32>() / n;
        let var = self
            .validation
            .iter()
            .map(|v| (v - mean).powi(2))
            .sum::<f32>()
            / n;
        let z = |v: &[f32]| v.iter().map(|x| (x - mean) / var.sqrt()).collect();
        Scored {
            validation: z(&self.validation),
            unknown: z(&self.unknown),
        }
    }

    /// The sum of the standardised scores.
    fn sum(parts: &[&Scored]) -> Scored {
        let z: Vec<Scored> = parts.iter().map(|p| p.standardised()).collect();
        let add = |get: fn(&Scored) -> &Vec<f32>| {
            (0..get(&z[0]).len())
                .map(|i| z.iter().map(|s| get(s)[i]).sum())
                .collect()
        };
        Scored {
            validation: add(|s| &s.validation),
            unknown: add(|s| &s.unknown),
        }
    }
}

/// 1 - the cosine similarity to the k-th most similar training row.
fn knn(train: &[f32], query: &[f32], dim: usize, k: usize) -> Vec<f32> {
    let train = normalised(train, dim);
    normalised(query, dim)
        .chunks(dim)
        .map(|q| {
            let mut similarities: Vec<f32> = train
                .chunks(dim)
                .map(|t| t.iter().zip(q).map(|(a, b)| a * b).sum())
                .collect();
            similarities.sort_by(|a, b| b.total_cmp(a));
            1.0 - similarities[k - 1]
        })
        .collect()
}

fn rows_of(all: &[f32], dim: usize, rows: &[usize]) -> Vec<f32> {
    rows.iter()
        .flat_map(|&r| all[r * dim..(r + 1) * dim].iter().copied())
        .collect()
}

/// One fold's photos: their features, labels and which unknown photos are scored.
struct Fold<'a> {
    train: &'a Features,
    train_labels: &'a [usize],
    copies: &'a [f32],
    validation: &'a Features,
    validation_labels: &'a [usize],
    unknown: &'a Features,
    /// The unknown photos given as others, and those scored.
    others: Option<&'a [usize]>,
    scored: &'a [usize],
    classes: usize,
}

impl Fold<'_> {
    fn mahalanobis(&self, names: &[&str]) -> Scored {
        let (train, dim) = self.train.grouped(names);
        self.fitted(&train, self.train_labels, names, dim)
    }

    fn fitted(&self, train: &[f32], labels: &[usize], names: &[&str], dim: usize) -> Scored {
        let (unknown, _) = self.unknown.grouped(names);
        let others = self.others.map(|o| rows_of(&unknown, dim, o));
        let detector = Detector::fit(train, labels, self.classes, dim, others.as_deref())
            .unwrap_or_else(|e| panic!("{names:?}: {e}"));
        Scored {
            validation: detector.scores(&self.validation.grouped(names).0),
            unknown: detector.scores(&rows_of(&unknown, dim, self.scored)),
        }
    }

    fn knn(&self, name: &str, k: usize) -> Scored {
        let (train, dim) = self.train.get(name);
        let (unknown, _) = self.unknown.get(name);
        Scored {
            validation: knn(train, self.validation.get(name).0, dim, k),
            unknown: knn(train, &rows_of(unknown, dim, self.scored), dim, k),
        }
    }

    /// Every candidate, named.
    fn candidates(&self) -> Vec<(String, Scored)> {
        let mut out = Vec::new();
        for name in [
            "tuned",
            "shared blocks",
            "shared blocks, one earlier",
            "imagenet",
            "imagenet blocks 1-13",
            "imagenet blocks 1-14",
            "imagenet blocks 1-15",
            "imagenet blocks 1-16",
            "imagenet head on the tuned blocks",
            "imagenet tail at half size",
        ] {
            out.push((format!("Mahalanobis, {name}"), self.mahalanobis(&[name])));
        }
        let (_, dim) = self.train.get("imagenet");
        let mut with_copies = self.train.get("imagenet").0.to_vec();
        with_copies.extend_from_slice(self.copies);
        let copies = self.copies.len() / dim / self.train_labels.len();
        let labels: Vec<usize> = (0..=copies)
            .flat_map(|_| self.train_labels.iter().copied())
            .collect();
        out.push((
            "Mahalanobis, imagenet, with the augmented copies".into(),
            self.fitted(&with_copies, &labels, &["imagenet"], dim),
        ));
        for other in ["shared blocks", "imagenet"] {
            let pair = ["tuned", other];
            out.push((
                format!("Mahalanobis, [tuned, {other}]"),
                self.mahalanobis(&pair),
            ));
            let sum = Scored::sum(&[&self.mahalanobis(&["tuned"]), &self.mahalanobis(&[other])]);
            out.push((
                format!("sum of standardised Mahalanobis, tuned + {other}"),
                sum,
            ));
        }
        if self.others.is_none() {
            for name in ["tuned", "imagenet"] {
                for k in [1, 10] {
                    out.push((format!("{k}-nearest neighbour, {name}"), self.knn(name, k)));
                }
            }
        }
        out
    }

    /// AUROC, unknown photos that pass, that get `agrees` as the top species, right names
    /// that agree.
    fn figures(&self, s: &Scored) -> [f64; 4] {
        let t = threshold(&s.validation, KEEP) as f32;
        let scores: Vec<f32> = s.validation.iter().chain(&s.unknown).copied().collect();
        let positives: Vec<bool> = (0..scores.len()).map(|i| i >= s.validation.len()).collect();
        let n = s.unknown.len() as f64;
        let passed = s.unknown.iter().filter(|&&v| v <= t).count() as f64 / n;
        let agrees = s
            .unknown
            .iter()
            .zip(self.scored)
            .filter(|&(&v, &row)| {
                let p = &self.unknown.calibrated[row];
                v <= t && p[argmax(p)] >= AGREE
            })
            .count() as f64
            / n;
        let right = s
            .validation
            .iter()
            .zip(&self.validation.calibrated)
            .zip(self.validation_labels)
            .filter(|&((&v, p), &l)| v <= t && p[l] >= AGREE)
            .count() as f64
            / self.validation_labels.len() as f64;
        [
            roc_auc(&scores, &positives).unwrap_or(f64::NAN),
            passed,
            agrees,
            right,
        ]
    }
}

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(name).unwrap_or_else(|| panic!("set {name}")))
}

/// The fold's training and validation photos of `all`, as its split.csv lists them.
fn fold_split(dir: &Path, all: &PhotoSet) -> (PhotoSet, PhotoSet) {
    let index: BTreeMap<&Path, usize> = all
        .paths
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_path(), i))
        .collect();
    let mut parts = [Vec::new(), Vec::new()];
    let mut reader = csv::Reader::from_path(dir.join("split.csv")).unwrap();
    for row in reader.records() {
        let row = row.unwrap();
        parts[usize::from(&row[2] == "validation")].push(index[Path::new(&row[0])]);
    }
    (all.subset(&parts[0]), all.subset(&parts[1]))
}

/// Which unknown photos a setup gives as others (by index), which it scores, and its name.
type Setup = (Option<Vec<usize>>, Vec<usize>, &'static str);

/// The unknown photos by species folder: all scored, or each half given as others in turn.
fn setups(unknown: &PhotoSet, root: &Path, with_others: bool) -> Vec<Setup> {
    let every: Vec<usize> = (0..unknown.len()).collect();
    if !with_others {
        return vec![(None, every, "")];
    }
    let folder = |p: &Path| {
        p.strip_prefix(root)
            .unwrap()
            .components()
            .next()
            .map(|c| c.as_os_str().to_owned())
    };
    let mut species: Vec<_> = unknown.paths.iter().map(|p| folder(p)).collect();
    species.sort();
    species.dedup();
    let first_half = |i: &usize| {
        let s = folder(&unknown.paths[*i]);
        species.iter().position(|x| *x == s).unwrap() < species.len() / 2
    };
    let (a, b): (Vec<usize>, Vec<usize>) = every.iter().copied().partition(first_half);
    vec![
        (
            Some(a.clone()),
            b.clone(),
            " (others: first half, unknown: second)",
        ),
        (Some(b), a, " (others: second half, unknown: first)"),
    ]
}

fn main() {
    let cv = env_path("VLINDER_STUDY_CV");
    let unknown_dir = env_path("VLINDER_STUDY_UNKNOWN");
    let backbone = env_path("VLINDER_STUDY_BACKBONE");
    let with_others = std::env::var_os("VLINDER_STUDY_OTHERS").is_some();
    let device = vlinder::device::Backend::Flex.device().unwrap();
    let imagenet_layers = EfficientNetLite::from_pytorch(LITE0, &backbone, false, &device).unwrap();
    let imagenet = imagenet_layers.clone().freeze();
    let folder = ImageFolder::scan(&env_path("VLINDER_STUDY_DATA")).unwrap();
    let mut results: Vec<(String, Vec<[f64; 4]>)> = Vec::new();
    let mut decoded: Option<(u32, PhotoSet, PhotoSet)> = None;
    for fold in 1.. {
        let dir = cv.join(format!("fold-{fold}"));
        // Folds still training (or not begun) end the study.
        let complete = ModelDir::new(&dir).read_card();
        if !complete.is_ok_and(|c| c.is_complete() && c.novelty.is_some()) {
            break;
        }
        let model = ModelDir::new(&dir)
            .load(WeightsChoice::Last, &device)
            .unwrap();
        let Network::Transfer(tuned) = &model.network else {
            panic!("the study is for transfer models")
        };
        let (size, resize) = (model.card.image_size, model.card.preprocessing.resize);
        if decoded.as_ref().is_none_or(|(s, ..)| *s != size) {
            let (all, _) = PhotoSet::decode(&folder.photos, size, resize, "photos");
            let (unknown, _, _) =
                PhotoSet::decode_below(&unknown_dir, size, resize, "unknown").unwrap();
            decoded = Some((size, all, unknown));
        }
        let (_, all, unknown) = decoded.as_ref().unwrap();
        let (train, validation) = fold_split(&dir, all);
        eprintln!(
            "fold {fold}: {} training, {} validation, {} unknown photos",
            train.len(),
            validation.len(),
            unknown.len()
        );
        let networks = Networks {
            model: &model,
            tuned,
            imagenet: &imagenet,
            imagenet_layers: &imagenet_layers,
        };
        let (tr, va, un) = (
            networks.features(&train),
            networks.features(&validation),
            networks.features(unknown),
        );
        let copies = networks.copies(&train);
        for (others, scored, setup) in setups(unknown, &unknown_dir, with_others) {
            let fold = Fold {
                train: &tr,
                train_labels: &train.labels,
                copies: &copies,
                validation: &va,
                validation_labels: &validation.labels,
                unknown: &un,
                others: others.as_deref(),
                scored: &scored,
                classes: model.card.species.len(),
            };
            for (name, scored) in fold.candidates() {
                let key = format!("{name}{setup}");
                let figures = fold.figures(&scored);
                match results.iter_mut().find(|(n, _)| *n == key) {
                    Some((_, folds)) => folds.push(figures),
                    None => results.push((key, vec![figures])),
                }
            }
        }
    }
    let mean_sd = |v: Vec<f64>| {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        (
            m,
            (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt(),
        )
    };
    println!(
        "| score | AUROC | unknown photos that pass | that get `agrees` | right names that agree |"
    );
    println!("|---|---|---|---|---|");
    for (name, folds) in &results {
        let column = |i: usize| mean_sd(folds.iter().map(|f| f[i]).collect());
        let ((a, a_sd), rest) = (column(0), [column(1), column(2), column(3)]);
        let rest: Vec<String> = rest
            .iter()
            .map(|(m, sd)| format!("{:.1}% ± {:.1}", 100.0 * m, 100.0 * sd))
            .collect();
        println!("| {name} | {a:.4} ± {a_sd:.4} | {} |", rest.join(" | "));
    }
    println!("\n{} folds", results.first().map_or(0, |(_, f)| f.len()));
}
