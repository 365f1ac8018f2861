-- Conform raw rows into a GDP table with a model, build a small KPI, publish it.
SELECT barecount.model_define('orders', $model$
SELECT payload->>'order_id'                AS order_id,
       (payload->>'order_date')::date      AS order_date,
       payload->>'store_id'                AS store_id,
       payload->>'region'                  AS region,
       (payload->>'amount')::numeric(12,2) AS amount,
       (payload->>'quantity')::integer     AS quantity,
       batch_id
  FROM raw.orders__accepted
$model$) \g /dev/null
SELECT model, row_count, ledger_seq FROM barecount.model_run('orders');

CREATE TABLE kpi.monthly_sales AS
SELECT tenant_id,
       date_trunc('month', order_date)::date AS month,
       region,
       count(*)                              AS orders,
       sum(quantity)::bigint                 AS units,
       sum(amount)::numeric(14,2)            AS net_sales
  FROM gdp.orders
 GROUP BY 1, 2, 3;
COMMENT ON TABLE kpi.monthly_sales IS 'Net sales, orders and units per month and region';

SELECT dataset, version, row_count, content_hash, ledger_seq
  FROM barecount.publish('monthly_sales', 'kpi.monthly_sales');
