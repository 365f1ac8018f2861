"""Read a published dataset of N rows (default 10M) into an Arrow table from Python, side by side:

  barecount-flight cold (first read, empty cache) and warm (cached), via adbc-driver-flightsql;
  adbc-driver-postgresql reading the same rows straight from Postgres;
  Postgres' own binary COPY of the rows (psql to /dev/null), the bar for the cold read;
  ROAPI (a DataFusion server) serving the same rows from a Parquet file over Flight SQL.

Prints rows/s, MB/s (Arrow bytes), ratios and each server's peak memory (VmHWM).
Run through `scripts/bench.sh read10m [--rows N]`, which starts the cluster and builds.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_postgresql.dbapi as pgdbapi
import pyarrow.parquet as pq

COLUMNS = "id, qty, amount, price, region, customer, order_date, created_at"


def peak_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port}")


def timed(fn, runs):
    times, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return times, result


def autovacuum_workers(pg_url):
    """How many autovacuum workers are running in the cluster right now."""
    conn = pgdbapi.connect(pg_url)
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")
    n = cur.fetchone()[0]
    cur.close()
    conn.close()
    return n


def publish(pg_url, rows):
    conn = pgdbapi.connect(pg_url)
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM barecount.dataset_versions WHERE dataset = 'bench_read' AND row_count = %d" % rows)
    if cur.fetchone()[0] == 0:
        print(f"publishing bench_read with {rows:,} rows ...", flush=True)
        t = time.perf_counter()
        cur.execute(
            f"""SELECT count(*) FROM barecount.publish('bench_read', $$
                SELECT g::bigint AS id, (g % 100)::int AS qty,
                       ((g * 37) % 1000000 / 100.0)::numeric(12,2) AS amount,
                       ((g * 13) % 100000 / 10000.0)::numeric(10,4) AS price,
                       (ARRAY['east','west','north','south'])[1 + g % 4] AS region,
                       'customer_' || (g % 50000) AS customer,
                       DATE '2020-01-01' + (g % 1500) AS order_date,
                       TIMESTAMPTZ '2020-01-01 00:00:00+00' + (g % 100000000) * interval '1 second' AS created_at
                  FROM generate_series(1, {rows}) g $$)"""
        )
        cur.fetchall()
        conn.commit()
        print(f"  published in {time.perf_counter() - t:.1f}s", flush=True)
    cur.execute("SELECT token FROM barecount.token_create('default', ARRAY['read'], now() + interval '1 day', 'bench')")
    token = cur.fetchone()[0]
    conn.commit()
    cur.close()
    conn.close()
    return token


def start_flight(a, work, extra):
    """A barecount-flight with an empty cache; returns (process, port)."""
    port_file = os.path.join(work, "port")
    if os.path.exists(port_file):
        os.remove(port_file)
    flight = subprocess.Popen(
        [a.flight_bin, "serve", "--listen", "127.0.0.1:0", "--database-url", a.pg_url,
         "--port-file", port_file, "--cache-dir", os.path.join(work, "cache"),
         "--export-dir", os.path.join(work, "exports"), *extra],
        stderr=subprocess.DEVNULL,
    )
    while not (os.path.exists(port_file) and open(port_file).read()):
        if flight.poll() is not None:
            sys.exit("barecount-flight exited")
        time.sleep(0.05)
    return flight, int(open(port_file).read())


def cold_only(a, token):
    """The first read after start, `runs` times per loader setting (a new server and an empty
    cache each time), beside binary COPY: which loader should be the default."""
    copy_sql = f"\\copy (SELECT {COLUMNS} FROM published.bench_read) TO '/dev/null' WITH (FORMAT binary)"
    setups = [("read10m_cold", []), ("read10m_cold_parallel", ["--parallel-load-min-bytes", "0"])]
    times = {name: [] for name, _ in setups}
    warm = {name: [] for name, _ in setups}
    copies = []
    for _ in range(a.runs):
        for name, extra in setups:
            work = tempfile.mkdtemp(prefix="bc-bench-cold-")
            flight, port = start_flight(a, work, extra)
            conn = flightsql.connect(f"grpc://127.0.0.1:{port}",
                                     db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"})
            t = time.perf_counter()
            cur = conn.cursor()
            cur.execute("SELECT * FROM bench_read")
            table = cur.fetch_arrow_table()
            times[name].append(time.perf_counter() - t)
            assert table.num_rows == a.rows, table.num_rows
            cur.close()
            # the first warm reads after the load (the issue saw them slower after parallel
            # loads): each split into planning (GetFlightInfo) and fetching (DoGet on every
            # endpoint), with whether a Postgres autovacuum worker was busy meanwhile
            for _ in range(3):
                vacuuming = autovacuum_workers(a.pg_url)
                t = time.perf_counter()
                cur = conn.cursor()
                cur.execute("SELECT * FROM bench_read")
                planned = time.perf_counter() - t
                cur.fetch_arrow_table()
                cur.close()
                took = time.perf_counter() - t
                warm[name].append(took)
                vacuuming = max(vacuuming, autovacuum_workers(a.pg_url))
                print(f"  {name} warm read: {took:.2f}s (GetFlightInfo {planned:.2f}s), "
                      f"autovacuum workers busy: {vacuuming}", flush=True)
            conn.close()
            flight.terminate()
            flight.wait()
        t = time.perf_counter()
        subprocess.run(["psql", "-X", "-q", a.pg_url, "-c", copy_sql], check=True)
        copies.append(time.perf_counter() - t)
    copy = statistics.median(copies)
    print(f"\ncold reads of {a.rows:,} rows, {a.runs} runs each (new server, empty cache), interleaved")
    print(f"{'reader':36} {'median s':>9} {'spread s':>14}")
    print(f"{'postgres binary COPY (psql)':36} {copy:9.2f} {min(copies):6.2f}-{max(copies):.2f}")
    for name, _ in setups:
        m = statistics.median(times[name])
        print(f"{name:36} {m:9.2f} {min(times[name]):6.2f}-{max(times[name]):.2f}")
    for name, _ in setups:
        w = warm[name]
        print(f"{'  3 warm reads after ' + name:36} {statistics.median(w):9.2f} {min(w):6.2f}-{max(w):.2f}")
    for name, _ in setups:
        m = statistics.median(times[name])
        print(f"bench={name} ours={a.rows / m:.3f} baseline={a.rows / copy:.3f} ratio={copy / m:.3f} unit=rows/s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pg-url", required=True)
    ap.add_argument("--flight-bin", required=True)
    ap.add_argument("--roapi-bin", required=True)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cold-only", action="store_true",
                    help="only cold reads: the default loader vs the parallel one, each --runs times")
    a = ap.parse_args()

    token = publish(a.pg_url, a.rows)
    if a.cold_only:
        cold_only(a, token)
        return
    work = tempfile.mkdtemp(prefix="bc-bench-read-")
    results = {}

    # barecount-flight, empty cache: the first read loads with binary COPY.
    port_file = os.path.join(work, "port")
    flight = subprocess.Popen(
        [a.flight_bin, "serve", "--listen", "127.0.0.1:0", "--database-url", a.pg_url,
         "--port-file", port_file, "--cache-dir", os.path.join(work, "cache"),
         "--export-dir", os.path.join(work, "exports")],
        stderr=subprocess.DEVNULL,
    )
    while not (os.path.exists(port_file) and open(port_file).read()):
        if flight.poll() is not None:
            sys.exit("barecount-flight exited")
        time.sleep(0.05)
    port = int(open(port_file).read())
    conn = flightsql.connect(f"grpc://127.0.0.1:{port}",
                             db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"})

    def flight_read():
        cur = conn.cursor()
        cur.execute("SELECT * FROM bench_read")
        t = cur.fetch_arrow_table()
        cur.close()
        return t

    cold, table = timed(flight_read, 1)
    assert table.num_rows == a.rows, table.num_rows
    warm, table = timed(flight_read, a.runs)
    nbytes = table.nbytes
    results["barecount-flight cold"] = (cold[0], peak_kib(flight.pid))
    results["barecount-flight warm"] = (statistics.median(warm), peak_kib(flight.pid))
    spreads = {"barecount-flight warm": warm}
    conn.close()
    flight.terminate()
    flight.wait()

    # Postgres through its ADBC driver (binary COPY under the hood), and psql's binary COPY.
    pg = pgdbapi.connect(a.pg_url)

    def pg_read():
        cur = pg.cursor()
        cur.execute(f"SELECT {COLUMNS} FROM published.bench_read")
        t = cur.fetch_arrow_table()
        cur.close()
        return t

    cur = pg.cursor()
    cur.execute("SELECT pg_backend_pid()")
    backend = cur.fetchone()[0]
    cur.close()
    times, t = timed(pg_read, a.runs)
    assert t.num_rows == a.rows
    results["adbc-driver-postgresql"] = (statistics.median(times), peak_kib(backend))
    spreads["adbc-driver-postgresql"] = times
    pg.close()
    copy_sql = f"\\copy (SELECT {COLUMNS} FROM published.bench_read) TO '/dev/null' WITH (FORMAT binary)"
    times, _ = timed(lambda: subprocess.run(["psql", "-X", "-q", a.pg_url, "-c", copy_sql], check=True), a.runs)
    results["postgres binary COPY (psql)"] = (statistics.median(times), None)
    spreads["postgres binary COPY (psql)"] = times

    # ROAPI over the same rows from Parquet, loaded into memory at start.
    parquet = os.path.join(work, "bench_read.parquet")
    pq.write_table(table, parquet)
    fport = free_port()
    roapi = subprocess.Popen(
        [a.roapi_bin, "-t", f"bench_read={parquet}", "--addr-flight-sql", f"127.0.0.1:{fport}",
         "--addr-http", f"127.0.0.1:{free_port()}", "--addr-postgres", f"127.0.0.1:{free_port()}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_port(fport, roapi, "roapi")
    rconn = flightsql.connect(f"grpc://127.0.0.1:{fport}")

    def roapi_read():
        cur = rconn.cursor()
        cur.execute("SELECT * FROM bench_read")
        t = cur.fetch_arrow_table()
        cur.close()
        return t

    roapi_read()  # first query after start
    times, t = timed(roapi_read, a.runs)
    assert t.num_rows == a.rows
    results["roapi 0.12.7 (Parquet in memory)"] = (statistics.median(times), peak_kib(roapi.pid))
    spreads["roapi 0.12.7 (Parquet in memory)"] = times
    rconn.close()
    roapi.terminate()
    roapi.wait()

    mb = nbytes / 1e6
    print(f"\nread {a.rows:,} rows x 8 columns ({mb:,.0f} MB as Arrow) into a pyarrow Table, median of {a.runs}")
    print(f"{'reader':36} {'seconds':>8} {'spread s':>12} {'rows/s':>12} {'MB/s':>8} {'peak MiB':>9}")
    for name, (secs, peak) in results.items():
        peak_s = f"{peak / 1024:,.0f}" if peak else "-"
        sp = spreads.get(name)
        spread = f"{min(sp):.2f}-{max(sp):.2f}" if sp else "(one read)"
        print(f"{name:36} {secs:8.2f} {spread:>12} {a.rows / secs:12,.0f} {mb / secs:8,.0f} {peak_s:>9}")
    w = results["barecount-flight warm"][0]
    c = results["barecount-flight cold"][0]
    print(f"\nwarm vs roapi:              {results['roapi 0.12.7 (Parquet in memory)'][0] / w:.2f}x")
    print(f"warm vs adbc-postgresql:    {results['adbc-driver-postgresql'][0] / w:.2f}x")
    print(f"cold vs adbc-postgresql:    {results['adbc-driver-postgresql'][0] / c:.2f}x")
    print(f"cold vs binary COPY (psql): {results['postgres binary COPY (psql)'][0] / c:.2f}x")
    print("(ratios > 1: barecount-flight is faster; peak MiB is the server process's VmHWM;"
          " for Postgres, the backend that served the ADBC reads)")
    # machine-readable lines (ratio: ours/baseline as throughput, so > 1 is faster)
    for name, ours, base in [
        ("read10m_cold", c, results["postgres binary COPY (psql)"][0]),
        ("read10m_warm_vs_roapi", w, results["roapi 0.12.7 (Parquet in memory)"][0]),
        ("read10m_warm_vs_adbc", w, results["adbc-driver-postgresql"][0]),
    ]:
        print(f"bench={name} ours={a.rows / ours:.3f} baseline={a.rows / base:.3f} ratio={base / ours:.3f} unit=rows/s")


if __name__ == "__main__":
    main()
