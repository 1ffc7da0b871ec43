//! Which photos each step trains on: [`draw_step`] draws step t's groups, half positives and half
//! negatives, from an RNG seeded with (seed, t) alone. Nothing else feeds that RNG, so a run resumed
//! from a checkpoint draws the same photos as one never stopped.
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::config::TrainConfig;
use super::data::TrainSet;

/// The photos of one group for one step: indices into the pool and, for positives, the group-photo slot.
#[derive(Debug, Clone)]
pub(super) struct Draw {
    pub(super) group: usize,
    /// (pool index, Some(positive slot) | None for a negative)
    pub(super) photos: Vec<(usize, Option<usize>)>,
}

/// Draws step `t`'s groups: each half positives, half negatives (from the group's own negatives, else
/// from other groups' photos that are not positives of this expression).
pub(super) fn draw_step(set: &TrainSet, cfg: &TrainConfig, t: usize) -> Vec<Draw> {
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (0..cfg.groups_per_step)
        .map(|gi| {
            let group = rng.random_range(0..set.groups.len());
            let g = &set.groups[group];
            let small = cfg.small_group_every > 0 && (t * cfg.groups_per_step + gi) % cfg.small_group_every == 0;
            let n = if small { rng.random_range(2..=cfg.group_size.max(2)) } else { cfg.group_size };
            let n_pos = n.div_ceil(2);
            let mut photos = Vec::with_capacity(n);
            for _ in 0..n_pos {
                let slot = rng.random_range(0..g.positives.len());
                photos.push((g.positives[slot].0, Some(slot)));
            }
            for _ in n_pos..n {
                let neg = if !g.negatives.is_empty() {
                    g.negatives[rng.random_range(0..g.negatives.len())]
                } else {
                    set.random_negative_for(group, &mut rng)
                };
                photos.push((neg, None));
            }
            photos.shuffle(&mut rng);
            Draw { group, photos }
        })
        .collect()
}
