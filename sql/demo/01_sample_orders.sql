-- Generates a sample retail feed (about 6,000 order rows over 2023-2024, a few deliberately
-- invalid) and ingests it into raw.orders through the orders contract.
SELECT setseed(0.42) \g /dev/null

WITH gen AS (
    SELECT g,
           DATE '2023-01-01' + (g % 731) AS order_date,
           (ARRAY['east', 'west', 'north', 'south'])[1 + (g % 4)] AS region,
           'S' || lpad((1 + g % 25)::text, 3, '0') AS store_id,
           round((5 + random() * 195)::numeric, 2) AS amount,
           1 + (g % 6) AS quantity
      FROM generate_series(1, 6000) g
), good AS (
    SELECT jsonb_build_object(
               'order_id', 'A' || g, 'order_date', order_date, 'store_id', store_id,
               'region', region, 'amount', amount, 'quantity', quantity,
               'customer_id', CASE WHEN g % 3 = 0 THEN 'C' || (g % 500) END) AS row
      FROM gen
), bad(row) AS (VALUES
    ('{"order_id":"A900001","order_date":"2024-02-30","store_id":"S001","region":"east","amount":12.5,"quantity":1}'::jsonb),
    ('{"order_id":"A900002","order_date":"2024-03-01","store_id":"S002","region":"central","amount":-4,"quantity":1}'),
    ('{"order_id":"A900003","order_date":"2024-03-02","region":"west","amount":10,"quantity":0}'),
    ('{"order_id":"bad-id","order_date":"2024-03-03","store_id":"S003","region":"north","amount":"ten","quantity":2}'),
    ('{"order_id":"A900005","order_date":"2024-03-04","store_id":"S004","region":"south","amount":7.25,"quantity":1.5}')
)
SELECT batch_id, accepted, quarantined, ledger_seq
  FROM barecount.ingest('orders', (SELECT jsonb_agg(row) FROM (SELECT row FROM good UNION ALL SELECT row FROM bad) r));
