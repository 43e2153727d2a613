//! The `rlsd` command line. Thin: parse arguments, call the library.

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Train language models with RL from verifiable rewards and self-distilled token credit (RLSD).
#[derive(Debug, Parser)]
#[command(name = "rlsd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the libtorch build, visible devices, and run a tensor self-check.
    Info,
}

fn main() -> Result<()> {
    rlsd::logging::init();
    let cli = Cli::parse();
    match cli.command {
        Command::Info => info(),
    }
}

fn info() -> Result<()> {
    println!("rlsd {}", env!("CARGO_PKG_VERSION"));
    println!("{}", rlsd::device::describe());
    let x = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    let y = (&x * &x).sum(tch::Kind::Float);
    println!("self-check: sum([1,2,3]^2) = {}", y.double_value(&[]));
    Ok(())
}
