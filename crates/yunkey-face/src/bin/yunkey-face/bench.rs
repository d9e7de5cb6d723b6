//! `yunkey-face bench`: the recogniser's speed and its distances on labelled photos.

use anyhow::Context;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use yunkey_face::{distance, Embedding, Recognizer, THRESHOLD};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Directory with the dlib models (scripts/face-models.sh DIR).
    #[arg(long)]
    models: PathBuf,
    /// Directory of JPEG and PNG photos, one face each; a file's label is the letters its
    /// name starts with (`obama2.jpg` and `obama_smile.png` are both `obama`).
    #[arg(long)]
    photos: PathBuf,
    /// Times each photo is embedded (after one warm-up pass).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

struct Photo {
    name: String,
    label: String,
    bytes: Vec<u8>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let photos = load_photos(&args.photos)?;
    anyhow::ensure!(
        !photos.is_empty(),
        "no .jpg, .jpeg or .png files in {}",
        args.photos.display()
    );
    let rounds = args.rounds.max(1);
    let started = Instant::now();
    let recognizer = Recognizer::open(&args.models)?;
    println!(
        "models loaded from {} in {:.0} ms",
        args.models.display(),
        ms(started.elapsed())
    );

    // Warm-up, and the embeddings compared below.
    let embeddings: Vec<Option<Embedding>> = photos
        .iter()
        .map(|p| match recognizer.embed(&p.bytes) {
            Ok(e) => Some(e),
            Err(e) => {
                println!("{}: {e} (left out)", p.name);
                None
            }
        })
        .collect();

    println!("\nembed (decode + detect + landmarks + embedding), {rounds} rounds, one thread:");
    println!(
        "{:<28} {:>9} {:>11} {:>10}",
        "photo", "KiB", "pixels", "median ms"
    );
    let mut all = Vec::new();
    for (photo, embedding) in photos.iter().zip(&embeddings) {
        if embedding.is_none() {
            continue;
        }
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = Instant::now();
            // Only timed photos that embedded in the warm-up are here.
            let _ = recognizer.embed(&photo.bytes);
            times.push(t.elapsed());
        }
        times.sort();
        let dims = image::load_from_memory(&photo.bytes)
            .map(|i| format!("{}x{}", i.width(), i.height()))
            .unwrap_or_default();
        println!(
            "{:<28} {:>9} {:>11} {:>10.1}",
            photo.name,
            photo.bytes.len() / 1024,
            dims,
            ms(percentile(&times, 50.0))
        );
        all.extend(times);
    }
    all.sort();
    if !all.is_empty() {
        let median = percentile(&all, 50.0);
        println!(
            "all {} embeds: median {:.1} ms, p99 {:.1} ms, {:.2} images/s per core",
            all.len(),
            ms(median),
            ms(percentile(&all, 99.0)),
            1.0 / median.as_secs_f64()
        );
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (images, took) = parallel(&recognizer, &photos, &embeddings, rounds, threads);
        println!(
            "{threads} threads at once: {images} embeds in {:.2} s, {:.2} images/s",
            took.as_secs_f64(),
            images as f64 / took.as_secs_f64()
        );
    }

    distances(&photos, &embeddings);
    Ok(())
}

/// Embeds every photo `rounds` times from `threads` threads at once.
fn parallel(
    recognizer: &Recognizer,
    photos: &[Photo],
    embeddings: &[Option<Embedding>],
    rounds: usize,
    threads: usize,
) -> (usize, Duration) {
    let work: Vec<&Photo> = photos
        .iter()
        .zip(embeddings)
        .filter(|(_, e)| e.is_some())
        .map(|(p, _)| p)
        .collect();
    let jobs = work.len() * rounds;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= jobs {
                    break;
                }
                let _ = recognizer.embed(&work[i % work.len()].bytes);
            });
        }
    });
    (jobs, started.elapsed())
}

/// Distances of every pair of embedded photos, same label and different labels.
fn distances(photos: &[Photo], embeddings: &[Option<Embedding>]) {
    let mut same = Vec::new();
    let mut different = Vec::new();
    println!("\ndistances (threshold {THRESHOLD}: below, the same person):");
    for i in 0..photos.len() {
        for j in i + 1..photos.len() {
            let (Some(a), Some(b)) = (&embeddings[i], &embeddings[j]) else {
                continue;
            };
            let d = distance(a, b);
            let is_same = photos[i].label == photos[j].label;
            let wrong = if is_same == (d < THRESHOLD) {
                ""
            } else {
                "  <- wrong side of the threshold"
            };
            println!(
                "  {:<24} {:<24} {} {d:.3}{wrong}",
                photos[i].name,
                photos[j].name,
                if is_same { "same" } else { "diff" }
            );
            if is_same {
                same.push(d);
            } else {
                different.push(d);
            }
        }
    }
    summary("same person", &mut same);
    summary("different people", &mut different);
}

fn summary(what: &str, values: &mut [f32]) {
    if values.is_empty() {
        println!("{what}: no pairs");
        return;
    }
    values.sort_by(f32::total_cmp);
    let wrong = values
        .iter()
        .filter(|d| (what == "same person") != (**d < THRESHOLD))
        .count();
    println!(
        "{what}: {} pairs, min {:.3}, median {:.3}, max {:.3}; {wrong} on the wrong side of {THRESHOLD}",
        values.len(),
        values[0],
        values[(values.len() - 1) / 2],
        values[values.len() - 1],
    );
}

fn load_photos(dir: &std::path::Path) -> anyhow::Result<Vec<Photo>> {
    let mut photos = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if !matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png")) {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let label: String = name
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect::<String>()
            .to_ascii_lowercase();
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        photos.push(Photo { name, label, bytes });
    }
    photos.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(photos)
}

/// The `p`th percentile (nearest rank) of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
