//! Off Linux, the arguments of a command that needs Linux: anything is
//! accepted, so the command can say once, up front, that it needs Linux
//! (`Cmd::linux_needs`) instead of clap rejecting options it cannot run.

/// Whatever was given after the command's name.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Ignored: this command needs Linux.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    _rest: Vec<std::ffi::OsString>,
}

/// Never reached: `Cmd::linux_needs` refuses first; kept as a guard.
pub fn run(_a: Args) -> anyhow::Result<crate::outcome::Exit> {
    anyhow::bail!("this command needs Linux")
}
