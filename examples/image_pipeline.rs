//! Image pipeline: resize, filter, watermark a batch of in-memory images, output in
//! input order.
//!
//! ```text
//! cargo run --release --example image_pipeline [-- --quick]
//! ```
//!
//! Each stage is one fan-out over the whole batch (`Pool::map`, results written in
//! place in input order, so no reordering is needed): resize halves each image with a
//! 2x2 box, the filter (the expensive stage) runs a 3x3 sharpen kernel several times,
//! and the watermark stamps a pattern into a corner. The same pipeline runs
//! sequentially, and every output image must match byte for byte.

use std::time::Instant;

#[derive(Clone, PartialEq)]
struct Image {
    id: usize,
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

/// A deterministic test image: gradients and noise, so every stage changes it.
fn generate(id: usize, width: usize, height: usize) -> Image {
    let mut x = id as u64 | 1;
    let pixels = (0..width * height)
        .map(|p| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((p % width + p / width + id) as u8).wrapping_add((x & 15) as u8)
        })
        .collect();
    Image { id, width, height, pixels }
}

fn resize(img: &Image) -> Image {
    let (w, h) = (img.width / 2, img.height / 2);
    let at = |x: usize, y: usize| u16::from(img.pixels[y * img.width + x]);
    let pixels = (0..w * h)
        .map(|p| {
            let (x, y) = (2 * (p % w), 2 * (p / w));
            ((at(x, y) + at(x + 1, y) + at(x, y + 1) + at(x + 1, y + 1)) / 4) as u8
        })
        .collect();
    Image { id: img.id, width: w, height: h, pixels }
}

fn sharpen(img: &Image, passes: usize) -> Image {
    let mut out = img.clone();
    for _ in 0..passes {
        let src = out.pixels.clone();
        for y in 1..img.height - 1 {
            for x in 1..img.width - 1 {
                let at = |dx: usize, dy: usize| i32::from(src[(y + dy - 1) * img.width + x + dx - 1]);
                let v = 5 * at(1, 1) - at(0, 1) - at(2, 1) - at(1, 0) - at(1, 2);
                out.pixels[y * img.width + x] = v.clamp(0, 255) as u8;
            }
        }
    }
    out
}

fn watermark(img: &Image) -> Image {
    let mut out = img.clone();
    for y in 0..8.min(img.height) {
        for x in 0..16.min(img.width) {
            if (x + y) % 3 == 0 {
                out.pixels[y * img.width + x] = 255;
            }
        }
    }
    out
}

fn checksum(img: &Image) -> u64 {
    img.pixels.iter().fold(img.id as u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (count, side, passes) = if quick { (32, 256, 3) } else { (64, 512, 6) };
    let images: Vec<Image> = (0..count).map(|id| generate(id, side, side)).collect();
    let pool = fanout::Pool::new().expect("pool");

    let start = Instant::now();
    let resized = pool.map(&images, resize);
    let filtered = pool.map(&resized, |img| sharpen(img, passes));
    let done = pool.map(&filtered, watermark);
    let parallel = start.elapsed();

    let start = Instant::now();
    let expected: Vec<Image> = images.iter().map(|i| watermark(&sharpen(&resize(i), passes))).collect();
    let sequential = start.elapsed();

    for img in done.iter().take(4) {
        println!("image {:>2}: {}x{} checksum {:016x}", img.id, img.width, img.height, checksum(img));
    }
    println!(
        "... {} images in all, in input order: {}",
        done.len(),
        done.iter().enumerate().all(|(i, img)| img.id == i)
    );
    assert!(done == expected, "the pool's output differs from the sequential pipeline");
    println!(
        "pool {:.1} ms vs sequential {:.1} ms ({:.2}x on {} threads); outputs identical",
        parallel.as_secs_f64() * 1e3,
        sequential.as_secs_f64() * 1e3,
        sequential.as_secs_f64() / parallel.as_secs_f64(),
        pool.num_threads()
    );
}
