//! Half-space trees (Tan, Ting & Liu, "Fast anomaly detection for streaming
//! data", IJCAI 2011): an ensemble of random, fully grown binary trees over a
//! fixed workspace, each node counting how many recent points fell in it.
//!
//! Each tree is built once, from the seed, without looking at data: a random
//! workspace per dimension (a random point `s` in `[0, 1]`, widened to
//! `s ± 2·max(s, 1 − s)`, as in the paper), then a random dimension per node,
//! split at the middle of the node's range. Points stream through in windows
//! of [`HstConfig::window`]: the *latest* masses count the current window, and
//! when it fills they become the *reference* masses and counting starts
//! again. A point is scored against the reference: a tree *isolates* it when
//! its path reaches a node whose reference mass is below
//! [`HstConfig::size_limit`] (a region the recent stream barely visited)
//! before the leaves. The score is the fraction of trees that isolate it, in
//! `[0, 1]`; points in well-visited regions score near 0, a point far out in
//! any dimension that most trees split on scores near 1.
//!
//! That is the paper's mass-based criterion with a bounded score (the paper's
//! raw score, mass × 2^depth summed over trees, has no fixed scale, and a
//! threshold on it would depend on the window and the data).
//!
//! Memory is fixed: `trees × (2^(depth+1) − 1)` nodes of 16 bytes, shared
//! by every principal; updates and scores cost `trees × depth` steps.

/// Settings of the ensemble.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HstConfig {
    /// Trees in the ensemble. Default 25, the paper's.
    pub trees: usize,
    /// Depth of each tree. Default 10: the paper uses 15 on data with more
    /// dimensions; ten random halvings already cut each of our 9 dimensions
    /// about once.
    pub depth: usize,
    /// Points per window. Default 2,048: at 1,000 active principals
    /// sampled every 10 s, the reference is refreshed about every 20 s, and
    /// it holds several samples of most of them.
    pub window: u32,
    /// Reference mass below which a node isolates a point. Default 4: a
    /// region fewer than 4 of the last 2,048 samples visited (0.2%).
    pub size_limit: u32,
}

impl Default for HstConfig {
    fn default() -> Self {
        HstConfig {
            trees: 25,
            depth: 10,
            window: 2048,
            size_limit: 4,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Node {
    dim: u8,
    split: f32,
    reference: u32,
    latest: u32,
}

/// The ensemble.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct HalfSpaceTrees {
    cfg: HstConfig,
    /// `trees` complete binary trees, each in breadth-first order.
    nodes: Vec<Node>,
    per_tree: usize,
    seen: u32,
    windows: u64,
}

/// SplitMix64: a small, seeded, well-mixed generator, enough to draw split
/// dimensions and workspaces (no RNG crate needed, and no thread RNG).
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl HalfSpaceTrees {
    /// Builds the trees over `dims` dimensions, each expected in `[0, 1]`.
    pub fn new(cfg: HstConfig, dims: usize, seed: u64) -> Self {
        let mut rng = SplitMix(seed ^ 0x4853_545F_5745_4654);
        let per_tree = (1usize << (cfg.depth + 1)) - 1;
        let mut nodes = vec![Node::default(); cfg.trees * per_tree];
        for t in 0..cfg.trees {
            let mut lo = vec![0.0; dims];
            let mut hi = vec![0.0; dims];
            for q in 0..dims {
                let s = rng.unit();
                let r = 2.0 * s.max(1.0 - s);
                lo[q] = s - r;
                hi[q] = s + r;
            }
            build(
                &mut nodes[t * per_tree..(t + 1) * per_tree],
                0,
                &mut lo,
                &mut hi,
                &mut rng,
            );
        }
        HalfSpaceTrees {
            cfg,
            nodes,
            per_tree,
            seen: 0,
            windows: 0,
        }
    }

    /// Counts a point in the latest window, and rotates the windows when it
    /// is full.
    pub fn update(&mut self, x: &[f64]) {
        for t in 0..self.cfg.trees {
            let tree = &mut self.nodes[t * self.per_tree..(t + 1) * self.per_tree];
            let mut i = 0;
            loop {
                tree[i].latest += 1;
                let left = 2 * i + 1;
                if left >= tree.len() {
                    break;
                }
                i = if x[tree[i].dim as usize] < f64::from(tree[i].split) {
                    left
                } else {
                    left + 1
                };
            }
        }
        self.seen += 1;
        if self.seen >= self.cfg.window {
            for n in &mut self.nodes {
                n.reference = n.latest;
                n.latest = 0;
            }
            self.seen = 0;
            self.windows += 1;
        }
    }

    /// Whether a reference window exists yet (before that, nothing scores).
    pub fn ready(&self) -> bool {
        self.windows > 0
    }

    /// The fraction of trees that isolate `x` in a sparsely visited region,
    /// in `[0, 1]`; 0 before the first window is full.
    pub fn score(&self, x: &[f64]) -> f64 {
        if !self.ready() {
            return 0.0;
        }
        let mut isolated = 0usize;
        for t in 0..self.cfg.trees {
            let tree = &self.nodes[t * self.per_tree..(t + 1) * self.per_tree];
            let mut i = 0;
            loop {
                if tree[i].reference < self.cfg.size_limit {
                    isolated += 1;
                    break;
                }
                let left = 2 * i + 1;
                if left >= tree.len() {
                    break;
                }
                i = if x[tree[i].dim as usize] < f64::from(tree[i].split) {
                    left
                } else {
                    left + 1
                };
            }
        }
        isolated as f64 / self.cfg.trees as f64
    }

    /// Whether these trees (restored from bytes) have the shape `cfg`
    /// gives and split only dimensions below `dims`, so that scoring and
    /// updating them cannot index out of bounds.
    pub fn fits(&self, cfg: &HstConfig, dims: usize) -> bool {
        let per_tree = (1usize << (cfg.depth + 1)) - 1;
        self.cfg == *cfg
            && self.per_tree == per_tree
            && self.nodes.len() == cfg.trees * per_tree
            && self.nodes.iter().all(|n| usize::from(n.dim) < dims)
    }

    /// Bytes held by the trees.
    pub fn memory_bytes(&self) -> usize {
        self.nodes.len() * std::mem::size_of::<Node>()
    }
}

fn build(tree: &mut [Node], i: usize, lo: &mut [f64], hi: &mut [f64], rng: &mut SplitMix) {
    let left = 2 * i + 1;
    if left >= tree.len() {
        return;
    }
    let q = (rng.next() % lo.len() as u64) as usize;
    let mid = (lo[q] + hi[q]) / 2.0;
    tree[i].dim = q as u8;
    tree[i].split = mid as f32;
    let saved = hi[q];
    hi[q] = mid;
    build(tree, left, lo, hi, rng);
    hi[q] = saved;
    let saved = lo[q];
    lo[q] = mid;
    build(tree, left + 1, lo, hi, rng);
    lo[q] = saved;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outliers_score_high_and_inliers_low() {
        let cfg = HstConfig {
            window: 256,
            ..HstConfig::default()
        };
        let mut h = HalfSpaceTrees::new(cfg, 4, 1);
        let mut rng = SplitMix(9);
        for _ in 0..600 {
            let p: Vec<f64> = (0..4).map(|_| rng.unit() * 0.1).collect();
            h.update(&p);
        }
        assert!(h.score(&[0.05, 0.05, 0.05, 0.05]) < 0.1);
        assert!(h.score(&[0.05, 0.9, 0.05, 0.05]) > 0.5);
        assert!(h.score(&[0.9, 0.9, 0.9, 0.9]) > 0.9);
    }
}
