-- Conformed orders from BareCount's accepted raw rows (tenant_id kept: gdp tables are tenant-scoped).
select tenant_id,
       payload->>'order_id'                as order_id,
       (payload->>'order_date')::date      as order_date,
       payload->>'region'                  as region,
       (payload->>'amount')::numeric(12,2) as amount
  from raw.orders__accepted
