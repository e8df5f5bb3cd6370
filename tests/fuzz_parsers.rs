//! Fuzzing the parsers of untrusted input on stable Rust: the COCO JSON,
//! VOC XML and CSV/TSV list loaders and the image decoder get mutated
//! copies of the seed corpus in `tests/fuzz/` (bit flips, boundary bytes,
//! insertions, deletions, duplicated and swapped spans, truncations,
//! numbers replaced by extreme ones). Every input must come back as a value
//! or an error; a panic fails the test and saves the input under
//! `target/fuzz-failures/` to replay. `ASL_FUZZ_INPUTS` sets the total
//! (default 1,000,000).

use asl::data::sources::{
    parse_coco, parse_list, parse_voc_objects, CocoOptions, CrowdPolicy, DifficultPolicy, ListOptions,
};
use asl::data::transform::decode_rgb_bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Decoded images larger than this are refused, which keeps mutated
/// headers from making each input cost a gigabyte of zeroes.
const FUZZ_DECODE_LIMIT: usize = 4 << 20;

fn corpus(kind: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz").join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// One to four mutations of `seed`, each a different kind of damage.
fn mutate(seed: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    const BOUNDARY: [u8; 12] = [0, 0xFF, 0x7F, 0x80, b'"', b'{', b'}', b'[', b'<', b'>', b',', b'\n'];
    const NUMBERS: [&[u8]; 6] = [b"-1", b"0", b"4294967296", b"-9223372036854775809", b"1e999", b"65535"];
    let mut data = seed.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = data.len().max(1);
        let at = rng.random_range(0..len).min(data.len());
        let last = at.min(data.len().saturating_sub(1));
        match rng.random_range(0..8) {
            0 if !data.is_empty() => data[last] ^= 1 << rng.random_range(0..8),
            1 if !data.is_empty() => data[last] = BOUNDARY[rng.random_range(0..BOUNDARY.len())],
            2 => {
                let bytes: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                data.splice(at..at, bytes);
            }
            3 => {
                let end = (at + rng.random_range(1..64)).min(data.len());
                data.drain(at..end);
            }
            4 => {
                let end = (at + rng.random_range(1..64)).min(data.len());
                let span = data[at..end].to_vec();
                let to = rng.random_range(0..=data.len());
                data.splice(to..to, span);
            }
            5 => data.truncate(at),
            6 => {
                // A run of digits becomes an extreme number.
                if let Some(start) = (at..data.len()).find(|&i| data[i].is_ascii_digit()) {
                    let end = (start..data.len()).find(|&i| !data[i].is_ascii_digit()).unwrap_or(data.len());
                    data.splice(start..end, NUMBERS[rng.random_range(0..NUMBERS.len())].iter().copied());
                }
            }
            _ => {
                // Two spans swap places.
                let (a, b) = (rng.random_range(0..len), rng.random_range(0..len));
                let (a, b) = (a.min(b).min(data.len()), a.max(b).min(data.len()));
                let n = rng.random_range(0..32).min(b - a).min(data.len() - b);
                for i in 0..n {
                    data.swap(a + i, b + i);
                }
            }
        }
    }
    data
}

/// Runs `parse` on `inputs` mutations of the `kind` corpus; panics name the saved input.
fn fuzz(kind: &str, inputs: usize, seed: u64, mut parse: impl FnMut(&[u8])) {
    let seeds = corpus(kind);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for seed in &seeds {
        parse(seed);
    }
    for i in 0..inputs {
        let input = mutate(&seeds[i % seeds.len()], &mut rng);
        if catch_unwind(AssertUnwindSafe(|| parse(&input))).is_err() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{kind}-{i}"));
            std::fs::write(&path, &input).unwrap();
            panic!("the {kind} parser panicked on input {i}, saved to {}", path.display());
        }
    }
}

fn total() -> usize {
    std::env::var("ASL_FUZZ_INPUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

#[test]
fn coco_annotations_never_panic() {
    let path = Path::new("instances_fuzz.json");
    let options = [CocoOptions::default(), CocoOptions { drop_unannotated: true, crowd: CrowdPolicy::Unknown }];
    let mut parsed = 0;
    fuzz("coco", total() * 3 / 10, 1, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        for o in &options {
            parsed += usize::from(parse_coco(&text, path, Path::new("images"), o).is_ok());
        }
    });
    println!("coco: {parsed} parses succeeded");
}

#[test]
fn voc_annotations_never_panic() {
    let path = Path::new("Annotations/fuzz.xml");
    fuzz("voc", total() / 5, 2, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        for policy in [DifficultPolicy::Include, DifficultPolicy::Exclude, DifficultPolicy::Unknown] {
            let _ = parse_voc_objects(&text, path, policy);
        }
    });
}

#[test]
fn csv_and_tsv_lists_never_panic() {
    let options = ListOptions::default();
    fuzz("list", total() / 5, 3, |bytes| {
        for path in [Path::new("fuzz.csv"), Path::new("fuzz.tsv")] {
            let _ = parse_list(bytes, path, &options);
        }
    });
}

#[test]
fn image_decoding_never_panics() {
    let mut pixels = Vec::new();
    let mut decoded = 0;
    fuzz("image", total() * 3 / 10, 4, |bytes| {
        if let Ok((w, h)) = decode_rgb_bytes(bytes, &mut pixels, FUZZ_DECODE_LIMIT) {
            assert!(pixels.len() >= w as usize * h as usize * 3);
            decoded += 1;
        }
    });
    println!("images: {decoded} decodes succeeded");
}
