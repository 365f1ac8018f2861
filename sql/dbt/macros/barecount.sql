{# Macros that call BareCount from dbt: define a KPI on a dbt model, materialize it, publish it. #}

{% macro barecount_kpi_define(name, spec) %}
  {% do run_query("select barecount.kpi_define(" ~ dbt.string_literal(name) ~ ", " ~ dbt.string_literal(tojson(spec)) ~ "::jsonb)") %}
{% endmacro %}

{% macro barecount_kpi_materialize(name, from_date, to_date) %}
  {% do run_query("select * from barecount.kpi_materialize(" ~ dbt.string_literal(name) ~ ", "
                  ~ dbt.string_literal(from_date) ~ "::date, " ~ dbt.string_literal(to_date) ~ "::date)") %}
{% endmacro %}

{% macro barecount_publish(dataset, source) %}
  {% do run_query("select * from barecount.publish(" ~ dbt.string_literal(dataset) ~ ", " ~ dbt.string_literal(source) ~ ")") %}
{% endmacro %}

{% macro barecount_kpi_pipeline() %}
  {% if execute %}
    {{ barecount_kpi_define('dbt_daily_sales', {
        "source": "gdp.dbt_orders", "time": "order_date", "grain": "month",
        "dimensions": ["region"], "measures": {"net_sales": "sum(amount)", "orders": "count(*)"}}) }}
    {{ barecount_kpi_materialize('dbt_daily_sales', '2000-01-01', '2099-12-31') }}
    {# publish the KPI's values, not its run bookkeeping, so a rerun on the same data hashes the same #}
    {{ barecount_publish('dbt_sales', 'select tenant_id, period, period_start, period_end, region, net_sales, orders from kpi.dbt_daily_sales') }}
  {% endif %}
{% endmacro %}
