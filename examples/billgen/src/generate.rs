//! `billgen generate`: bill rows straight through SQL.
//!
//! The store is opened once through `carbon_engine` (which applies the migrations) to onboard
//! the platforms and providers; the rows are then made by the database itself, chunk by chunk,
//! with `INSERT … SELECT` over a row-number series (a recursive CTE on SQLite,
//! `generate_series` on PostgreSQL). Every value is a deterministic function of the row
//! number, so both backends get the same data set.
//!
//! The data set is for query benchmarks: each order has its `journal` row (the foreign key
//! asks for it) and people have balance rows, but there are no postings and no push outbox
//! rows, so `verify` reports violations on it.

use std::str::FromStr;
use std::time::Instant;

use anyhow::{Context, bail};
use carbon_engine::Engine;
use carbon_engine::ids::{AppId, EquityCid};
use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row};

use crate::Shape;

/// Options of `generate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    shape: Shape,
    /// Bill rows to make.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Rows per transaction.
    #[arg(long, default_value_t = 500_000)]
    chunk: u64,
}

/// The modulus of the row-number hash: the Mersenne prime 2^31 − 1, so every product of two
/// residues fits in 62 bits (SQLite turns an overflowing integer into a float).
const P: u64 = 2_147_483_647;

/// A pseudo-random value in `0..P` derived from the row number `n`; nonlinear (squares), so
/// neighbouring rows do not get neighbouring values.
fn hash(salt: u64) -> String {
    let x = format!("((n * 7919 + {}) % {P})", salt * 1_000_003);
    let a = format!("(({x} * {x}) % {P})");
    let b = format!("(({a} * 48271 + {salt}) % {P})");
    format!("(({b} * {b}) % {P})")
}

enum Conn {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl Conn {
    async fn open(url: &str) -> anyhow::Result<Conn> {
        if url.starts_with("sqlite:") {
            // Bulk loading: the data set can be made again, so durability is traded for speed.
            let options = SqliteConnectOptions::from_str(url)?
                .foreign_keys(true)
                .pragma("synchronous", "OFF")
                .pragma("cache_size", "-1048576")
                .pragma("temp_store", "MEMORY");
            Ok(Conn::Sqlite(SqliteConnection::connect_with(&options).await?))
        } else {
            let mut conn = PgConnection::connect(url).await?;
            sqlx::raw_sql("SET synchronous_commit = off; SET maintenance_work_mem = '512MB'")
                .execute(&mut conn)
                .await?;
            Ok(Conn::Postgres(conn))
        }
    }

    fn is_sqlite(&self) -> bool {
        matches!(self, Conn::Sqlite(_))
    }

    /// Runs `sql` (one statement) with the integer parameters `binds`.
    async fn exec(&mut self, sql: &str, binds: &[i64]) -> anyhow::Result<u64> {
        Ok(match self {
            Conn::Sqlite(conn) => {
                let mut query = sqlx::query(sql);
                for bind in binds {
                    query = query.bind(*bind);
                }
                query.execute(conn).await.with_context(|| sql.to_owned())?.rows_affected()
            }
            Conn::Postgres(conn) => {
                let mut query = sqlx::query(sql);
                for bind in binds {
                    query = query.bind(*bind);
                }
                query.execute(conn).await.with_context(|| sql.to_owned())?.rows_affected()
            }
        })
    }

    /// Rows of two text columns.
    async fn pairs(&mut self, sql: &str) -> anyhow::Result<Vec<(String, String)>> {
        Ok(match self {
            Conn::Sqlite(conn) => sqlx::query(sql)
                .fetch_all(conn)
                .await?
                .iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect::<Result<_, sqlx::Error>>()?,
            Conn::Postgres(conn) => sqlx::query(sql)
                .fetch_all(conn)
                .await?
                .iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect::<Result<_, sqlx::Error>>()?,
        })
    }

    async fn scalar(&mut self, sql: &str) -> anyhow::Result<i64> {
        Ok(match self {
            Conn::Sqlite(conn) => sqlx::query(sql).fetch_one(conn).await?.try_get(0)?,
            Conn::Postgres(conn) => sqlx::query(sql).fetch_one(conn).await?.try_get(0)?,
        })
    }

