//! `barman-wal-restore`: not implemented yet.
fn main() -> std::process::ExitCode {
    eprintln!("barman-wal-restore: not implemented yet");
    std::process::ExitCode::FAILURE
}
