//! Heatmap hierarchizer (the paper's step 4, docs/model.md): rank the group's prototypes by how close they are to the
//! expression and how far from the anti-expression, so the decoder always sees the most trustworthy
//! photos' maps first. Ranking is discrete (no gradient), the maps it orders are not.
use candle_core::{Result, Tensor};

/// Euclidean distances `||p_i - x||` for each row of `protos` (`[N, C]`) to `x` (`[C]`).
pub fn distances(protos: &Tensor, x: &Tensor) -> Result<Vec<f32>> {
    protos.broadcast_sub(&x.unsqueeze(0)?)?.sqr()?.sum(1)?.sqrt()?.to_dtype(candle_core::DType::F32)?.to_vec1()
}

/// Rank of each item when sorted by `key` (0 = first); ties keep index order.
fn ranks(key: &[f32], descending: bool) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..key.len()).collect();
    idx.sort_by(|&a, &b| {
        let o = key[a].total_cmp(&key[b]);
        if descending {
            o.reverse()
        } else {
            o
        }
    });
    let mut rank = vec![0; key.len()];
    for (r, &i) in idx.iter().enumerate() {
        rank[i] = r;
    }
    rank
}

/// The prototype order of the paper: R_pos ranks s_pos ascending, R_neg ranks s_neg descending, and the
/// prototypes go by R_pos + R_neg. Ties (the paper says nothing) go to the smaller s_pos, then the index,
/// so the order is deterministic.
pub fn order(s_pos: &[f32], s_neg: &[f32]) -> Vec<usize> {
    assert_eq!(s_pos.len(), s_neg.len(), "one positive and one negative score per prototype");
    let (rp, rn) = (ranks(s_pos, false), ranks(s_neg, true));
    let mut idx: Vec<usize> = (0..s_pos.len()).collect();
    idx.sort_by(|&a, &b| (rp[a] + rn[a]).cmp(&(rp[b] + rn[b])).then(s_pos[a].total_cmp(&s_pos[b])).then(a.cmp(&b)));
    idx
}

/// Order of `protos` (`[N, C]`) for the projected expression and anti-expression (`[C]` each).
pub fn rank_prototypes(protos: &Tensor, l_proj: &Tensor, l_anti_proj: &Tensor) -> Result<Vec<usize>> {
    Ok(order(&distances(protos, l_proj)?, &distances(protos, l_anti_proj)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn closest_to_expression_and_farthest_from_anti_comes_first() {
        // 0: far from L, close to anti. 1: middling. 2: equal to L and far from anti.
        let s_pos = [5.0, 2.0, 0.0];
        let s_neg = [0.5, 2.0, 6.0];
        assert_eq!(order(&s_pos, &s_neg), vec![2, 1, 0]);
    }

    #[test]
    fn rank_sum_trades_off_the_two_scores() {
        // a: best s_pos, worst s_neg (rank 0 + 2); b: second on both (1 + 1); c: worst s_pos, best s_neg (2 + 0).
        // All sum to 2: ties go to the smaller s_pos.
        assert_eq!(order(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), vec![0, 1, 2]);
    }

    #[test]
    fn prototype_equal_to_the_expression_ranks_first() -> Result<()> {
        let dev = Device::Cpu;
        let l = Tensor::new(&[1f32, 0.0, 0.0, 0.0], &dev)?;
        let anti = Tensor::new(&[-1f32, 0.0, 0.0, 0.0], &dev)?;
        let protos = Tensor::new(
            &[[0.1f32, 0.9, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.2]],
            &dev,
        )?;
        let o = rank_prototypes(&protos, &l, &anti)?;
        assert_eq!(o[0], 2, "prototype equal to L must rank first: {o:?}");
        assert_eq!(*o.last().unwrap(), 1, "prototype equal to L_anti must rank last: {o:?}");
        Ok(())
    }
}