    /// The row-number series `n` from `$1` to `$2`, as the head of a `WITH`.
    fn series(&self) -> &'static str {
        match self {
            Conn::Sqlite(_) => "WITH RECURSIVE s(n) AS (SELECT $1 UNION ALL SELECT n + 1 FROM s WHERE n < $2)",
            Conn::Postgres(_) => "WITH s(n) AS (SELECT * FROM generate_series(CAST($1 AS BIGINT), CAST($2 AS BIGINT)))",
        }
    }
}

/// Fills the database named by `args`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let shape = &args.shape;
    if shape.platforms == 0 || shape.people == 0 || shape.providers == 0 || shape.days == 0 {
        bail!("--platforms, --people, --providers and --days must be at least 1");
    }
    if shape.big_platform_percent > 100 || args.chunk == 0 || args.rows > 1_000_000_000 {
        bail!("--big-platform-percent is at most 100, --chunk at least 1, --rows at most 10^9");
    }
    let started = Instant::now();
    let store = carbon_engine::store::open(&shape.database_url).await?;
    let engine = Engine::with_default_rules(store.clone());
    let mut platforms = Vec::new();
    for index in 0..shape.platforms {
        let app_id = AppId::new(Shape::app_id(index))?;
        platforms.push(engine.add_platform(&format!("billgen mall {index}"), Some(app_id.clone())).await?);
    }
    let app_ids: Vec<AppId> = platforms.iter().map(|platform| platform.app_id.clone()).collect();
    for index in 0..shape.providers {
        engine.add_provider(&EquityCid::new(format!("shop-{index}"))?, &format!("shop {index}"), &app_ids).await?;
    }
    drop(engine);
    drop(store);

    let mut conn = Conn::open(&shape.database_url).await?;
    let existing = conn.scalar("SELECT COUNT(*) FROM orders").await?;
    if existing != 0 {
        bail!("the database already holds {existing} orders; generate into a fresh database");
    }

    // Secondary indexes are built once after the load (a sort) instead of row by row; their
    // definitions are read from the database, so whatever the migrations made is rebuilt.
    let indexes = conn
        .pairs(if conn.is_sqlite() {
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'orders' AND sql IS NOT NULL"
        } else {
            "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = current_schema() \
             AND tablename = 'orders' AND indexname NOT IN \
             (SELECT conname FROM pg_constraint WHERE conrelid = 'orders'::regclass)"
        })
        .await?;
    for (name, _) in &indexes {
        conn.exec(&format!("DROP INDEX {name}"), &[]).await?;
    }

    let base_journal = conn.scalar("SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM journal").await?;
    let journal_sql = journal_insert(&conn, shape, args.rows, base_journal);
    let orders_sql = orders_insert(&conn, shape, args.rows, base_journal, &platforms);
    let load_started = Instant::now();
    let mut done = 0u64;
    while done < args.rows {
        let (lo, hi) = (done + 1, (done + args.chunk).min(args.rows));
        conn.exec("BEGIN", &[]).await?;
        conn.exec(&journal_sql, &[lo as i64, hi as i64]).await?;
        let inserted = conn.exec(&orders_sql, &[lo as i64, hi as i64]).await?;
        conn.exec("COMMIT", &[]).await?;
        anyhow::ensure!(inserted == hi - lo + 1, "inserted {inserted} orders, expected {}", hi - lo + 1);
        done = hi;
        let seconds = load_started.elapsed().as_secs_f64();
        println!("{done:>12} rows  {seconds:>7.1} s  {:>9.0} rows/s", done as f64 / seconds);
    }
    let load_seconds = load_started.elapsed().as_secs_f64();

    let index_started = Instant::now();
    for (name, sql) in &indexes {
        conn.exec(sql, &[]).await?;
        println!("index {name} rebuilt ({:.1} s so far)", index_started.elapsed().as_secs_f64());
    }
    let index_seconds = index_started.elapsed().as_secs_f64();

    // Balance rows for every person: A, B and reductions.
    let balances = format!(
        "{} INSERT INTO balances (account, asset, balance) \
         SELECT 'person:m-' || n, a.asset, (n * 7919 + a.asset * 104729) % 1000000 \
         FROM s CROSS JOIN (SELECT 1 AS asset UNION ALL SELECT 2 UNION ALL SELECT 3) a WHERE TRUE \
         ON CONFLICT (account, asset) DO NOTHING",
        conn.series()
    );
    conn.exec("BEGIN", &[]).await?;
    conn.exec(&balances, &[0, i64::from(shape.people) - 1]).await?;
    conn.exec("COMMIT", &[]).await?;

    let analyze_started = Instant::now();
    if conn.is_sqlite() {
        // Sampled statistics, as `PRAGMA optimize` gathers them; a full ANALYZE reads every index.
        conn.exec("PRAGMA analysis_limit = 1000", &[]).await?;
        conn.exec("ANALYZE", &[]).await?;
        conn.exec("PRAGMA wal_checkpoint(TRUNCATE)", &[]).await?;
    } else {
        // The identity of `journal` must continue after the ids given here.
        conn.exec("SELECT setval(pg_get_serial_sequence('journal', 'id'), (SELECT MAX(id) FROM journal))", &[]).await?;
        // Index-only scans need the visibility map, which autovacuum would build later.
        conn.exec("VACUUM (ANALYZE) orders", &[]).await?;
        conn.exec("VACUUM (ANALYZE) journal", &[]).await?;
        conn.exec("VACUUM (ANALYZE) balances", &[]).await?;
    }
    let analyze_seconds = analyze_started.elapsed().as_secs_f64();
    let total = started.elapsed().as_secs_f64();
    println!(
        "done: {} rows in {total:.1} s ({:.0} rows/s overall); load {load_seconds:.1} s ({:.0} rows/s), \
         indexes {index_seconds:.1} s, analyze {analyze_seconds:.1} s",
        args.rows,
        args.rows as f64 / total,
        args.rows as f64 / load_seconds,
    );
    Ok(())
}

