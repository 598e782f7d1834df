//! Helpers shared by the fuzz targets in `fuzz_targets/`: the target's parameters read from
//! the first bytes of an input, and the rest of the input cut into chunks as a network
//! would deliver it.
//!
//! Every target checks properties of the parsers, not only that they do not panic: the same
//! bytes in any chunking give the same result, buffers stay within their limits, and what an
//! encoder writes decodes back to what it was given.

/// A fuzz input: a few parameter bytes, then the bytes a peer sends.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    params: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    /// Takes the first `n` bytes of `data` as parameters; the remainder is the payload.
    pub fn new(data: &'a [u8], n: usize) -> Self {
        let (params, rest) = data.split_at(n.min(data.len()));
        Self { params, rest }
    }

    /// Parameter byte `i`; 0 when the input is shorter.
    pub fn byte(&self, i: usize) -> u8 {
        self.params.get(i).copied().unwrap_or(0)
    }

    /// Parameter bytes `i` and `i + 1` as a little-endian number.
    pub fn u16(&self, i: usize) -> u16 {
        u16::from_le_bytes([self.byte(i), self.byte(i + 1)])
    }

    /// The bytes after the parameters.
    pub fn payload(&self) -> &'a [u8] {
        self.rest
    }
}

/// Cuts `data` into consecutive chunks of 1 to `max` bytes (at least 1), their sizes drawn
/// from `seed`: the same seed gives the same cuts.
pub fn chunks(data: &[u8], seed: u16, max: usize) -> Chunks<'_> {
    Chunks {
        rest: data,
        sizes: Sizes::new(seed, max),
    }
}

/// The iterator of [`chunks`].
#[derive(Debug, Clone)]
pub struct Chunks<'a> {
    rest: &'a [u8],
    sizes: Sizes,
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let size = self.sizes.next_size().min(self.rest.len());
        let (chunk, rest) = self.rest.split_at(size);
        self.rest = rest;
        Some(chunk)
    }
}

/// An endless sequence of sizes in `1..=max` (at least 1), drawn from a seed (xorshift32).
#[derive(Debug, Clone)]
pub struct Sizes {
    state: u32,
    max: usize,
}

impl Sizes {
    /// The sizes for `seed`; the same seed gives the same sequence.
    pub fn new(seed: u16, max: usize) -> Self {
        Self {
            // xorshift32 needs a non-zero state.
            state: u32::from(seed) << 8 | 0x5a,
            max: max.max(1),
        }
    }

    /// The next size.
    pub fn next_size(&mut self) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        1 + self.state as usize % self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_input_in_order() {
        let data: Vec<u8> = (0..=255).collect();
        for seed in [0, 1, 77, u16::MAX] {
            for max in [0, 1, 3, 64, 1000] {
                let joined: Vec<u8> = chunks(&data, seed, max).flatten().copied().collect();
                assert_eq!(joined, data);
                assert!(chunks(&data, seed, max).all(|c| !c.is_empty() && c.len() <= max.max(1)));
            }
        }
    }
}
