//! Benchmark harness: not implemented yet (see the benchmark issue).
fn main() -> std::process::ExitCode {
    eprintln!("barman-benches: not implemented yet");
    std::process::ExitCode::FAILURE
}