fn journal_insert(conn: &Conn, shape: &Shape, rows: u64, base: i64) -> String {
    let overriding = if conn.is_sqlite() { "" } else { " OVERRIDING SYSTEM VALUE" };
    format!(
        "{} INSERT INTO journal (id, kind, created_at_ms){overriding} \
         SELECT {base} + n, 'purchase', {start} + n * {span} / {rows} FROM s",
        conn.series(),
        start = shape.start_ms(),
        span = i64::from(shape.days) * 86_400_000,
    )
}

fn orders_insert(
    conn: &Conn,
    shape: &Shape,
    rows: u64,
    base: i64,
    platforms: &[carbon_engine::directory::Platform],
) -> String {
    let mut platform_id = String::from("CASE pix");
    for (index, platform) in platforms.iter().enumerate() {
        platform_id.push_str(&format!(" WHEN {index} THEN {}", platform.id.0));
    }
    platform_id.push_str(" END");
    let pix = if platforms.len() == 1 {
        "0".to_owned()
    } else {
        format!(
            "CASE WHEN h1 % 100 < {} THEN 0 ELSE 1 + (h1 / 100) % {} END",
            shape.big_platform_percent,
            platforms.len() - 1
        )
    };
    let transaction_id = if conn.is_sqlite() { "printf('g%010d', n)" } else { "'g' || lpad(CAST(n AS TEXT), 10, '0')" };
    format!(
        "{series}, \
         g AS (SELECT n, {h1} AS h1, {h2} AS h2, {h3} AS h3, {h4} AS h4 FROM s), \
         r AS (SELECT n, h1, h2, h3, h4, {pix} AS pix, \
               (h2 % {people}) * (h3 % 1024) / 1024 AS person, \
               (h3 % {providers}) * (h4 % 1024) / 1024 AS provider, \
               {start} + n * {span} / {rows} AS settled FROM g) \
         INSERT INTO orders (platform_id, transaction_id, parent_transaction_id, sub_cid, master_cid, equity_cid, \
             point_a, point_b, converted_reduction, transaction_time_ms, settled_at_ms, transaction_type, \
             auto_convert, items, request_hash, rules_version, journal_id) \
         SELECT {platform_id}, {transaction_id}, NULL, 'c' || pix || '-' || person, 'm-' || person, \
             'shop-' || provider, 100 + (h2 / 7) % 19900, \
             CASE WHEN h4 % 10 < 2 THEN 100 + (h4 / 10) % 4900 ELSE 0 END, 0, \
             settled - (h1 / 7) % 600000, settled, \
             CASE WHEN h3 % 5 = 0 THEN 'transit' ELSE 'goods' END, 0, '[\"goods\"]', 'billgen', NULL, {base} + n \
         FROM r",
        series = conn.series(),
        h1 = hash(1),
        h2 = hash(2),
        h3 = hash(3),
        h4 = hash(4),
        people = shape.people,
        providers = shape.providers,
        start = shape.start_ms(),
        span = i64::from(shape.days) * 86_400_000,
    )
}
