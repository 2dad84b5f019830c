//! `kura-vault`: run a Kura storage vault. See `kura-vault --help`.

fn main() -> std::process::ExitCode {
    kura_vault::cli::main()
}
