//! The `storagetapper` binary: everything lives in the library; this only hands over, and
//! picks the allocator: jemalloc (one arena, see .cargo/config.toml). Against glibc's malloc
//! it made the backup's many small row-value allocations cheap (sql backup of 1M rows here:
//! 2.27 s → 1.67 s) and keeps peak RSS flat as tables grow.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    storagetapper::cli::main()
}
