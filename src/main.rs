//! The `ccrelay` binary: everything lives in the library; see `ccrelay::cli`.

// Each request builds and drops many small JSON nodes; mimalloc halves what glibc's malloc
// costs on that path (see ARCHITECTURE.md, "Choices between contenders").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ccrelay::cli::main()
}
