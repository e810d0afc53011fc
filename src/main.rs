//! The `twlab` command: parse arguments, call the library, turn errors into
//! one line on stderr and a non-zero exit code. No logic lives here; the
//! arguments and their parsing are in `cli/`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
