"""Python clients against a real barecount-flight: ADBC (adbc-driver-flightsql) and pyarrow.flight.

Run by tests/tests/python_clients.rs, which starts Postgres data and the server and passes:
BARECOUNT_FLIGHT_URI (grpc://127.0.0.1:PORT), BARECOUNT_USER / BARECOUNT_PASSWORD (a login role
of tenant acme), BARECOUNT_TOKEN (an API token of acme), BARECOUNT_OTHER_TOKEN (of globex),
BARECOUNT_ROWS (rows of acme's dataset `sales`), BARECOUNT_INGEST_TOKEN (an acme token with the
ingest scope; acme has the orders contract). Exits non-zero on the first failed check.
"""

import datetime
import decimal
import json
import os
import sys

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight

URI = os.environ["BARECOUNT_FLIGHT_URI"]
USER = os.environ["BARECOUNT_USER"]
PASSWORD = os.environ["BARECOUNT_PASSWORD"]
TOKEN = os.environ["BARECOUNT_TOKEN"]
OTHER_TOKEN = os.environ["BARECOUNT_OTHER_TOKEN"]
ROWS = int(os.environ["BARECOUNT_ROWS"])
INGEST_TOKEN = os.environ["BARECOUNT_INGEST_TOKEN"]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def adbc():
    conn = flightsql.connect(URI, db_kwargs={"username": USER, "password": PASSWORD})
    try:
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        catalogs = {c["catalog_name"] for c in objects}
        check(catalogs == {"barecount"}, f"adbc_get_objects catalogs {catalogs}")
        schemas = objects[0]["catalog_db_schemas"]
        check([s["db_schema_name"] for s in schemas] == ["published"], "one schema, published")
        tables = {t["table_name"]: t for t in schemas[0]["db_schema_tables"]}
        check({"sales", "sales__v1"} <= set(tables), f"tables {sorted(tables)}")
        check("globex_secret" not in tables, "another tenant's dataset is not listed")
        columns = [c["column_name"] for c in tables["sales"]["table_columns"]]
        check(columns == ["id", "region", "amount", "day"], f"columns of sales {columns}")

        cur = conn.cursor()
        cur.execute("SELECT region, count(*) AS n, sum(amount) AS total FROM sales GROUP BY region ORDER BY region")
        t = cur.fetch_arrow_table()
        check(t.column("region").to_pylist() == ["east", "west"], "query: grouped regions")
        check(sum(t.column("n").to_pylist()) == ROWS, "query: counts add up")
        check(pa.types.is_decimal(t.schema.field("total").type), "decimals stay decimals")

        cur.execute("SELECT id FROM sales WHERE region = ? AND id <= ? ORDER BY id", parameters=("east", 10))
        ids = cur.fetch_arrow_table().column("id").to_pylist()
        check(ids == [2, 4, 6, 8, 10], f"parameterized prepared statement: {ids}")
        cur.execute("SELECT id FROM sales WHERE region = ? AND id <= ? ORDER BY id", parameters=("west", 4))
        check(cur.fetch_arrow_table().column("id").to_pylist() == [1, 3], "same statement, new parameters")

        # executemany: the statement once per parameter row; nothing is written (read-only)
        cur.executemany("SELECT id FROM sales WHERE region = ? AND id <= ?", [("east", 4), ("west", 3)])
        check(cur.rowcount in (0, -1), f"executemany ran, updating nothing: rowcount {cur.rowcount}")
        try:
            cur.executemany("SELECT id / ? FROM sales", [(1,), (0,)])
            check(False, "executemany reports an error of any row")
        except adbc_driver_manager.Error as e:
            check("zero" in str(e).lower(), f"executemany error names the problem: {e}")
        # a bound batch of several rows: results of each row, in row order
        params = pa.record_batch([pa.array(["east", "west"]), pa.array([4, 3])], names=["r", "n"])
        cur.execute("SELECT id FROM sales WHERE region = ? AND id <= ? ORDER BY id", parameters=params)
        ids = cur.fetch_arrow_table().column("id").to_pylist()
        check(ids == [2, 4, 1, 3], f"a batch of parameter rows runs once per row, in order: {ids}")

        # session options as ADBC reads and sets them
        check(conn.adbc_current_catalog == "barecount", f"current catalog {conn.adbc_current_catalog}")
        check(conn.adbc_current_db_schema == "published", f"current schema {conn.adbc_current_db_schema}")
        import json
        options = json.loads(conn.adbc_connection.get_option("adbc.flight.sql.session.options"))
        check(options.get("catalog") == "barecount" and options.get("schema") == "published", f"session options {options}")
        conn.adbc_connection.set_options(**{"adbc.flight.sql.session.option.schema": "published"})
        check(True, "setting the schema to its own value succeeds")
        for name, value in [("schema", "elsewhere"), ("search_path", "x")]:
            try:
                conn.adbc_connection.set_options(**{f"adbc.flight.sql.session.option.{name}": value})
                check(False, f"session option {name}={value} is refused")
            except adbc_driver_manager.Error as e:
                check(name in str(e), f"session option {name}={value} refused, naming it: {e}")

        cur.execute("SELECT * FROM sales")
        t = cur.fetch_arrow_table()
        check(t.num_rows == ROWS, f"fetch_arrow_table of a dataset: {t.num_rows} rows")
        check(t.schema.names == ["id", "region", "amount", "day"], "dataset schema")
        check(pa.types.is_date32(t.schema.field("day").type), "dates are date32")
        # read once, the version is stored: the same statement now comes as several endpoints
        # (65,536 rows each here), which ADBC fetches in parallel; together they are the same rows
        partitions, schema = cur.adbc_execute_partitions("SELECT * FROM sales")
        check(len(partitions) == -(-ROWS // 65_536), f"a stored version in endpoints: {len(partitions)}")
        check(schema.names == t.schema.names, "the endpoints' schema")
        parts = []
        for p in partitions:
            cur.adbc_read_partition(p)
            parts.append(cur.fetch_arrow_table())
        whole = pa.concat_tables(parts).sort_by("id")
        check(whole.equals(t.sort_by("id")), "the endpoints hold every row once")
        cur.execute("SELECT * FROM sales")
        again = cur.fetch_arrow_table()
        check(again.sort_by("id").equals(t.sort_by("id")), "fetch_arrow_table over endpoints")

        try:
            cur.execute("SELECT * FROM globex_secret")
            cur.fetch_arrow_table()
            check(False, "another tenant's dataset is unreadable")
        except adbc_driver_manager.Error as e:
            check("globex_secret" in str(e), f"unknown dataset named in the error: {e}")
        cur.close()
    finally:
        conn.close()

    try:
        bad = flightsql.connect(URI, db_kwargs={"username": USER, "password": "wrong"})
        bad.cursor().execute("SELECT 1")
        check(False, "a wrong password is refused")
    except adbc_driver_manager.Error as e:
        check("authentication" in str(e).lower() or "unauthenticated" in str(e).lower(), f"wrong password refused: {e}")

    # An API token as bearer header.
    conn = flightsql.connect(URI, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {TOKEN}"})
    cur = conn.cursor()
    cur.execute("SELECT count(*) AS n FROM sales__v1")
    check(cur.fetch_arrow_table().column("n").to_pylist() == [ROWS], "bearer API token over ADBC")
    cur.close()
    conn.close()


def pyarrow_flight():
    client = flight.FlightClient(URI)
    header = client.authenticate_basic_token(USER, PASSWORD)
    check(header[0] == b"authorization" and header[1].startswith(b"Bearer bcs."), "basic handshake gives a session token")
    options = flight.FlightCallOptions(headers=[header])
    listed = [f.descriptor.path[0].decode() for f in client.list_flights(options=options)]
    check(listed == ["sales"], f"ListFlights lists the tenant's datasets: {listed}")
    for path in (["sales"], ["sales", "1"]):
        info = client.get_flight_info(flight.FlightDescriptor.for_path(*path), options)
        check(info.total_records == ROWS, f"GetFlightInfo {path}: {info.total_records} records")
        tables = [client.do_get(e.ticket, options).read_all() for e in info.endpoints]
        t = pa.concat_tables(tables)
        check(t.num_rows == ROWS, f"DoGet by path {path}: {t.num_rows} rows")
        check(t.schema.equals(info.schema), "stream schema = advertised schema")
    check(len(info.endpoints) > 1, f"a large version comes in several endpoints: {len(info.endpoints)}")

    other = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {OTHER_TOKEN}".encode())])
    try:
        client.get_flight_info(flight.FlightDescriptor.for_path("sales"), other)
        check(False, "globex cannot see acme's dataset")
    except pa.ArrowKeyError as e:  # pyarrow's form of NOT_FOUND
        check("sales" in str(e) and "not published" in str(e), f"globex gets NOT_FOUND naming the dataset: {e}")
    try:
        list(client.list_flights(options=flight.FlightCallOptions(headers=[(b"authorization", b"Bearer bct_0_0")])))
        check(False, "a bad token is refused")
    except flight.FlightUnauthenticatedError:
        check(True, "a bad token is Unauthenticated")


def orders(prefix, regions):
    n = len(regions)
    return pa.table({
        "order_id": [f"{prefix}{i}" for i in range(n)],
        "order_date": pa.array([datetime.date(2024, 3, 1 + i) for i in range(n)], pa.date32()),
        "store_id": [f"S{i}" for i in range(n)],
        "region": regions,
        "amount": pa.array([decimal.Decimal("12.50") + i for i in range(n)], pa.decimal128(12, 2)),
        "quantity": pa.array([1 + i for i in range(n)], pa.int32()),
    })


def ingest():
    # pyarrow.flight DoPut with a path descriptor: the answer's app_metadata has the counts
    client = flight.FlightClient(URI)
    opts = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {INGEST_TOKEN}".encode())])
    table = orders("P9", ["east", "west", "mars"])
    writer, reader = client.do_put(flight.FlightDescriptor.for_path("orders"), table.schema, opts)
    writer.write_table(table)
    writer.done_writing()
    meta = json.loads(reader.read().to_pybytes())
    writer.close()
    check(meta["accepted"] == 2 and meta["quarantined"] == 1 and meta["ledger_seq"] > 0,
          f"pyarrow do_put lands 2 rows, quarantines 1, with a receipt: {meta}")
    # a read-only token may not put
    ro = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {TOKEN}".encode())])
    try:
        writer, reader = client.do_put(flight.FlightDescriptor.for_path("orders"), table.schema, ro)
        writer.write_table(table)
        writer.done_writing()
        reader.read()
        writer.close()
        check(False, "a read-only token cannot put")
    except flight.FlightUnauthorizedError as e:
        check("ingest scope" in str(e), f"a read-only token is PermissionDenied: {e}")

    # ADBC bulk ingest (Flight SQL CommandStatementIngest), append mode
    conn = flightsql.connect(URI, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {INGEST_TOKEN}"})
    try:
        cur = conn.cursor()
        n = cur.adbc_ingest("orders", orders("Q9", ["north", "south", "east"]), mode="append")
        check(n == 3, f"adbc_ingest appends 3 rows: {n}")
        try:
            cur.adbc_ingest("orders", orders("R9", ["east"]), mode="replace")
            check(False, "adbc_ingest mode=replace is refused")
        except adbc_driver_manager.Error as e:
            check("append" in str(e), f"mode=replace is refused, naming append: {e}")
        cur.close()
    finally:
        conn.close()


adbc()
pyarrow_flight()
ingest()
print("all Python client checks passed")
