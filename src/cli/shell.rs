//! `twlab completions SHELL` and `twlab man [COMMAND]`: generated from the
//! same clap definitions the parser uses (clap_complete, clap_mangen), so
//! they cannot drift from the flags.

use crate::outcome::Exit;
use clap::{Args, CommandFactory, ValueEnum};
use std::io::Write;

/// The shells clap_complete writes for.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Shell {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

impl From<Shell> for clap_complete::Shell {
    fn from(s: Shell) -> Self {
        match s {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
            Shell::Elvish => clap_complete::Shell::Elvish,
            Shell::Powershell => clap_complete::Shell::PowerShell,
        }
    }
}

#[derive(Args)]
#[command(after_help = "\
Install, for example:
  twlab completions bash > ~/.local/share/bash-completion/completions/twlab
  twlab completions zsh  > ~/.zfunc/_twlab        (with fpath+=(~/.zfunc) in ~/.zshrc)
  twlab completions fish > ~/.config/fish/completions/twlab.fish")]
pub(crate) struct CompletionsArgs {
    /// The shell to write the completion script for.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Args)]
#[command(after_help = "\
Read it with `twlab man | man -l -`, or install it:
  twlab man > ~/.local/share/man/man1/twlab.1
  twlab man why > ~/.local/share/man/man1/twlab-why.1")]
pub(crate) struct ManArgs {
    /// The command whose page to write (`why`, `ss`, ...); without it, the
    /// page of `twlab` itself, listing every command.
    command: Option<String>,
}

/// Writes the completion script for one shell to stdout.
pub(crate) fn completions(a: CompletionsArgs) -> anyhow::Result<Exit> {
    let mut cmd = super::Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(
        clap_complete::Shell::from(a.shell),
        &mut cmd,
        "twlab",
        &mut out,
    );
    out.flush()?;
    Ok(Exit::Done)
}

/// Writes one man page (roff) to stdout.
pub(crate) fn man(a: ManArgs) -> anyhow::Result<Exit> {
    let root = super::Cli::command();
    let cmd = match &a.command {
        None => root,
        Some(name) => {
            let names: Vec<String> = root
                .get_subcommands()
                .map(|c| c.get_name().to_string())
                .collect();
            let Some(sub) = root.find_subcommand(name) else {
                return Err(crate::Error::Usage(format!(
                    "man: no command {:?}; one of: {}",
                    crate::text::shorten(name, 200),
                    names.join(", ")
                ))
                .into());
            };
            // The page's title and NAME line read `twlab-why`, as git's
            // and cargo's pages do.
            sub.clone()
                .name(format!("twlab-{name}"))
                .bin_name(format!("twlab {name}"))
                .version(env!("CARGO_PKG_VERSION"))
        }
    };
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    out.flush()?;
    Ok(Exit::Done)
}

#[cfg(test)]
mod tests {
    use super::super::Cli;
    use clap::CommandFactory;

    /// clap's own consistency checks over every command and flag (no two
    /// flags with one name, defaults among the possible values, ...).
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every command is in the bash script, and bash accepts the script.
    #[test]
    fn bash_completions_name_every_command_and_parse() {
        let mut cmd = Cli::command();
        let mut script = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "twlab", &mut script);
        let script = String::from_utf8(script).unwrap();
        for sub in Cli::command().get_subcommands() {
            let case = format!("twlab,{})", sub.get_name());
            assert!(script.contains(&case), "no {case} in the bash completions");
        }
        let Ok(mut bash) = std::process::Command::new("bash")
            .args(["-n", "/dev/stdin"])
            .stdin(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("skipped: no bash to check the script's syntax");
            return;
        };
        use std::io::Write;
        bash.stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(bash.wait().unwrap().success(), "bash -n rejects the script");
    }

    /// Every command has a man page titled `twlab-NAME` that lists its
    /// own flags.
    #[test]
    fn every_command_has_a_man_page() {
        for sub in Cli::command().get_subcommands() {
            let name = sub.get_name().to_string();
            if name == "help" {
                continue;
            }
            let page = sub
                .clone()
                .name(format!("twlab-{name}"))
                .bin_name(format!("twlab {name}"));
            let mut roff = Vec::new();
            clap_mangen::Man::new(page).render(&mut roff).unwrap();
            let roff = String::from_utf8(roff).unwrap();
            assert!(
                roff.contains(&format!(".TH twlab-{name} 1")),
                "{name}: {roff}"
            );
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                if let Some(long) = arg.get_long() {
                    // roff escapes '-' as "\-".
                    let shown = format!("\\-\\-{}", long.replace('-', "\\-"));
                    assert!(
                        roff.contains(&shown),
                        "{name}: --{long} missing from its page"
                    );
                }
            }
        }
    }
}
