//! The one SQL implementation of [`Store`](super::Store), expanded for each backend.
//!
//! The statements use `$N` placeholders and portable SQL (`ON CONFLICT`, `RETURNING`,
//! `CAST(… AS BIGINT)`), which SQLite and PostgreSQL both accept, so the two backends cannot
//! drift apart. Each backend provides `reader()` (a pool for reads) and `begin_write()` (a
//! transaction on its write path) and expands [`impl_sql_store!`] for its concrete types.

/// Rows per multi-row `INSERT`: far below SQLite's and PostgreSQL's limits on bound values.
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

/// Implements `Store` for `$store`, whose database is `$db`.
macro_rules! impl_sql_store {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Applies the net changes of `postings` (a credit's): debits of person and provider
            /// accounts are conditional; every other change is added to `deferred`, which the
            /// caller applies before commit.
            async fn apply_balance_changes(
                tx: &mut sqlx::Transaction<'static, $db>,
                postings: &$crate::ledger::PostingSet,
                deferred: &mut std::collections::BTreeMap<(String, $crate::ledger::Asset), i64>,
            ) -> Result<(), $crate::store::ApplyError> {
                for (account, asset, amount) in postings.net_changes() {
                    let key = account.key();
                    if amount < 0 && account.must_not_overdraw() {
                        let updated = sqlx::query(
                            "UPDATE balances SET balance = balance + $3 \
                             WHERE account = $1 AND asset = $2 AND balance + $3 >= 0",
                        )
                        .bind(&key)
                        .bind(asset.code())
                        .bind(amount)
                        .execute(&mut **tx)
                        .await
                        .map_err($crate::store::StoreError::from)?;
                        if updated.rows_affected() == 0 {
                            return Err($crate::store::ApplyError::Overdraft { account: key, asset });
                        }
                    } else {
                        *deferred.entry((key, asset)).or_insert(0) += amount;
                    }
                }
                Ok(())
            }

            /// Records the postings of many journal entries in as few statements as the
            /// databases' limits on bound values allow.
            async fn insert_postings(
                tx: &mut sqlx::Transaction<'static, $db>,
                entries: &[(i64, &$crate::ledger::PostingSet)],
            ) -> Result<(), $crate::store::StoreError> {
                let rows: Vec<(i64, &$crate::ledger::Posting)> = entries
                    .iter()
                    .flat_map(|(journal_id, postings)| postings.postings().iter().map(move |posting| (*journal_id, posting)))
                    .collect();
                for chunk in rows.chunks($crate::store::sql::ROWS_PER_STATEMENT) {
                    let mut insert =
                        sqlx::QueryBuilder::<$db>::new("INSERT INTO postings (journal_id, account, asset, amount) ");
                    insert.push_values(chunk, |mut row, (journal_id, posting)| {
                        row.push_bind(*journal_id)
                            .push_bind(posting.account.key())
                            .push_bind(posting.asset.code())
                            .push_bind(posting.amount);
                    });
                    insert.build().persistent(Self::CACHES_MULTI_ROW_STATEMENTS).execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// Queues the bill pushes of settled orders: the order row is the bill, so an
            /// outbox row only points at it.
            async fn insert_bill_pushes(
                tx: &mut sqlx::Transaction<'static, $db>,
                bills: &[(i64, i64, i64)],
            ) -> Result<(), $crate::store::StoreError> {
                for chunk in bills.chunks($crate::store::sql::ROWS_PER_STATEMENT) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO push_outbox (platform_id, kind, order_id, created_at_ms) ",
                    );
                    insert.push_values(chunk, |mut row, (platform_id, order_row_id, at_ms)| {
                        row.push_bind(*platform_id)
                            .push_bind($crate::push::PushKind::Bills.code())
                            .push_bind(*order_row_id)
                            .push_bind(*at_ms);
                    });
                    insert.build().persistent(Self::CACHES_MULTI_ROW_STATEMENTS).execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// Records request ids; `true` for each recorded, `false` for a replay (also for a
            /// second use of one id within `writes`).
            async fn insert_request_ids(
                tx: &mut sqlx::Transaction<'static, $db>,
                writes: &[$crate::store::RequestIdWrite],
            ) -> Result<Vec<bool>, $crate::store::StoreError> {
                use sqlx::Row as _;
                let mut first_uses = std::collections::HashMap::new();
                for (index, write) in writes.iter().enumerate() {
                    first_uses.entry(write.request_id.as_str()).or_insert(index);
                }
                let unique: Vec<&$crate::store::RequestIdWrite> =
                    writes.iter().enumerate().filter(|(index, write)| first_uses[write.request_id.as_str()] == *index).map(|(_, write)| write).collect();
                let mut recorded = std::collections::HashSet::new();
                for chunk in unique.chunks($crate::store::sql::ROWS_PER_STATEMENT) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new("INSERT INTO request_ids (request_id, expires_at_ms) ");
                    insert.push_values(chunk, |mut row, write| {
                        row.push_bind(write.request_id.clone()).push_bind(write.expires_at_ms);
                    });
                    // The reuse of an expired record; every write of a batch shares its clock.
                    insert
                        .push(" ON CONFLICT (request_id) DO UPDATE SET expires_at_ms = excluded.expires_at_ms \
                               WHERE request_ids.expires_at_ms < ")
                        .push_bind(chunk.iter().map(|write| write.now_ms).min().unwrap_or(0))
                        .push(" RETURNING request_id");
                    for row in insert.build().persistent(Self::CACHES_MULTI_ROW_STATEMENTS).fetch_all(&mut **tx).await? {
                        recorded.insert(row.try_get::<String, _>(0)?);
                    }
                }
                Ok(writes
                    .iter()
                    .enumerate()
                    .map(|(index, write)| first_uses[write.request_id.as_str()] == index && recorded.contains(&write.request_id))
                    .collect())
            }

            /// Reads the balance rows of `accounts` (all assets); on PostgreSQL also locks them,
            /// in key order, so that concurrent batches of several instances queue instead of
            /// deadlocking.
            async fn read_balances(
                tx: &mut sqlx::Transaction<'static, $db>,
                accounts: &[String],
            ) -> Result<std::collections::HashMap<$crate::store::batch_plan::BalanceKey, i64>, $crate::store::StoreError> {
                use sqlx::Row as _;
                let mut balances = std::collections::HashMap::new();
                for chunk in accounts.chunks($crate::store::sql::ROWS_PER_STATEMENT) {
                    let mut select =
                        sqlx::QueryBuilder::<$db>::new("SELECT account, asset, balance FROM balances WHERE account IN (");
                    let mut separated = select.separated(", ");
                    for account in chunk {
                        separated.push_bind(account.clone());
                    }
                    select.push(") ORDER BY account, asset");
                    if Self::LOCKS_ROWS_READ {
                        select.push(" FOR UPDATE");
                    }
                    for row in select.build().persistent(Self::CACHES_MULTI_ROW_STATEMENTS).fetch_all(&mut **tx).await? {
                        let code: i64 = row.try_get("asset")?;
                        let asset = $crate::ledger::Asset::from_code(code)
                            .ok_or_else(|| $crate::store::StoreError::Corrupt(format!("unknown asset code {code}")))?;
                        balances.insert((row.try_get("account")?, asset), row.try_get("balance")?);
                    }
                }
                Ok(balances)
            }

            /// Reads the order rows of `keys` (sorted); on PostgreSQL also locks them, so that a
            /// refund's bound on its parent holds across instances.
            async fn read_orders(
                tx: &mut sqlx::Transaction<'static, $db>,
                keys: &[$crate::store::batch_plan::OrderKey],
            ) -> Result<
                std::collections::HashMap<$crate::store::batch_plan::OrderKey, $crate::store::batch_plan::StoredOrder>,
                $crate::store::StoreError,
            > {
                use sqlx::Row as _;
                let mut orders = std::collections::HashMap::new();
                for same_platform in keys.chunk_by(|a, b| a.0 == b.0) {
                    for chunk in same_platform.chunks($crate::store::sql::ROWS_PER_STATEMENT) {
                        let mut select = sqlx::QueryBuilder::<$db>::new(
                            "SELECT id, transaction_id, sub_cid, equity_cid, point_a, point_b, refunded_a, refunded_b \
                             FROM orders WHERE platform_id = ",
                        );
                        select.push_bind(chunk[0].0).push(" AND transaction_id IN (");
                        let mut separated = select.separated(", ");
                        for (_, transaction_id) in chunk {
                            separated.push_bind(transaction_id.clone());
                        }
                        select.push(") ORDER BY transaction_id");
                        if Self::LOCKS_ROWS_READ {
                            select.push(" FOR UPDATE");
                        }
                        for row in select.build().persistent(Self::CACHES_MULTI_ROW_STATEMENTS).fetch_all(&mut **tx).await? {
                            let stored = $crate::store::batch_plan::StoredOrder {
                                row_id: row.try_get("id")?,
                                sub_cid: row.try_get("sub_cid")?,
                                equity_cid: row.try_get("equity_cid")?,
                                point_a: row.try_get("point_a")?,
                                point_b: row.try_get("point_b")?,
                                refunded_a: row.try_get("refunded_a")?,
                                refunded_b: row.try_get("refunded_b")?,
                            };
                            orders.insert((chunk[0].0, row.try_get("transaction_id")?), stored);
                        }
                    }
                }
                Ok(orders)
            }

            /// Writes the settlements `plan` accepted: journal entries, order rows (the bills),
            /// postings, bill pushes, balance changes and refunds' bounds on stored parents, in
            /// a fixed number of multi-row statements. `false` when a concurrent writer (another
            /// instance) stored one of the orders first: the caller must not commit.
            async fn write_plan(
                tx: &mut sqlx::Transaction<'static, $db>,
                settlements: &[$crate::store::SettlementWrite],
                plan: &$crate::store::batch_plan::BatchPlan,
            ) -> Result<bool, $crate::store::StoreError> {
                use sqlx::Row as _;
                if plan.accepted.is_empty() {
                    return Ok(true);
                }
                let journal_ids = Self::reserve_journal_ids(tx, plan.accepted.len()).await?;
                let accepted: Vec<(i64, &$crate::store::batch_plan::Accepted, &$crate::store::SettlementWrite)> = plan
                    .accepted
                    .iter()
                    .zip(journal_ids)
                    .map(|(accepted, journal_id)| (journal_id, accepted, &settlements[accepted.index]))
                    .collect();
                for chunk in accepted.chunks($crate::store::sql::ROWS_PER_STATEMENT) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new("INSERT INTO journal (id, kind, created_at_ms)");
                    insert.push(Self::EXPLICIT_IDS);
                    insert.push_values(chunk, |mut row, (journal_id, _, write)| {
                        let is_refund = write.order.kind() == $crate::order::OrderKind::Refund;
                        row.push_bind(*journal_id)
                            .push_bind(if is_refund { "refund" } else { "purchase" })
                            .push_bind(write.settled_at_ms);
                    });
                    insert.build().persistent(Self::CACHES_MULTI_ROW_STATEMENTS).execute(&mut **tx).await?;
                }
                let mut row_ids = std::collections::HashMap::new();
                for chunk in accepted.chunks($crate::store::sql::ROWS_PER_STATEMENT) {
                    let mut items = Vec::with_capacity(chunk.len());
                    for (_, _, write) in chunk {
                        items.push(
                            serde_json::to_string(&write.order.items)
                                .map_err(|err| $crate::store::StoreError::Corrupt(err.to_string()))?,
                        );
                    }
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO orders (platform_id, transaction_id, parent_transaction_id, sub_cid, master_cid, \
                         equity_cid, point_a, point_b, refunded_a, refunded_b, converted_reduction, \
                         transaction_time_ms, settled_at_ms, transaction_type, auto_convert, items, request_hash, \
                         rules_version, journal_id) ",
                    );
                    insert.push_values(chunk.iter().zip(items), |mut row, ((journal_id, accepted, write), items)| {
                        let order = &write.order;
                        row.push_bind(write.platform_id.0)
                            .push_bind(order.transaction_id.as_str().to_owned())
                            .push_bind(order.parent_transaction_id.as_ref().map(|id| id.as_str().to_owned()))
                            .push_bind(order.cid.as_str().to_owned())
                            .push_bind(write.master_cid.as_str().to_owned())
                            .push_bind(order.equity_cid.as_str().to_owned())
                            .push_bind(order.point_a.0)
                            .push_bind(order.point_b.0)
                            .push_bind(accepted.refunded.0)
                            .push_bind(accepted.refunded.1)
                            .push_bind(write.converted_reduction.0)
                            .push_bind(order.transaction_time_ms)
                            .push_bind(write.settled_at_ms)
                            .push_bind(order.transaction_type.clone())
                            .push_bind(i64::from(order.auto_convert))
                            .push_bind(items)
                            .push_bind(write.request_hash.clone())
                            .push_bind(write.rules_version.clone())
                            .push_bind(*journal_id);
                    });
                    insert.push(" ON CONFLICT (platform_id, transaction_id) DO NOTHING RETURNING id, platform_id, transaction_id");
                    for row in insert.build().persistent(Self::CACHES_MULTI_ROW_STATEMENTS).fetch_all(&mut **tx).await? {
                        let key: (i64, String) = (row.try_get("platform_id")?, row.try_get("transaction_id")?);
                        row_ids.insert(key, row.try_get::<i64, _>("id")?);
                    }
                }
                if row_ids.len() < accepted.len() {
                    return Ok(false);
                }
                let journal_entries: Vec<(i64, &$crate::ledger::PostingSet)> =
                    accepted.iter().map(|(journal_id, _, write)| (*journal_id, &write.postings)).collect();
                Self::insert_postings(tx, &journal_entries).await?;
                let bills: Vec<(i64, i64, i64)> = accepted
                    .iter()
                    .map(|(_, _, write)| {
                        let key = (write.platform_id.0, write.order.transaction_id.as_str().to_owned());
                        (write.platform_id.0, row_ids[&key], write.settled_at_ms)
                    })
                    .collect();
                Self::insert_bill_pushes(tx, &bills).await?;
                Self::add_to_balances(tx, &plan.balance_changes).await?;
                for (row_id, (point_a, point_b)) in &plan.parent_refunds {
                    sqlx::query("UPDATE orders SET refunded_a = refunded_a + $2, refunded_b = refunded_b + $3 WHERE id = $1")
                        .bind(*row_id)
                        .bind(*point_a)
                        .bind(*point_b)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(true)
            }

            /// Adds `changes` to their balance rows, creating missing rows, in key order.
            async fn add_to_balances(
                tx: &mut sqlx::Transaction<'static, $db>,
                changes: &std::collections::BTreeMap<$crate::store::batch_plan::BalanceKey, i64>,
            ) -> Result<(), $crate::store::StoreError> {
                let rows: Vec<(&$crate::store::batch_plan::BalanceKey, &i64)> = changes.iter().collect();
                for chunk in rows.chunks($crate::store::sql::ROWS_PER_STATEMENT) {
                    let mut upsert = sqlx::QueryBuilder::<$db>::new("INSERT INTO balances (account, asset, balance) ");
                    upsert.push_values(chunk, |mut row, ((account, asset), change)| {
                        row.push_bind(account.clone()).push_bind(asset.code()).push_bind(**change);
                    });
                    upsert.push(
                        " ON CONFLICT (account, asset) DO UPDATE SET balance = balances.balance + excluded.balance",
                    );
                    upsert.build().persistent(Self::CACHES_MULTI_ROW_STATEMENTS).execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// Writes `batch` in one transaction: request ids, then the settlements — read the
            /// rows they touch, decide each in memory (`batch_plan`), write the accepted ones.
            async fn write_batch_now(
                &self,
                batch: &$crate::store::WriteBatch,
            ) -> Result<$crate::store::BatchOutcome, $crate::store::StoreError> {
                let mut tx = self.begin_batch().await?;
                let mut outcome = $crate::store::BatchOutcome::default();
                outcome.request_ids = Self::insert_request_ids(&mut tx, &batch.request_ids).await?;
                if !batch.settlements.is_empty() {
                    let (accounts, order_keys) = $crate::store::batch_plan::keys_read(&batch.settlements);
                    let balances = Self::read_balances(&mut tx, &accounts).await?;
                    let orders = Self::read_orders(&mut tx, &order_keys).await?;
                    let plan = $crate::store::batch_plan::plan_batch(&batch.settlements, &balances, &orders);
                    if !Self::write_plan(&mut tx, &batch.settlements, &plan).await? {
                        tx.rollback().await?;
                        // Alone, the settlement lost the race for its order id; otherwise each
                        // write is retried alone to learn which one did.
                        if batch.settlements.len() + batch.request_ids.len() == 1 {
                            outcome.settlements.push(Err($crate::store::ApplyError::DuplicateOrder));
                            return Ok(outcome);
                        }
                        return Err($crate::store::StoreError::Contended);
                    }
                    outcome.settlements = plan.outcomes;
                }
                tx.commit().await?;
                Ok(outcome)
            }

            /// Starts the group-commit writer when `options` ask for it.
            fn grouped(self, options: $crate::store::StoreOptions) -> Self {
                match options.group_commit {
                    Some(config) => {
                        let writer = self.clone();
                        Self { group: Some($crate::store::group_commit::GroupCommit::start(writer, config)), ..self }
                    }
                    None => self,
                }
            }

            /// Runs one write statement in its own write transaction.
            async fn write_one<'q>(
                &self,
                statement: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
            ) -> Result<<$db as sqlx::Database>::QueryResult, $crate::store::StoreError> {
                let mut tx = self.begin_write().await?;
                let done = statement.execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(done)
            }

            async fn insert_journal(
                tx: &mut sqlx::Transaction<'static, $db>,
                kind: &str,
                now_ms: i64,
            ) -> Result<i64, $crate::store::StoreError> {
                use sqlx::Row as _;
                let row = sqlx::query("INSERT INTO journal (kind, created_at_ms) VALUES ($1, $2) RETURNING id")
                    .bind(kind)
                    .bind(now_ms)
                    .fetch_one(&mut **tx)
                    .await?;
                Ok(row.try_get(0)?)
            }

            fn platform_from_row(
                row: &<$db as sqlx::Database>::Row,
            ) -> Result<$crate::directory::Platform, $crate::store::StoreError> {
                use sqlx::Row as _;
                let app_id: String = row.try_get("app_id")?;
                Ok($crate::directory::Platform {
                    id: $crate::ids::PlatformId(row.try_get("id")?),
                    app_id: $crate::store::sql::stored_id(app_id, $crate::ids::AppId::new)?,
                    name: row.try_get("name")?,
                })
            }

            fn bill_from_row(
                row: &<$db as sqlx::Database>::Row,
            ) -> Result<$crate::bill::Bill, $crate::store::StoreError> {
                use sqlx::Row as _;
                Ok($crate::bill::Bill {
                    cid: $crate::store::sql::stored_id(row.try_get("sub_cid")?, $crate::ids::SubCid::new)?,
                    equity_cid: $crate::store::sql::stored_id(row.try_get("equity_cid")?, $crate::ids::EquityCid::new)?,
                    transaction_id: row.try_get("transaction_id")?,
                    parent_transaction_id: row.try_get("parent_transaction_id")?,
                    point_a: $crate::amount::Points(row.try_get("point_a")?),
                    point_b: $crate::amount::Points(row.try_get("point_b")?),
                    converted_reduction: $crate::amount::Grams(row.try_get("converted_reduction")?),
                    transaction_time_ms: row.try_get("transaction_time_ms")?,
                    settled_at_ms: row.try_get("settled_at_ms")?,
                    transaction_type: row.try_get("transaction_type")?,
                })
            }

            fn plugin_version_from_row(
                row: &<$db as sqlx::Database>::Row,
            ) -> Result<$crate::store::PluginVersion, $crate::store::StoreError> {
                use sqlx::Row as _;
                let limit = |name: &str| -> Result<Option<u64>, $crate::store::StoreError> {
                    Ok(row.try_get::<Option<i64>, _>(name)?.map(|value| value.max(0) as u64))
                };
                Ok($crate::store::PluginVersion {
                    platform_id: $crate::ids::PlatformId(row.try_get("platform_id")?),
                    version: row.try_get("version")?,
                    sha256: row.try_get("sha256")?,
                    size_bytes: row.try_get("size_bytes")?,
                    config: row.try_get("config")?,
                    limits: $crate::store::StoredLimits {
                        fuel: limit("fuel")?,
                        memory_bytes: limit("memory_bytes")?,
                        deadline_ms: limit("deadline_ms")?,
                    },
                    uploaded_at_ms: row.try_get("uploaded_at_ms")?,
                })
            }

            fn push_bill_filters(
                builder: &mut sqlx::QueryBuilder<'_, $db>,
                platform_id: $crate::ids::PlatformId,
                query: &$crate::bill::BillQuery,
            ) {
                builder.push(" FROM orders WHERE platform_id = ").push_bind(platform_id.0);
                builder.push(" AND transaction_time_ms >= ").push_bind(query.begin_ms);
                builder.push(" AND transaction_time_ms <= ").push_bind(query.end_ms);
                if let Some(cid) = &query.cid {
                    builder.push(" AND sub_cid = ").push_bind(cid.as_str().to_owned());
                }
                if let Some(equity_cid) = &query.equity_cid {
                    builder.push(" AND equity_cid = ").push_bind(equity_cid.as_str().to_owned());
                }
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::group_commit::BatchWriter for $store {
            async fn write_batch(
                &self,
                batch: &$crate::store::WriteBatch,
            ) -> Result<$crate::store::BatchOutcome, $crate::store::StoreError> {
                self.write_batch_now(batch).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            async fn insert_platform(
                &self,
                app_id: &$crate::ids::AppId,
                name: &str,
                now_ms: i64,
            ) -> Result<Option<$crate::directory::Platform>, $crate::store::StoreError> {
                let mut tx = self.begin_write().await?;
                let row = sqlx::query(
                    "INSERT INTO platforms (app_id, name, created_at_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (app_id) DO NOTHING RETURNING id, app_id, name",
                )
                .bind(app_id.as_str())
                .bind(name)
                .bind(now_ms)
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                row.as_ref().map(Self::platform_from_row).transpose()
            }

            async fn platform_by_app_id(
                &self,
                app_id: &$crate::ids::AppId,
            ) -> Result<Option<$crate::directory::Platform>, $crate::store::StoreError> {
                let row = sqlx::query("SELECT id, app_id, name FROM platforms WHERE app_id = $1")
                    .bind(app_id.as_str())
                    .fetch_optional(self.reader())
                    .await?;
                row.as_ref().map(Self::platform_from_row).transpose()
            }

            async fn platforms(&self) -> Result<Vec<$crate::directory::Platform>, $crate::store::StoreError> {
                let rows = sqlx::query("SELECT id, app_id, name FROM platforms ORDER BY id")
                    .fetch_all(self.reader())
                    .await?;
                rows.iter().map(Self::platform_from_row).collect()
            }

            async fn upsert_provider(
                &self,
                equity_cid: &$crate::ids::EquityCid,
                name: &str,
                now_ms: i64,
            ) -> Result<(), $crate::store::StoreError> {
                self.write_one(sqlx::query(
                    "INSERT INTO providers (equity_cid, name, created_at_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (equity_cid) DO UPDATE SET name = excluded.name",
                )
                .bind(equity_cid.as_str())
                .bind(name)
                .bind(now_ms)).await?;
                Ok(())
            }

            async fn link_provider(
                &self,
                platform_id: $crate::ids::PlatformId,
                equity_cid: &$crate::ids::EquityCid,
            ) -> Result<(), $crate::store::StoreError> {
                self.write_one(sqlx::query(
                    "INSERT INTO provider_links (platform_id, equity_cid) VALUES ($1, $2) \
                     ON CONFLICT (platform_id, equity_cid) DO NOTHING",
                )
                .bind(platform_id.0)
                .bind(equity_cid.as_str())).await?;
                Ok(())
            }

            async fn is_provider_linked(
                &self,
                platform_id: $crate::ids::PlatformId,
                equity_cid: &$crate::ids::EquityCid,
            ) -> Result<bool, $crate::store::StoreError> {
                let row = sqlx::query("SELECT 1 FROM provider_links WHERE platform_id = $1 AND equity_cid = $2")
                    .bind(platform_id.0)
                    .bind(equity_cid.as_str())
                    .fetch_optional(self.reader())
                    .await?;
                Ok(row.is_some())
            }

            async fn put_cid_mapping(
                &self,
                platform_id: $crate::ids::PlatformId,
                sub_cid: &$crate::ids::SubCid,
                master_cid: &$crate::ids::MasterCid,
            ) -> Result<$crate::directory::MappingOutcome, $crate::store::MappingError> {
                use sqlx::Row as _;
                let mut tx = self.begin_write().await.map_err($crate::store::StoreError::from)?;
                let inserted = sqlx::query(
                    "INSERT INTO cid_mappings (platform_id, sub_cid, master_cid) VALUES ($1, $2, $3) \
                     ON CONFLICT (platform_id, sub_cid) DO NOTHING",
                )
                .bind(platform_id.0)
                .bind(sub_cid.as_str())
                .bind(master_cid.as_str())
                .execute(&mut *tx)
                .await
                .map_err($crate::store::StoreError::from)?;
                if inserted.rows_affected() == 1 {
                    tx.commit().await.map_err($crate::store::StoreError::from)?;
                    return Ok($crate::directory::MappingOutcome::Inserted);
                }
                let row = sqlx::query("SELECT master_cid FROM cid_mappings WHERE platform_id = $1 AND sub_cid = $2")
                    .bind(platform_id.0)
                    .bind(sub_cid.as_str())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err($crate::store::StoreError::from)?;
                let existing: String = row.try_get(0).map_err($crate::store::StoreError::from)?;
                if existing == master_cid.as_str() {
                    Ok($crate::directory::MappingOutcome::Unchanged)
                } else {
                    let existing = $crate::store::sql::stored_id(existing, $crate::ids::MasterCid::new)?;
                    Err($crate::store::MappingError::Conflict(existing))
                }
            }

            async fn resolve_cid(
                &self,
                platform_id: $crate::ids::PlatformId,
                sub_cid: &$crate::ids::SubCid,
            ) -> Result<Option<$crate::ids::MasterCid>, $crate::store::StoreError> {
                use sqlx::Row as _;
                let row = sqlx::query("SELECT master_cid FROM cid_mappings WHERE platform_id = $1 AND sub_cid = $2")
                    .bind(platform_id.0)
                    .bind(sub_cid.as_str())
                    .fetch_optional(self.reader())
                    .await?;
                row.map(|row| $crate::store::sql::stored_id(row.try_get(0)?, $crate::ids::MasterCid::new))
                    .transpose()
            }

            async fn set_authorization(
                &self,
                platform_id: $crate::ids::PlatformId,
                sub_cid: &$crate::ids::SubCid,
                master_cid: &$crate::ids::MasterCid,
                active: bool,
                at_ms: i64,
            ) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.begin_write().await?;
                // Each statement changes the row only from the other state, so of two concurrent
                // writers exactly one sees a change (and queues the push); a repeat changes nothing.
                let changed = if active {
                    let reactivated = sqlx::query(
                        "UPDATE authorizations SET master_cid = $3, active = 1, authorized_at_ms = $4 \
                         WHERE platform_id = $1 AND sub_cid = $2 AND active = 0",
                    )
                    .bind(platform_id.0)
                    .bind(sub_cid.as_str())
                    .bind(master_cid.as_str())
                    .bind(at_ms)
                    .execute(&mut *tx)
                    .await?;
                    let inserted = if reactivated.rows_affected() == 0 {
                        sqlx::query(
                            "INSERT INTO authorizations (platform_id, sub_cid, master_cid, active, authorized_at_ms) \
                             VALUES ($1, $2, $3, 1, $4) ON CONFLICT (platform_id, sub_cid) DO NOTHING",
                        )
                        .bind(platform_id.0)
                        .bind(sub_cid.as_str())
                        .bind(master_cid.as_str())
                        .bind(at_ms)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                    } else {
                        0
                    };
                    if reactivated.rows_affected() == 0 && inserted == 0 {
                        // Already authorized: refresh the record, push nothing.
                        sqlx::query(
                            "UPDATE authorizations SET master_cid = $3, authorized_at_ms = $4 \
                             WHERE platform_id = $1 AND sub_cid = $2",
                        )
                        .bind(platform_id.0)
                        .bind(sub_cid.as_str())
                        .bind(master_cid.as_str())
                        .bind(at_ms)
                        .execute(&mut *tx)
                        .await?;
                        false
                    } else {
                        true
                    }
                } else {
                    sqlx::query(
                        "UPDATE authorizations SET active = 0, cancelled_at_ms = $4 \
                         WHERE platform_id = $1 AND sub_cid = $2 AND master_cid = $3 AND active = 1",
                    )
                    .bind(platform_id.0)
                    .bind(sub_cid.as_str())
                    .bind(master_cid.as_str())
                    .bind(at_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                        == 1
                };
                if changed {
                    sqlx::query(
                        "INSERT INTO push_outbox (platform_id, kind, sub_cid, auth_type, created_at_ms) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(platform_id.0)
                    .bind($crate::push::PushKind::Authorization.code())
                    .bind(sub_cid.as_str())
                    .bind(if active { 1_i64 } else { -1_i64 })
                    .bind(at_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn authorization(
                &self,
                platform_id: $crate::ids::PlatformId,
                sub_cid: &$crate::ids::SubCid,
            ) -> Result<Option<$crate::directory::Authorization>, $crate::store::StoreError> {
                use sqlx::Row as _;
                let row = sqlx::query(
                    "SELECT master_cid, active, authorized_at_ms, cancelled_at_ms FROM authorizations \
                     WHERE platform_id = $1 AND sub_cid = $2",
                )
                .bind(platform_id.0)
                .bind(sub_cid.as_str())
                .fetch_optional(self.reader())
                .await?;
                let Some(row) = row else { return Ok(None) };
                Ok(Some($crate::directory::Authorization {
                    platform_id,
                    sub_cid: sub_cid.clone(),
                    master_cid: $crate::store::sql::stored_id(row.try_get(0)?, $crate::ids::MasterCid::new)?,
                    active: row.try_get::<i64, _>(1)? == 1,
                    authorized_at_ms: row.try_get(2)?,
                    cancelled_at_ms: row.try_get(3)?,
                }))
            }

            async fn settle_context(
                &self,
                platform_id: $crate::ids::PlatformId,
                sub_cid: &$crate::ids::SubCid,
                equity_cid: &$crate::ids::EquityCid,
                transaction_id: &$crate::ids::OrderId,
            ) -> Result<$crate::store::SettleContext, $crate::store::StoreError> {
                use sqlx::Row as _;
                use $crate::amount::{Grams, Points};
                let balance = |asset: $crate::ledger::Asset| {
                    format!(
                        "(SELECT b.balance FROM balances b WHERE b.account = $5 || a.master_cid AND b.asset = {})",
                        asset.code()
                    )
                };
                let sql = format!(
                    "SELECT a.master_cid, a.active, a.authorized_at_ms, a.cancelled_at_ms, \
                     (SELECT COUNT(*) FROM provider_links l WHERE l.platform_id = $1 AND l.equity_cid = $3), \
                     (SELECT o.request_hash FROM orders o WHERE o.platform_id = $1 AND o.transaction_id = $4), \
                     {}, {}, {} FROM authorizations a WHERE a.platform_id = $1 AND a.sub_cid = $2",
                    balance($crate::ledger::Asset::PointA),
                    balance($crate::ledger::Asset::PointB),
                    balance($crate::ledger::Asset::Reduction),
                );
                let row = sqlx::query(&sql)
                    .bind(platform_id.0)
                    .bind(sub_cid.as_str())
                    .bind(equity_cid.as_str())
                    .bind(transaction_id.as_str())
                    .bind($crate::ledger::PERSON_PREFIX)
                    .fetch_optional(self.reader())
                    .await?;
                let Some(row) = row else {
                    return Ok($crate::store::SettleContext {
                        authorization: None,
                        provider_linked: false,
                        settled_hash: None,
                        balances: $crate::rules::Balances::default(),
                    });
                };
                let amount = |index: usize| -> Result<i64, $crate::store::StoreError> {
                    Ok(row.try_get::<Option<i64>, _>(index)?.unwrap_or(0))
                };
                Ok($crate::store::SettleContext {
                    authorization: Some($crate::directory::Authorization {
                        platform_id,
                        sub_cid: sub_cid.clone(),
                        master_cid: $crate::store::sql::stored_id(row.try_get(0)?, $crate::ids::MasterCid::new)?,
                        active: row.try_get::<i64, _>(1)? == 1,
                        authorized_at_ms: row.try_get(2)?,
                        cancelled_at_ms: row.try_get(3)?,
                    }),
                    provider_linked: row.try_get::<i64, _>(4)? > 0,
                    settled_hash: row.try_get(5)?,
                    balances: $crate::rules::Balances {
                        point_a: Points(amount(6)?),
                        point_b: Points(amount(7)?),
                        reduction: Grams(amount(8)?),
                    },
                })
            }

            async fn balances(
                &self,
                master_cid: &$crate::ids::MasterCid,
            ) -> Result<$crate::rules::Balances, $crate::store::StoreError> {
                use sqlx::Row as _;
                let account = $crate::ledger::AccountId::Person(master_cid.clone()).key();
                let rows = sqlx::query("SELECT asset, balance FROM balances WHERE account = $1")
                    .bind(account)
                    .fetch_all(self.reader())
                    .await?;
                let mut balances = $crate::rules::Balances::default();
                for row in rows {
                    let amount: i64 = row.try_get(1)?;
                    match $crate::ledger::Asset::from_code(row.try_get(0)?) {
                        Some($crate::ledger::Asset::PointA) => balances.point_a = $crate::amount::Points(amount),
                        Some($crate::ledger::Asset::PointB) => balances.point_b = $crate::amount::Points(amount),
                        Some($crate::ledger::Asset::Reduction) => balances.reduction = $crate::amount::Grams(amount),
                        None => return Err($crate::store::StoreError::Corrupt("unknown asset code in balances".into())),
                    }
                }
                Ok(balances)
            }

            async fn account_balance(
                &self,
                account: &$crate::ledger::AccountId,
                asset: $crate::ledger::Asset,
            ) -> Result<i64, $crate::store::StoreError> {
                use sqlx::Row as _;
                let row = sqlx::query("SELECT balance FROM balances WHERE account = $1 AND asset = $2")
                    .bind(account.key())
                    .bind(asset.code())
                    .fetch_optional(self.reader())
                    .await?;
                Ok(match row {
                    Some(row) => row.try_get(0)?,
                    None => 0,
                })
            }

            async fn scenes(&self, master_cid: &$crate::ids::MasterCid) -> Result<Vec<String>, $crate::store::StoreError> {
                use sqlx::Row as _;
                let rows = sqlx::query(
                    "SELECT DISTINCT scene FROM credits WHERE master_cid = $1 AND asset = $2 AND scene IS NOT NULL \
                     ORDER BY scene",
                )
                .bind(master_cid.as_str())
                .bind($crate::ledger::Asset::Reduction.code())
                .fetch_all(self.reader())
                .await?;
                rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
            }

            async fn apply_credit(
                &self,
                credit: &$crate::credit::Credit,
                now_ms: i64,
            ) -> Result<$crate::credit::CreditOutcome, $crate::store::CreditError> {
                use sqlx::Row as _;
                let hash = credit.canonical_hash();
                let mut tx = self.begin_write().await.map_err($crate::store::StoreError::from)?;
                let journal_id = Self::insert_journal(&mut tx, "credit", now_ms).await?;
                let inserted = sqlx::query(
                    "INSERT INTO credits (external_id, master_cid, asset, amount, scene, methodology, request_hash, \
                     journal_id, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (external_id) DO NOTHING",
                )
                .bind(&credit.external_id)
                .bind(credit.master_cid.as_str())
                .bind(credit.asset.code())
                .bind(credit.amount)
                .bind(credit.scene.as_deref())
                .bind(credit.methodology.as_deref())
                .bind(&hash)
                .bind(journal_id)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err($crate::store::StoreError::from)?;
                if inserted.rows_affected() == 0 {
                    let row = sqlx::query("SELECT request_hash FROM credits WHERE external_id = $1")
                        .bind(&credit.external_id)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err($crate::store::StoreError::from)?;
                    let existing: String = row.try_get(0).map_err($crate::store::StoreError::from)?;
                    // Dropping the transaction rolls back the journal entry made above.
                    return if existing == hash {
                        Ok($crate::credit::CreditOutcome::AlreadyCredited)
                    } else {
                        Err($crate::store::CreditError::Conflict)
                    };
                }
                let mut deferred = std::collections::BTreeMap::new();
                let postings = credit.postings();
                Self::insert_postings(&mut tx, &[(journal_id, &postings)]).await?;
                Self::apply_balance_changes(&mut tx, &postings, &mut deferred).await.map_err(|err| match err {
                    $crate::store::ApplyError::Store(err) => $crate::store::CreditError::Store(err),
                    other => $crate::store::CreditError::Store($crate::store::StoreError::Corrupt(other.to_string())),
                })?;
                Self::add_to_balances(&mut tx, &deferred).await?;
                tx.commit().await.map_err($crate::store::StoreError::from)?;
                Ok($crate::credit::CreditOutcome::Credited)
            }

            async fn order_hash(
                &self,
                platform_id: $crate::ids::PlatformId,
                transaction_id: &$crate::ids::OrderId,
            ) -> Result<Option<String>, $crate::store::StoreError> {
                use sqlx::Row as _;
                let row = sqlx::query("SELECT request_hash FROM orders WHERE platform_id = $1 AND transaction_id = $2")
                    .bind(platform_id.0)
                    .bind(transaction_id.as_str())
                    .fetch_optional(self.reader())
                    .await?;
                row.map(|row| Ok(row.try_get(0)?)).transpose()
            }

            async fn apply_settlement(
                &self,
                write: $crate::store::SettlementWrite,
            ) -> Result<(), $crate::store::ApplyError> {
                if let Some(group) = &self.group {
                    return group.settle(write).await;
                }
                let batch = $crate::store::WriteBatch { settlements: vec![write], request_ids: Vec::new() };
                let outcome = self.write_batch_now(&batch).await?;
                outcome.settlements.into_iter().next().unwrap_or_else(|| {
                    Err($crate::store::StoreError::Corrupt("a batch of one answered nothing".into()).into())
                })
            }

            async fn bills(
                &self,
                platform_id: $crate::ids::PlatformId,
                query: &$crate::bill::BillQuery,
            ) -> Result<$crate::bill::BillPage, $crate::store::StoreError> {
                use sqlx::Row as _;
                // The page: ids from the index alone (the filters and the order are its
                // columns), then only the page's rows are read, so skipping `OFFSET` rows
                // costs index entries, not table rows.
                let mut page = sqlx::QueryBuilder::<$db>::new(
                    "SELECT sub_cid, equity_cid, transaction_id, parent_transaction_id, point_a, point_b, \
                     converted_reduction, transaction_time_ms, settled_at_ms, transaction_type \
                     FROM orders WHERE id IN (SELECT id",
                );
                Self::push_bill_filters(&mut page, platform_id, query);
                page.push(" ORDER BY transaction_time_ms DESC, id DESC LIMIT ")
                    .push_bind(i64::from(query.page_size))
                    .push(" OFFSET ")
                    .push_bind(query.offset() as i64)
                    .push(") ORDER BY transaction_time_ms DESC, id DESC");
                let rows = page.build().fetch_all(self.reader()).await?;
                let bills = rows.iter().map(Self::bill_from_row).collect::<Result<Vec<_>, _>>()?;
                // A page that is not full shows where the rows end, so it needs no count.
                if bills.len() < query.page_size as usize && (!bills.is_empty() || query.offset() == 0) {
                    return Ok($crate::bill::BillPage {
                        total: query.offset() + bills.len() as u64,
                        total_capped: false,
                        bills,
                    });
                }
                // Otherwise count, but only up to the window: one more row says "more".
                let cap = $crate::bill::MAX_RESULT_WINDOW;
                let mut count = sqlx::QueryBuilder::<$db>::new("SELECT COUNT(*) FROM (SELECT 1 AS one");
                Self::push_bill_filters(&mut count, platform_id, query);
                count.push(" LIMIT ").push_bind((cap + 1) as i64).push(") AS capped");
                let counted = count.build().fetch_one(self.reader()).await?.try_get::<i64, _>(0)? as u64;
                Ok($crate::bill::BillPage { total: counted.min(cap), total_capped: counted > cap, bills })
            }

            async fn verify(&self) -> Result<$crate::invariants::InvariantReport, $crate::store::StoreError> {
                use sqlx::Row as _;
                use $crate::invariants::Violation;
                let reader = self.reader();
                let mut report = $crate::invariants::InvariantReport::default();
                let count = |table: &'static str| async move {
                    let sql = match table {
                        "balances" => "SELECT COUNT(*) FROM balances",
                        "journal" => "SELECT COUNT(*) FROM journal",
                        _ => "SELECT COUNT(*) FROM orders",
                    };
                    let row = sqlx::query(sql).fetch_one(reader).await?;
                    Ok::<u64, $crate::store::StoreError>(row.try_get::<i64, _>(0)? as u64)
                };
                report.balances_checked = count("balances").await?;
                report.journals_checked = count("journal").await?;
                report.orders_checked = count("orders").await?;

                for row in sqlx::query(
                    "SELECT asset, CAST(SUM(balance) AS BIGINT) FROM balances GROUP BY asset HAVING SUM(balance) <> 0",
                )
                .fetch_all(reader)
                .await?
                {
                    report.violations.push(Violation::AssetNotZero { asset: row.try_get(0)?, sum: row.try_get(1)? });
                }
                for row in sqlx::query(
                    "SELECT account, asset, balance FROM balances WHERE balance < 0 \
                     AND (account LIKE 'person:%' OR account LIKE 'provider:%')",
                )
                .fetch_all(reader)
                .await?
                {
                    report.violations.push(Violation::Overdrawn {
                        account: row.try_get(0)?,
                        asset: row.try_get(1)?,
                        balance: row.try_get(2)?,
                    });
                }
                for row in sqlx::query(
                    "SELECT journal_id, asset, CAST(SUM(amount) AS BIGINT) FROM postings \
                     GROUP BY journal_id, asset HAVING SUM(amount) <> 0",
                )
                .fetch_all(reader)
                .await?
                {
                    report.violations.push(Violation::JournalUnbalanced {
                        journal_id: row.try_get(0)?,
                        asset: row.try_get(1)?,
                        sum: row.try_get(2)?,
                    });
                }
                for row in sqlx::query(
                    "WITH totals AS (SELECT account, asset, SUM(amount) AS total FROM postings GROUP BY account, asset) \
                     SELECT b.account, b.asset, b.balance, CAST(COALESCE(t.total, 0) AS BIGINT) \
                     FROM balances b LEFT JOIN totals t ON t.account = b.account AND t.asset = b.asset \
                     WHERE b.balance <> COALESCE(t.total, 0) \
                     UNION ALL \
                     SELECT t.account, t.asset, 0, CAST(t.total AS BIGINT) \
                     FROM totals t LEFT JOIN balances b ON b.account = t.account AND b.asset = t.asset \
                     WHERE b.account IS NULL AND t.total <> 0",
                )
                .fetch_all(reader)
                .await?
                {
                    report.violations.push(Violation::BalanceMismatch {
                        account: row.try_get(0)?,
                        asset: row.try_get(1)?,
                        balance: row.try_get(2)?,
                        postings: row.try_get(3)?,
                    });
                }
                for row in sqlx::query(
                    "SELECT o.platform_id, o.transaction_id, o.point_a, o.point_b, o.refunded_a, o.refunded_b, \
                     CAST(COALESCE(SUM(-r.point_a), 0) AS BIGINT), CAST(COALESCE(SUM(-r.point_b), 0) AS BIGINT) \
                     FROM orders o LEFT JOIN orders r ON r.platform_id = o.platform_id \
                     AND r.parent_transaction_id = o.transaction_id AND r.point_a + r.point_b < 0 \
                     WHERE o.point_a + o.point_b > 0 \
                     GROUP BY o.id, o.platform_id, o.transaction_id, o.point_a, o.point_b, o.refunded_a, o.refunded_b \
                     HAVING COALESCE(SUM(-r.point_a), 0) > o.point_a OR COALESCE(SUM(-r.point_b), 0) > o.point_b \
                     OR COALESCE(SUM(-r.point_a), 0) <> o.refunded_a OR COALESCE(SUM(-r.point_b), 0) <> o.refunded_b",
                )
                .fetch_all(reader)
                .await?
                {
                    let platform_id: i64 = row.try_get(0)?;
                    let transaction_id: String = row.try_get(1)?;
                    for (asset, purchased, counter, refunded) in
                        [(1, row.try_get(2)?, row.try_get(4)?, row.try_get(6)?), (2, row.try_get(3)?, row.try_get(5)?, row.try_get(7)?)]
                    {
                        let (purchased, counter, refunded): (i64, i64, i64) = (purchased, counter, refunded);
                        if refunded > purchased || refunded != counter {
                            report.violations.push(Violation::RefundsExceedParent {
                                platform_id,
                                transaction_id: transaction_id.clone(),
                                asset,
                                purchased,
                                refunded,
                                counter,
                            });
                        }
                    }
                }
                for row in sqlx::query(
                    "SELECT o.platform_id, o.transaction_id FROM orders o \
                     WHERE NOT EXISTS (SELECT 1 FROM push_outbox p WHERE p.order_id = o.id AND p.kind = $1) \
                     ORDER BY o.id",
                )
                .bind($crate::push::PushKind::Bills.code())
                .fetch_all(reader)
                .await?
                {
                    report.violations.push(Violation::BillNotQueued {
                        platform_id: row.try_get(0)?,
                        transaction_id: row.try_get(1)?,
                    });
                }
                Ok(report)
            }

            async fn insert_server_key(
                &self,
                key: &$crate::store::ServerKey,
                now_ms: i64,
            ) -> Result<(), $crate::store::StoreError> {
                self.write_one(sqlx::query("INSERT INTO server_keys (private_key_pem, public_key_pem, created_at_ms) VALUES ($1, $2, $3)")
                    .bind(&key.private_key_pem)
                    .bind(&key.public_key_pem)
                    .bind(now_ms)).await?;
                Ok(())
            }

            async fn current_server_key(&self) -> Result<Option<$crate::store::ServerKey>, $crate::store::StoreError> {
                use sqlx::Row as _;
                let row = sqlx::query("SELECT private_key_pem, public_key_pem FROM server_keys ORDER BY id DESC LIMIT 1")
                    .fetch_optional(self.reader())
                    .await?;
                row.map(|row| {
                    Ok($crate::store::ServerKey { private_key_pem: row.try_get(0)?, public_key_pem: row.try_get(1)? })
                })
                .transpose()
            }

            async fn insert_access_token(
                &self,
                token_sha256: &str,
                platform_id: $crate::ids::PlatformId,
                expires_at_ms: i64,
            ) -> Result<(), $crate::store::StoreError> {
                self.write_one(sqlx::query("INSERT INTO access_tokens (token_sha256, platform_id, expires_at_ms) VALUES ($1, $2, $3)")
                    .bind(token_sha256)
                    .bind(platform_id.0)
                    .bind(expires_at_ms)).await?;
                Ok(())
            }

            async fn access_token(
                &self,
                token_sha256: &str,
            ) -> Result<Option<($crate::directory::Platform, i64)>, $crate::store::StoreError> {
                use sqlx::Row as _;
                let row = sqlx::query(
                    "SELECT p.id, p.app_id, p.name, t.expires_at_ms FROM access_tokens t \
                     JOIN platforms p ON p.id = t.platform_id WHERE t.token_sha256 = $1",
                )
                .bind(token_sha256)
                .fetch_optional(self.reader())
                .await?;
                row.map(|row| Ok((Self::platform_from_row(&row)?, row.try_get("expires_at_ms")?))).transpose()
            }

            async fn record_request_id(
                &self,
                request_id: &str,
                now_ms: i64,
                expires_at_ms: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                if let Some(group) = &self.group {
                    let write = $crate::store::RequestIdWrite { request_id: request_id.to_owned(), now_ms, expires_at_ms };
                    return group.record_request_id(write).await;
                }
                let recorded = self.write_one(sqlx::query(
                    "INSERT INTO request_ids (request_id, expires_at_ms) VALUES ($1, $3) \
                     ON CONFLICT (request_id) DO UPDATE SET expires_at_ms = excluded.expires_at_ms \
                     WHERE request_ids.expires_at_ms < $2",
                )
                .bind(request_id)
                .bind(now_ms)
                .bind(expires_at_ms)).await?;
                Ok(recorded.rows_affected() == 1)
            }

            async fn purge_expired(
                &self,
                requests_before_ms: i64,
                tokens_before_ms: i64,
            ) -> Result<u64, $crate::store::StoreError> {
                let mut tx = self.begin_write().await?;
                let tokens = sqlx::query("DELETE FROM access_tokens WHERE expires_at_ms < $1")
                    .bind(tokens_before_ms)
                    .execute(&mut *tx)
                    .await?;
                let requests = sqlx::query("DELETE FROM request_ids WHERE expires_at_ms < $1")
                    .bind(requests_before_ms)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(tokens.rows_affected() + requests.rows_affected())
            }

            async fn upsert_license(
                &self,
                license: &$crate::store::License,
                now_ms: i64,
            ) -> Result<(), $crate::store::StoreError> {
                self.write_one(sqlx::query(
                    "INSERT INTO licenses (name, download_url, created_at_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET download_url = excluded.download_url",
                )
                .bind(&license.name)
                .bind(&license.download_url)
                .bind(now_ms)).await?;
                Ok(())
            }

            async fn licenses(&self) -> Result<Vec<$crate::store::License>, $crate::store::StoreError> {
                use sqlx::Row as _;
                let rows = sqlx::query("SELECT name, download_url FROM licenses ORDER BY id").fetch_all(self.reader()).await?;
                rows.iter()
                    .map(|row| Ok($crate::store::License { name: row.try_get(0)?, download_url: row.try_get(1)? }))
                    .collect()
            }

            async fn insert_plugin_version(
                &self,
                upload: &$crate::store::PluginUpload<'_>,
                now_ms: i64,
            ) -> Result<i64, $crate::store::StoreError> {
                use sqlx::Row as _;
                let as_i64 = |value: Option<u64>| value.map(|value| value.min(i64::MAX as u64) as i64);
                let mut tx = self.begin_write().await?;
                let row = sqlx::query(
                    "INSERT INTO plugin_versions (platform_id, version, sha256, wasm, config, fuel, memory_bytes, \
                     deadline_ms, uploaded_at_ms) \
                     SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5, $6, $7, $8 \
                     FROM plugin_versions WHERE platform_id = $1 RETURNING version",
                )
                .bind(upload.platform_id.0)
                .bind(upload.sha256)
                .bind(upload.wasm)
                .bind(upload.config)
                .bind(as_i64(upload.limits.fuel))
                .bind(as_i64(upload.limits.memory_bytes))
                .bind(as_i64(upload.limits.deadline_ms))
                .bind(now_ms)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(row.try_get(0)?)
            }

            async fn plugin_versions(
                &self,
                platform_id: $crate::ids::PlatformId,
            ) -> Result<Vec<$crate::store::PluginVersion>, $crate::store::StoreError> {
                let rows = sqlx::query(
                    "SELECT platform_id, version, sha256, CAST(LENGTH(wasm) AS BIGINT) AS size_bytes, config, fuel, \
                     memory_bytes, deadline_ms, uploaded_at_ms FROM plugin_versions WHERE platform_id = $1 \
                     ORDER BY version",
                )
                .bind(platform_id.0)
                .fetch_all(self.reader())
                .await?;
                rows.iter().map(Self::plugin_version_from_row).collect()
            }

            async fn plugin_wasm(&self, sha256: &str) -> Result<Option<Vec<u8>>, $crate::store::StoreError> {
                use sqlx::Row as _;
                let row = sqlx::query("SELECT wasm FROM plugin_versions WHERE sha256 = $1 LIMIT 1")
                    .bind(sha256)
                    .fetch_optional(self.reader())
                    .await?;
                row.map(|row| Ok(row.try_get(0)?)).transpose()
            }

            async fn set_plugin_config(
                &self,
                platform_id: $crate::ids::PlatformId,
                version: i64,
                config: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let updated = self.write_one(sqlx::query("UPDATE plugin_versions SET config = $3 WHERE platform_id = $1 AND version = $2")
                    .bind(platform_id.0)
                    .bind(version)
                    .bind(config)).await?;
                Ok(updated.rows_affected() == 1)
            }

            async fn activate_plugin(
                &self,
                platform_id: $crate::ids::PlatformId,
                version: Option<i64>,
                now_ms: i64,
            ) -> Result<(), $crate::store::StoreError> {
                self.write_one(sqlx::query("INSERT INTO plugin_activations (platform_id, version, activated_at_ms) VALUES ($1, $2, $3)")
                    .bind(platform_id.0)
                    .bind(version)
                    .bind(now_ms)).await?;
                Ok(())
            }

            async fn plugin_activations(
                &self,
                platform_id: $crate::ids::PlatformId,
            ) -> Result<Vec<Option<i64>>, $crate::store::StoreError> {
                use sqlx::Row as _;
                let rows = sqlx::query("SELECT version FROM plugin_activations WHERE platform_id = $1 ORDER BY id DESC")
                    .bind(platform_id.0)
                    .fetch_all(self.reader())
                    .await?;
                rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
            }

            async fn active_plugins(&self) -> Result<Vec<$crate::store::PluginVersion>, $crate::store::StoreError> {
                let rows = sqlx::query(
                    "SELECT v.platform_id, v.version, v.sha256, CAST(LENGTH(v.wasm) AS BIGINT) AS size_bytes, v.config, \
                     v.fuel, v.memory_bytes, v.deadline_ms, v.uploaded_at_ms \
                     FROM plugin_activations a \
                     JOIN plugin_versions v ON v.platform_id = a.platform_id AND v.version = a.version \
                     WHERE a.id = (SELECT MAX(b.id) FROM plugin_activations b WHERE b.platform_id = a.platform_id) \
                     ORDER BY v.platform_id",
                )
                .fetch_all(self.reader())
                .await?;
                rows.iter().map(Self::plugin_version_from_row).collect()
            }

            async fn plugin_artifact(
                &self,
                sha256: &str,
                engine_hash: &str,
            ) -> Result<Option<(Vec<u8>, String)>, $crate::store::StoreError> {
                use sqlx::Row as _;
                let row = sqlx::query(
                    "SELECT artifact, artifact_sha256 FROM plugin_artifacts WHERE sha256 = $1 AND engine_hash = $2",
                )
                .bind(sha256)
                .bind(engine_hash)
                .fetch_optional(self.reader())
                .await?;
                row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).transpose()
            }

            async fn put_plugin_artifact(
                &self,
                sha256: &str,
                engine_hash: &str,
                artifact: &[u8],
                artifact_sha256: &str,
                now_ms: i64,
            ) -> Result<(), $crate::store::StoreError> {
                self.write_one(sqlx::query(
                    "INSERT INTO plugin_artifacts (sha256, engine_hash, artifact, artifact_sha256, created_at_ms) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sha256, engine_hash) DO NOTHING",
                )
                .bind(sha256)
                .bind(engine_hash)
                .bind(artifact)
                .bind(artifact_sha256)
                .bind(now_ms)).await?;
                Ok(())
            }

            async fn put_subscription(
                &self,
                platform_id: $crate::ids::PlatformId,
                kind: i64,
                notify_url: &str,
                now_ms: i64,
            ) -> Result<(), $crate::store::StoreError> {
                self.write_one(sqlx::query(
                    "INSERT INTO subscriptions (platform_id, kind, notify_url, updated_at_ms) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (platform_id, kind) DO UPDATE \
                     SET notify_url = excluded.notify_url, updated_at_ms = excluded.updated_at_ms",
                )
                .bind(platform_id.0)
                .bind(kind)
                .bind(notify_url)
                .bind(now_ms)).await?;
                Ok(())
            }

            async fn subscription(
                &self,
                platform_id: $crate::ids::PlatformId,
                kind: i64,
            ) -> Result<Option<String>, $crate::store::StoreError> {
                use sqlx::Row as _;
                let row = sqlx::query("SELECT notify_url FROM subscriptions WHERE platform_id = $1 AND kind = $2")
                    .bind(platform_id.0)
                    .bind(kind)
                    .fetch_optional(self.reader())
                    .await?;
                row.map(|row| Ok(row.try_get(0)?)).transpose()
            }

            async fn claim_push_streams(
                &self,
                claimant: &str,
                now_ms: i64,
                lease_ms: i64,
                bill_interval_ms: i64,
                limit: u32,
            ) -> Result<Vec<$crate::push::PushStream>, $crate::store::StoreError> {
                use sqlx::Row as _;
                // The head of a stream is its oldest pending batch; later batches wait for it.
                let sql = format!(
                    "SELECT s.platform_id, s.kind, s.notify_url, s.sealed_at_ms, \
                     (SELECT p.app_id FROM platforms p WHERE p.id = s.platform_id) AS app_id \
                     FROM subscriptions s \
                     WHERE (s.lease_until_ms IS NULL OR s.lease_until_ms <= $1) AND ( \
                       (SELECT b.next_attempt_at_ms FROM push_batches b \
                        WHERE b.platform_id = s.platform_id AND b.kind = s.kind AND b.status = 0 \
                        ORDER BY b.id LIMIT 1) <= $1 \
                       OR (NOT EXISTS (SELECT 1 FROM push_batches b \
                                       WHERE b.platform_id = s.platform_id AND b.kind = s.kind AND b.status = 0) \
                           AND EXISTS (SELECT 1 FROM push_outbox o \
                                       WHERE o.platform_id = s.platform_id AND o.kind = s.kind AND o.batch_id IS NULL) \
                           AND (s.sealed_at_ms IS NULL \
                                OR s.sealed_at_ms + CASE WHEN s.kind = $2 THEN $3 ELSE 0 END <= $1))) \
                     ORDER BY COALESCE(s.lease_until_ms, 0), s.platform_id, s.kind \
                     LIMIT $4{}",
                    Self::CLAIM_LOCK
                );
                let mut tx = self.begin_write().await?;
                let rows = sqlx::query(&sql)
                    .bind(now_ms)
                    .bind($crate::push::PushKind::Bills.code())
                    .bind(bill_interval_ms)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *tx)
                    .await?;
                let mut streams = Vec::with_capacity(rows.len());
                for row in rows {
                    let kind_code: i64 = row.try_get("kind")?;
                    let kind = $crate::push::PushKind::from_code(kind_code).ok_or_else(|| {
                        $crate::store::StoreError::Corrupt(format!("subscription of unknown type {kind_code}"))
                    })?;
                    let sealed_at_ms: Option<i64> = row.try_get("sealed_at_ms")?;
                    let interval = if kind == $crate::push::PushKind::Bills { bill_interval_ms } else { 0 };
                    let stream = $crate::push::PushStream {
                        platform_id: $crate::ids::PlatformId(row.try_get("platform_id")?),
                        app_id: row.try_get("app_id")?,
                        kind,
                        notify_url: row.try_get("notify_url")?,
                        seal_due: sealed_at_ms.is_none_or(|sealed| sealed.saturating_add(interval) <= now_ms),
                        claim: format!("{claimant}#{}", uuid::Uuid::new_v4().simple()),
                    };
                    // The lease is checked again on the row as it is now, so a claim stays
                    // exclusive even where the row lock above is not taken.
                    let claimed = sqlx::query(
                        "UPDATE subscriptions SET claimed_by = $3, lease_until_ms = $4 \
                         WHERE platform_id = $1 AND kind = $2 AND (lease_until_ms IS NULL OR lease_until_ms <= $5)",
                    )
                    .bind(stream.platform_id.0)
                    .bind(kind_code)
                    .bind(&stream.claim)
                    .bind(now_ms.saturating_add(lease_ms))
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                    if claimed.rows_affected() == 1 {
                        streams.push(stream);
                    }
                }
                tx.commit().await?;
                Ok(streams)
            }

            async fn renew_push_stream(
                &self,
                stream: &$crate::push::PushStream,
                now_ms: i64,
                lease_ms: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                let renewed = self.write_one(sqlx::query(
                    "UPDATE subscriptions SET lease_until_ms = $4 \
                     WHERE platform_id = $1 AND kind = $2 AND claimed_by = $3",
                )
                .bind(stream.platform_id.0)
                .bind(stream.kind.code())
                .bind(&stream.claim)
                .bind(now_ms.saturating_add(lease_ms))).await?;
                Ok(renewed.rows_affected() == 1)
            }

            async fn release_push_stream(
                &self,
                stream: &$crate::push::PushStream,
                now_ms: i64,
            ) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.begin_write().await?;
                // The release time orders the next claims: the stream served longest ago first.
                sqlx::query(
                    "UPDATE subscriptions SET claimed_by = NULL, lease_until_ms = $4 \
                     WHERE platform_id = $1 AND kind = $2 AND claimed_by = $3",
                )
                .bind(stream.platform_id.0)
                .bind(stream.kind.code())
                .bind(&stream.claim)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn seal_push_batches(
                &self,
                stream: &$crate::push::PushStream,
                now_ms: i64,
                max_batches: u32,
            ) -> Result<Option<u32>, $crate::store::StoreError> {
                use sqlx::Row as _;
                let mut tx = self.begin_write().await?;
                // Locks the stream row: only the claim holder seals, one transaction at a time.
                let held = sqlx::query(
                    "UPDATE subscriptions SET sealed_at_ms = $4 \
                     WHERE platform_id = $1 AND kind = $2 AND claimed_by = $3",
                )
                .bind(stream.platform_id.0)
                .bind(stream.kind.code())
                .bind(&stream.claim)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                if held.rows_affected() == 0 {
                    return Ok(None);
                }
                let per_batch = i64::from(stream.kind.rows_per_batch());
                let waiting: i64 = sqlx::query(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM push_outbox \
                     WHERE platform_id = $1 AND kind = $2 AND batch_id IS NULL LIMIT $3) waiting",
                )
                .bind(stream.platform_id.0)
                .bind(stream.kind.code())
                .bind(per_batch * i64::from(max_batches))
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
                let batches = (waiting.max(0) as u64).div_ceil(per_batch as u64) as u32;
                let mut made = 0;
                while made < batches {
                    let batch_id: i64 = sqlx::query(
                        "INSERT INTO push_batches (platform_id, kind, status, row_count, attempts, \
                         next_attempt_at_ms, created_at_ms) VALUES ($1, $2, 0, 0, 0, $3, $3) RETURNING id",
                    )
                    .bind(stream.platform_id.0)
                    .bind(stream.kind.code())
                    .bind(now_ms)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
                    let taken = sqlx::query(
                        "UPDATE push_outbox SET batch_id = $1 WHERE id IN (SELECT id FROM push_outbox \
                         WHERE platform_id = $2 AND kind = $3 AND batch_id IS NULL ORDER BY id LIMIT $4)",
                    )
                    .bind(batch_id)
                    .bind(stream.platform_id.0)
                    .bind(stream.kind.code())
                    .bind(per_batch)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected() as i64;
                    if taken == 0 {
                        sqlx::query("DELETE FROM push_batches WHERE id = $1").bind(batch_id).execute(&mut *tx).await?;
                        break;
                    }
                    sqlx::query("UPDATE push_batches SET row_count = $2 WHERE id = $1")
                        .bind(batch_id)
                        .bind(taken)
                        .execute(&mut *tx)
                        .await?;
                    made += 1;
                    if taken < per_batch {
                        break;
                    }
                }
                tx.commit().await?;
                Ok(Some(made))
            }

            async fn head_push_batch(
                &self,
                platform_id: $crate::ids::PlatformId,
                kind: $crate::push::PushKind,
            ) -> Result<Option<$crate::push::PushBatch>, $crate::store::StoreError> {
                use sqlx::Row as _;
                let row = sqlx::query(
                    "SELECT id, attempts, next_attempt_at_ms FROM push_batches \
                     WHERE platform_id = $1 AND kind = $2 AND status = 0 ORDER BY id LIMIT 1",
                )
                .bind(platform_id.0)
                .bind(kind.code())
                .fetch_optional(self.reader())
                .await?;
                row.map(|row| {
                    Ok($crate::push::PushBatch {
                        id: row.try_get(0)?,
                        attempts: row.try_get::<i64, _>(1)?.clamp(0, i64::from(u32::MAX)) as u32,
                        next_attempt_at_ms: row.try_get(2)?,
                    })
                })
                .transpose()
            }

            async fn push_payload(
                &self,
                batch_id: i64,
            ) -> Result<$crate::push::PushPayload, $crate::store::StoreError> {
                use sqlx::Row as _;
                let kind: Option<i64> = sqlx::query("SELECT kind FROM push_batches WHERE id = $1")
                    .bind(batch_id)
                    .fetch_optional(self.reader())
                    .await?
                    .map(|row| row.try_get(0))
                    .transpose()?;
                let kind = kind.ok_or_else(|| $crate::store::StoreError::Corrupt(format!("no push batch {batch_id}")))?;
                match $crate::push::PushKind::from_code(kind) {
                    Some($crate::push::PushKind::Bills) => {
                        let rows = sqlx::query(
                            "SELECT o.sub_cid, o.equity_cid, o.transaction_id, o.parent_transaction_id, o.point_a, \
                             o.point_b, o.converted_reduction, o.transaction_time_ms, o.settled_at_ms, \
                             o.transaction_type FROM push_outbox p JOIN orders o ON o.id = p.order_id \
                             WHERE p.batch_id = $1 ORDER BY p.id",
                        )
                        .bind(batch_id)
                        .fetch_all(self.reader())
                        .await?;
                        Ok($crate::push::PushPayload::Bills(
                            rows.iter().map(Self::bill_from_row).collect::<Result<_, _>>()?,
                        ))
                    }
                    Some($crate::push::PushKind::Authorization) => {
                        let row = sqlx::query("SELECT sub_cid, auth_type FROM push_outbox WHERE batch_id = $1")
                            .bind(batch_id)
                            .fetch_one(self.reader())
                            .await?;
                        Ok($crate::push::PushPayload::Authorization {
                            cid: $crate::store::sql::stored_id(row.try_get(0)?, $crate::ids::SubCid::new)?,
                            change: row.try_get(1)?,
                        })
                    }
                    None => Err($crate::store::StoreError::Corrupt(format!("push batch {batch_id} of type {kind}"))),
                }
            }

            async fn record_push_delivered(&self, batch_id: i64, now_ms: i64) -> Result<bool, $crate::store::StoreError> {
                let updated = self.write_one(sqlx::query(
                    "UPDATE push_batches SET status = 1, delivered_at_ms = $2 WHERE id = $1 AND status = 0",
                )
                .bind(batch_id)
                .bind(now_ms)).await?;
                Ok(updated.rows_affected() == 1)
            }

            async fn record_push_failed(
                &self,
                batch_id: i64,
                attempts_before: u32,
                error: &str,
                retry_at_ms: i64,
            ) -> Result<$crate::push::AttemptOutcome, $crate::store::StoreError> {
                let attempts = attempts_before.saturating_add(1);
                let dead = attempts >= $crate::push::MAX_ATTEMPTS;
                let error: String = error.chars().take(1000).collect();
                let updated = self.write_one(sqlx::query(
                    "UPDATE push_batches SET attempts = $3, last_error = $4, status = $5, next_attempt_at_ms = $6 \
                     WHERE id = $1 AND status = 0 AND attempts = $2",
                )
                .bind(batch_id)
                .bind(i64::from(attempts_before))
                .bind(i64::from(attempts))
                .bind(&error)
                .bind(if dead { $crate::push::BatchStatus::Dead.code() } else { $crate::push::BatchStatus::Pending.code() })
                .bind(retry_at_ms)).await?;
                Ok(if updated.rows_affected() == 0 {
                    $crate::push::AttemptOutcome::Stale
                } else if dead {
                    $crate::push::AttemptOutcome::DeadLettered
                } else {
                    $crate::push::AttemptOutcome::RetryAt(retry_at_ms)
                })
            }

            async fn push_batches(
                &self,
                filter: $crate::push::BatchFilter,
                limit: u32,
            ) -> Result<Vec<$crate::push::PushBatchInfo>, $crate::store::StoreError> {
                use sqlx::Row as _;
                let rows = sqlx::query(
                    "SELECT b.id, b.platform_id, p.app_id, b.kind, b.status, b.row_count, b.attempts, \
                     b.created_at_ms, b.next_attempt_at_ms, b.delivered_at_ms, b.last_error \
                     FROM push_batches b JOIN platforms p ON p.id = b.platform_id \
                     WHERE $1 = 0 OR b.status = $1 ORDER BY b.id DESC LIMIT $2",
                )
                .bind(match filter {
                    $crate::push::BatchFilter::All => 0,
                    $crate::push::BatchFilter::Dead => $crate::push::BatchStatus::Dead.code(),
                })
                .bind(i64::from(limit))
                .fetch_all(self.reader())
                .await?;
                rows.iter()
                    .map(|row| {
                        let kind: i64 = row.try_get(3)?;
                        let status: i64 = row.try_get(4)?;
                        Ok($crate::push::PushBatchInfo {
                            id: row.try_get(0)?,
                            platform_id: $crate::ids::PlatformId(row.try_get(1)?),
                            app_id: row.try_get(2)?,
                            kind: $crate::push::PushKind::from_code(kind).ok_or_else(|| {
                                $crate::store::StoreError::Corrupt(format!("push batch of type {kind}"))
                            })?,
                            status: $crate::push::BatchStatus::from_code(status).ok_or_else(|| {
                                $crate::store::StoreError::Corrupt(format!("push batch of status {status}"))
                            })?,
                            rows: row.try_get::<i64, _>(5)?.max(0) as u64,
                            attempts: row.try_get::<i64, _>(6)?.clamp(0, i64::from(u32::MAX)) as u32,
                            created_at_ms: row.try_get(7)?,
                            next_attempt_at_ms: row.try_get(8)?,
                            delivered_at_ms: row.try_get(9)?,
                            last_error: row.try_get(10)?,
                        })
                    })
                    .collect()
            }

            async fn requeue_push_batch(
                &self,
                batch_id: i64,
                now_ms: i64,
            ) -> Result<$crate::push::RequeueOutcome, $crate::store::StoreError> {
                use sqlx::Row as _;
                let mut tx = self.begin_write().await?;
                let requeued = sqlx::query(
                    "UPDATE push_batches SET status = 0, attempts = 0, next_attempt_at_ms = $2 \
                     WHERE id = $1 AND status = 2",
                )
                .bind(batch_id)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                if requeued.rows_affected() == 1 {
                    tx.commit().await?;
                    return Ok($crate::push::RequeueOutcome::Requeued);
                }
                let status: Option<i64> = sqlx::query("SELECT status FROM push_batches WHERE id = $1")
                    .bind(batch_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|row| row.try_get(0))
                    .transpose()?;
                Ok(match status.map($crate::push::BatchStatus::from_code) {
                    None => $crate::push::RequeueOutcome::Unknown,
                    Some(Some(status)) => $crate::push::RequeueOutcome::NotDead(status),
                    Some(None) => {
                        return Err($crate::store::StoreError::Corrupt(format!("push batch {batch_id} status")));
                    }
                })
            }

            fn group_commit_stats(&self) -> Option<$crate::store::GroupCommitStats> {
                self.group.as_ref().map(|group| group.stats())
            }

            async fn push_backlog(&self) -> Result<Vec<$crate::push::PushBacklog>, $crate::store::StoreError> {
                use sqlx::Row as _;
                let mut backlog = std::collections::BTreeMap::<(i64, i64), $crate::push::PushBacklog>::new();
                let entry = |backlog: &mut std::collections::BTreeMap<(i64, i64), $crate::push::PushBacklog>,
                             platform_id: i64,
                             kind: i64|
                 -> Result<(), $crate::store::StoreError> {
                    let kind_code = kind;
                    let kind = $crate::push::PushKind::from_code(kind)
                        .ok_or_else(|| $crate::store::StoreError::Corrupt(format!("push of type {kind}")))?;
                    backlog.entry((platform_id, kind_code)).or_insert($crate::push::PushBacklog {
                        platform_id: $crate::ids::PlatformId(platform_id),
                        kind,
                        pending_rows: 0,
                        oldest_pending_at_ms: None,
                        dead_batches: 0,
                    });
                    Ok(())
                };
                for row in sqlx::query(
                    "SELECT platform_id, kind, COUNT(*), MIN(created_at_ms) FROM ( \
                       SELECT platform_id, kind, created_at_ms FROM push_outbox WHERE batch_id IS NULL \
                       UNION ALL \
                       SELECT o.platform_id, o.kind, o.created_at_ms FROM push_batches b \
                       JOIN push_outbox o ON o.batch_id = b.id WHERE b.status = 0 \
                     ) waiting GROUP BY platform_id, kind",
                )
                .fetch_all(self.reader())
                .await?
                {
                    let key: (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
                    entry(&mut backlog, key.0, key.1)?;
                    if let Some(item) = backlog.get_mut(&key) {
                        item.pending_rows = row.try_get::<i64, _>(2)?.max(0) as u64;
                        item.oldest_pending_at_ms = row.try_get(3)?;
                    }
                }
                for row in sqlx::query(
                    "SELECT platform_id, kind, COUNT(*) FROM push_batches WHERE status = 2 GROUP BY platform_id, kind",
                )
                .fetch_all(self.reader())
                .await?
                {
                    let key: (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
                    entry(&mut backlog, key.0, key.1)?;
                    if let Some(item) = backlog.get_mut(&key) {
                        item.dead_batches = row.try_get::<i64, _>(2)?.max(0) as u64;
                    }
                }
                Ok(backlog.into_values().collect())
            }
        }
    };
}

pub(crate) use impl_sql_store;

/// Reads a stored identifier back into its newtype, reporting corruption instead of panicking.
pub(crate) fn stored_id<T>(
    value: String,
    make: fn(String) -> Result<T, crate::ids::IdError>,
) -> Result<T, super::StoreError> {
    let shown = value.clone();
    make(value).map_err(|err| super::StoreError::Corrupt(format!("stored identifier `{shown}`: {err}")))
}
