//! Augmentation throughput: the recipe's augmentation of 75x75 photos on one thread, in images
//! per second per core. Run with `cargo bench --bench augment`; `VLINDER_SHARED` points at the
//! shared folder (default ../shared). Prints the median, min and max of 5 repetitions.

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vlinder::augment::{AugmentParams, Image};
use vlinder::dataset::{ImageFolder, PhotoSet, ResizeFilter};
use vlinder::model::input;

mod common;

fn main() {
    let shared = common::shared();
    let folder = ImageFolder::scan(&shared.join("data/inat_uk_3species_csellwood"))
        .expect("the shared photos");
    let (set, _) = PhotoSet::decode(&folder.photos, 75, ResizeFilter::Nearest, "photos");
    let params = AugmentParams::default();
    let side = 75;
    let mut scratch = vec![0f32; side * side * 3];
    let mut planar = vec![0f32; side * side * 3];
    let mut rates = Vec::new();
    for repetition in 0..5 {
        let mut rng = ChaCha8Rng::seed_from_u64(repetition);
        let start = Instant::now();
        for i in 0..set.len() {
            let t = params.draw(side, side, &mut rng);
            t.apply(
                Image {
                    pixels: set.pixels(i),
                    rows: side,
                    cols: side,
                },
                &mut scratch,
            );
            input::write_planar(&scratch, &mut planar, input::RESCALE);
        }
        rates.push(set.len() as f64 / start.elapsed().as_secs_f64());
        std::hint::black_box(&planar);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "vlinder augment, 75x75, 1 thread, {} photos x 5: median {:.0} images/s (min {:.0}, max {:.0})",
        set.len(),
        rates[2],
        rates[0],
        rates[4]
    );
}
