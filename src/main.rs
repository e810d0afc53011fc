//! The `twlab` command. Everything, the command line included, lives in the
//! library (`src/cli/` parses arguments into the typed plans, prints the
//! reports and maps them to exit codes), so that the commands can stay
//! private to the crate while the binary stays this one call.

fn main() -> std::process::ExitCode {
    twlab::cli_main()
}
