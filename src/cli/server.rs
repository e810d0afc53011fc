//! `twlab server`: arguments (clap) → the library's plan.
// Shim: the clap struct still lives in the library; moving it here is the
// next step.

pub use twlab::peer::server::ServerArgs;

pub fn run(a: ServerArgs) -> anyhow::Result<u8> {
    twlab::peer::server::run(&a).map_err(Into::into)
}
