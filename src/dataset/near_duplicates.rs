//! Near-duplicate photos: a 64-bit difference hash per photo (the brightness gradient of a 9x8
//! grey thumbnail), and groups of photos whose hashes differ in at most a few bits. A re-encoded,
//! resized or slightly recompressed copy of a photo lands in its original's group, so a split
//! can keep the two on the same side.

use image::DynamicImage;
use image::imageops::{self, FilterType};

/// The difference hash of a photo: bit `8y + x` is set when pixel (x + 1, y) of the 9x8 grey
/// thumbnail is brighter than pixel (x, y).
pub fn difference_hash(image: &DynamicImage) -> u64 {
    let grey = imageops::resize(&image.to_luma8(), 9, 8, FilterType::Triangle);
    let mut hash = 0u64;
    for y in 0..8 {
        for x in 0..8 {
            if grey.get_pixel(x + 1, y).0[0] > grey.get_pixel(x, y).0[0] {
                hash |= 1 << (8 * y + x);
            }
        }
    }
    hash
}

/// Bits in which two hashes differ.
pub fn distance(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// The group of each photo: photos whose hashes are within `max_distance` bits of each other
/// share a group, and so, transitively, do their near-duplicates. Groups are numbered by their
/// first photo, so the numbering repeats for the same hashes.
pub fn groups(hashes: &[u64], max_distance: u32) -> Vec<usize> {
    let mut parent: Vec<usize> = (0..hashes.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for i in 0..hashes.len() {
        for j in i + 1..hashes.len() {
            if distance(hashes[i], hashes[j]) <= max_distance {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                // The smaller index is the root, so the group is named by its first photo.
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    (0..hashes.len()).map(|i| root(&mut parent, i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_transitive_and_named_by_their_first_member() {
        // 0 and 2 are near (1 bit), 2 and 3 are near (2 bits), 0 and 3 are not (3 bits).
        let hashes = [0b000, 0xFFFF_0000, 0b001, 0b111, 0xFFFF_0000_0000];
        assert_eq!(groups(&hashes, 2), vec![0, 1, 0, 0, 4]);
        assert_eq!(groups(&hashes, 0), vec![0, 1, 2, 3, 4]);
    }
}
