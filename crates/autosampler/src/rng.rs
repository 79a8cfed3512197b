//! Seeded randomness.
//!
//! [`NumpyRandomState`] reproduces numpy's legacy `np.random.RandomState(seed)` (MT19937 seeded by
//! `init_genrand`) and its `shuffle` of a 1-d array, bit for bit. The long-tailed split uses it so
//! that our CIFAR-LT subset is the *same images* as the one LDAM-DRW's `IMBALANCECIFAR10` and the
//! PyTorch reference (`torch_reference.py`) draw for a given seed: accuracy comparisons are then on
//! the same split, not merely a split of the same sizes. Everything else uses ChaCha
//! ([`rand_chacha`]), with streams derived by [`mix`].

/// numpy's legacy `RandomState`: MT19937 with numpy's bounded-integer rule for `shuffle`.
pub struct NumpyRandomState {
    mt: [u32; 624],
    pos: usize,
}

impl NumpyRandomState {
    /// `np.random.RandomState(seed)`.
    pub fn new(seed: u32) -> Self {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        Self { mt, pos: 624 }
    }

    fn refill(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        for i in 0..624 {
            let y = (self.mt[i] & UPPER) | (self.mt[(i + 1) % 624] & LOWER);
            let mut v = self.mt[(i + 397) % 624] ^ (y >> 1);
            if y & 1 == 1 {
                v ^= MATRIX_A;
            }
            self.mt[i] = v;
        }
        self.pos = 0;
    }

    /// The next raw 32-bit output (`genrand_int32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos >= 624 {
            self.refill();
        }
        let mut y = self.mt[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// numpy's `random_interval(max)`: uniform on `0..=max` by masked rejection.
    fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for s in [1, 2, 4, 8, 16] {
            mask |= mask >> s;
        }
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// `RandomState.shuffle(x)` for a 1-d array (at most 2³² elements).
    pub fn shuffle<T>(&mut self, x: &mut [T]) {
        for i in (1..x.len()).rev() {
            let j = self.interval(i as u32) as usize;
            x.swap(i, j);
        }
    }
}

/// Mixes a seed with stream identifiers into a new 64-bit seed (SplitMix64 finaliser), so that
/// e.g. the augmentation of image `i` in epoch `e` depends on (seed, e, i) only, never on which
/// thread drew it or in which order.
pub fn mix(seed: u64, parts: &[u64]) -> u64 {
    let mut z = seed;
    for &p in parts {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15).wrapping_add(p);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
    }
    z
}

/// A ChaCha8 generator for the stream (seed, parts…).
pub fn chacha(seed: u64, parts: &[u64]) -> rand_chacha::ChaCha8Rng {
    use rand::SeedableRng;
    rand_chacha::ChaCha8Rng::seed_from_u64(mix(seed, parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_numpy_raw_output() {
        // import numpy as np
        // rs = np.random.RandomState(0)
        // print(rs.randint(0, 2**32, size=3, dtype=np.uint64))  # raw 32-bit draws
        // -> [2357136044 2546248239 3071714933]
        let mut r = NumpyRandomState::new(0);
        assert_eq!(
            [r.next_u32(), r.next_u32(), r.next_u32()],
            [2357136044, 2546248239, 3071714933]
        );
    }

    #[test]
    fn shuffle_matches_numpy() {
        // rs = np.random.RandomState(0); a = np.arange(10); rs.shuffle(a); print(a)
        // -> [2 8 4 9 1 6 7 3 0 5]
        let mut r = NumpyRandomState::new(0);
        let mut a: Vec<usize> = (0..10).collect();
        r.shuffle(&mut a);
        assert_eq!(a, [2, 8, 4, 9, 1, 6, 7, 3, 0, 5]);
        // a second shuffle continues the same stream:
        // b = np.arange(5000); rs.shuffle(b); print(b[:5])  -> [ 405 4224  491 3118 1529]
        let mut b: Vec<usize> = (0..5000).collect();
        r.shuffle(&mut b);
        assert_eq!(&b[..5], EXPECTED_5000);
    }

    const EXPECTED_5000: &[usize] = &[405, 4224, 491, 3118, 1529];

    #[test]
    fn mix_separates_streams() {
        assert_ne!(mix(1, &[0, 1]), mix(1, &[1, 0]));
        assert_eq!(mix(7, &[3]), mix(7, &[3]));
    }
}
