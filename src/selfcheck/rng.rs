//! A tiny seeded PRNG (SplitMix64): situations must come out the same for
//! the same `--seed` on every machine and every release, which a crate's
//! generator does not promise; this one is 10 lines and fixed forever.

/// SplitMix64 (Steele, Lea, Flood 2014; the seeding generator of
/// xoshiro): one 64-bit state, a full-period Weyl sequence scrambled.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The generator of situation `case` of run `seed`: each situation has
    /// its own stream, so it does not depend on which thread runs it or
    /// on the situations before it.
    pub fn for_case(seed: u64, case: u64) -> Self {
        let mut r = Rng(seed ^ 0x5EED_5E1F_C4EC_0000);
        let mixed = r.next_u64() ^ case.wrapping_mul(0xD1B5_4A32_D192_ED03);
        Rng(mixed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is below 2^-50 for the
    /// small `n` used here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < percent as usize
    }

    /// One of `items` (not empty), uniformly.
    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }

    /// One of `items` by weight: `(weight, value)`, weights not all 0.
    pub fn weighted<T: Clone>(&mut self, items: &[(u32, T)]) -> T {
        let total: u32 = items.iter().map(|(w, _)| w).sum();
        let mut x = self.below(total as usize) as u32;
        for (w, v) in items {
            if x < *w {
                return v.clone();
            }
            x -= w;
        }
        items[items.len() - 1].1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_fixed_and_differ_per_case() {
        let a: Vec<u64> = (0..3).map(|_| Rng::for_case(1, 0).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::for_case(1, 0).next_u64(),
            Rng::for_case(1, 1).next_u64()
        );
        assert_ne!(
            Rng::for_case(1, 0).next_u64(),
            Rng::for_case(2, 0).next_u64()
        );
        let mut r = Rng::for_case(7, 7);
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            seen[r.below(4)] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }
}
