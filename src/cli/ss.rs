//! `twlab ss`: arguments (clap) → the library's plan.
// Shim: the clap struct still lives in the library; moving it here is the
// next step.

pub use twlab::ss::SsArgs;

pub fn run(a: SsArgs) -> anyhow::Result<u8> {
    twlab::ss::run(a).map_err(Into::into)
}
