//! Connects as a physical replication client and prints what the server says about itself:
//! `cargo run -p barman-replication --example identify -- "host=... port=... user=..." [SLOT]`.
//! With SLOT, first creates that physical replication slot (reserving WAL) if it is missing.
//!
//! The README's demo uses it; it is also the quickest check that a conninfo works.

use barman_replication::{ConnConfig, Connection, SessionKind};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The error and its causes, one per line, as an operator reads them.
            let mut msg = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("error: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let conninfo = std::env::args().nth(1).unwrap_or_default();
    let mut config: ConnConfig = conninfo.parse()?;
    config.fallback_application_name = Some("barman-rs-identify".into());

    let mut repl = Connection::connect(&config, SessionKind::Physical).await?;
    if let Some(slot) = std::env::args().nth(2) {
        match repl.create_physical_slot(&slot, false, true).await {
            Ok(created) => println!("created slot:      {}", created.name),
            // 42710: the slot exists already, which is what we wanted.
            Err(e) if e.sqlstate() == Some("42710") => println!("slot exists:       {slot}"),
            Err(e) => return Err(e.into()),
        }
    }
    let sys = repl.identify_system().await?;
    println!("server:            {}", repl.target());
    println!("server_version:    {}", repl.parameter("server_version").unwrap_or("?"));
    println!("tls:               {}", repl.is_tls());
    println!("systemid:          {}", sys.system_id);
    println!("timeline:          {}", sys.timeline);
    println!("xlogpos:           {}", sys.xlogpos);
    println!("wal_segment_size:  {}", repl.show("wal_segment_size").await?);
    repl.close().await?;

    let mut sql = Connection::connect(&config, SessionKind::Normal).await?;
    let slots = sql
        .simple_query("SELECT slot_name, slot_type, active, restart_lsn FROM pg_replication_slots ORDER BY 1")
        .await?;
    println!("replication slots:");
    let rows = slots.first().map(|r| r.rows.len()).unwrap_or(0);
    if rows == 0 {
        println!("  (none)");
    }
    for i in 0..rows {
        let r = &slots[0];
        println!(
            "  {:<20} {:<9} active={:<3} restart_lsn={}",
            r.text(i, 0).unwrap_or(""),
            r.text(i, 1).unwrap_or(""),
            r.text(i, 2).unwrap_or(""),
            r.text(i, 3).unwrap_or("-")
        );
    }
    sql.close().await?;
    Ok(())
}
