//! Synthetic monthly retail-like series (a level, a trend, a December peak, an additive or a
//! multiplicative season, multiplicative noise) from a seeded generator: the series the
//! forecast benchmark and its quick accuracy check use, the same on every machine.

/// SplitMix64: a small deterministic generator.
pub struct Rng(pub u64);

impl Rng {
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-12), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// `n` months of one retail-like series.
pub fn retail(rng: &mut Rng, n: usize) -> Vec<f64> {
    let level = 500.0 + 2000.0 * rng.uniform();
    let trend = level * (rng.uniform() - 0.3) * 0.01;
    let amp = 0.1 + 0.3 * rng.uniform();
    let noise = 0.02 + 0.06 * rng.uniform();
    let mul = rng.uniform() < 0.5;
    (0..n)
        .map(|t| {
            let season = [
                -0.3, -0.35, -0.1, -0.05, 0.0, 0.05, 0.0, 0.05, -0.05, 0.05, 0.3, 0.9,
            ][t % 12]
                * amp
                / 0.3;
            let base = level + trend * t as f64;
            let y = if mul {
                base * (1.0 + season * 0.5)
            } else {
                base + season * level * 0.5
            };
            (y * (1.0 + noise * rng.normal())).max(1.0)
        })
        .collect()
}
