//! The `ccrelay` binary: everything lives in the library; see `ccrelay::cli`.

fn main() -> std::process::ExitCode {
    ccrelay::cli::main()
}
