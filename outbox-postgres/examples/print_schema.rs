//! Prints the SQL `PgStore::migrate` runs, for a DBA to review or apply by hand:
//! `cargo run -p outbox-postgres --example print_schema -- [schema] [table]`.

fn main() {
    let mut args = std::env::args().skip(1);
    let schema = args.next().unwrap_or_else(|| "public".to_owned());
    let table = args.next().unwrap_or_else(|| "outbox_events".to_owned());
    if let Err(err) = outbox_core::kit::validate_name("schema", &schema)
        .and(outbox_core::kit::validate_name("table", &table))
    {
        eprintln!("{err}");
        std::process::exit(2);
    }
    for statement in outbox_postgres::schema_sql(&schema, &table) {
        println!("{statement};\n");
    }
}
