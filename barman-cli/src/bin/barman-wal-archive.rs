//! `barman-wal-archive`: not implemented yet.
fn main() -> std::process::ExitCode {
    eprintln!("barman-wal-archive: not implemented yet");
    std::process::ExitCode::FAILURE
}
