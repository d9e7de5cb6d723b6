//! `yunkey-face`: the biometric unit's process. `serve` answers FaceService.Embed over mutual
//! TLS for the risk service; `bench` measures the recogniser on a directory of photos.

mod bench;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "yunkey-face",
    version,
    about = "yunkey's biometric unit: photos in, face embeddings out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves yunkey.v1.FaceService over TLS (callers: role `risk`) until SIGTERM or SIGINT.
    Serve(serve::ServeArgs),
    /// Embeds every photo in a directory several times: time per image, and the distances
    /// between people (labels from file names: `obama2.jpg` is `obama`).
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
