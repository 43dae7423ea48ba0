-- Bill queries at scale. Migration 0001 has an index for each single filter of a bill query
-- (platform; platform and person; platform and provider). A query naming both a person and a
-- provider used the person's index and read every bill of that person from the table to check
-- the provider: hundreds of random reads for a frequent buyer. This index answers it from the
-- index alone, in `transactionTime` order.
CREATE INDEX orders_bills_by_cid_provider
    ON orders (platform_id, sub_cid, equity_cid, transaction_time_ms DESC, id DESC);
