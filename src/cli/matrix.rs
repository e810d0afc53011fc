//! `twlab matrix`: arguments (clap) → the library's plan.
// Shim: the clap struct still lives in the library; moving it here is the
// next step.

pub use twlab::matrix::MatrixArgs;

pub fn run(a: MatrixArgs) -> anyhow::Result<u8> {
    twlab::matrix::run(&a).map_err(Into::into)
}

/// Before any thread starts (see `twlab::matrix::before_threads`).
pub fn before_threads(a: &MatrixArgs) {
    twlab::matrix::before_threads(a)
}
