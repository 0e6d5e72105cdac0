//! The `minqing` command: start the suite (`up`), one service (`serve`), talk to it (`case`,
//! `catalogue`, `places`, `token`, `unit`, `rules`, `route`, `desk`, `calendar`, `clock`,
//! `reply`, `rate`), and load it (`bench`). See `minqing --help`.

#![forbid(unsafe_code)]

/// Prints a line to stdout; a closed pipe (`minqing case list | head`) ends the program
/// quietly instead of panicking as `println!` would.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(err) = writeln!(std::io::stdout(), $($arg)*) {
            if err.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

mod bench;
mod cli;
mod client;
mod indicators_bench;
mod indicators_cli;
mod matching_cli;
mod route_bench;
mod routing_cli;
mod run;
mod services;
mod supervision_cli;

use clap::Parser;

/// jemalloc instead of glibc's malloc. Under the whole suite's load glibc spent ~40 % of the
/// process's CPU in malloc/free (fastbin consolidation after every larger allocation); with
/// jemalloc the suite routes 15-20 % more cases a second and SubmitCase is as fast or faster on
/// both stores, within the memory goal (BENCHMARKS.md, Intake's third-session runs; mimalloc
/// was tried too and was slower on SQLite and heavier).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let mut builder = if cli.single_threaded() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("minqing: cannot start the runtime: {err}");
            return std::process::ExitCode::from(70);
        }
    };
    runtime.block_on(cli.run())
}
