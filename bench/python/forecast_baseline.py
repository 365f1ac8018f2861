"""statsforecast's AutoETS beside BareCount's forecasts, for `barecount-bench forecast`.

Reads <dir>/speed.csv (unique_id, ds, y) and <dir>/accuracy.json (train, test and our point
forecasts per series), times AutoETS (season 12, one process) over the speed set after a warm-up
that compiles numba, and prints MASE and sMAPE of both on the accuracy set: the whole set, its
six statsmodels series, and its first 26 series (the set the benchmark began with). With
BARECOUNT_AUTOETS_EXPECTED=<absolute path> set, writes AutoETS's MASE and sMAPE per series there
(core/tests/data/autoets_accuracy.json, which core's tests compare with).
"""
import json
import os
import sys
import time

import numpy as np
import pandas as pd
from statsforecast import StatsForecast
from statsforecast.models import AutoETS


def mase(train, test, f, m):
    m = max(m, 1)
    scale = np.mean(np.abs(train[m:] - train[:-m]))
    return float(np.mean(np.abs(test - f)) / scale) if scale > 0 else float("nan")


def smape(test, f):
    d = np.abs(test) + np.abs(f)
    return float(200 * np.mean(np.where(d == 0, 0, np.abs(test - f) / np.where(d == 0, 1, d))))


def main(d):
    df = pd.read_csv(f"{d}/speed.csv")
    df["ds"] = df["ds"].astype(int)
    warm = df[df.unique_id == df.unique_id.iloc[0]]
    StatsForecast(models=[AutoETS(season_length=12)], freq=1, n_jobs=1).forecast(df=warm, h=12)
    t = time.perf_counter()
    StatsForecast(models=[AutoETS(season_length=12)], freq=1, n_jobs=1).forecast(df=df, h=12)
    secs = time.perf_counter() - t
    print(f"statsforecast AutoETS: {df.unique_id.nunique()} series in {secs:.2f} s")
    rows = []
    expected = {}
    for s in json.load(open(f"{d}/accuracy.json")):
        train, test, ours, m = np.array(s["train"]), np.array(s["test"]), np.array(s["ours"]), s["m"]
        one = pd.DataFrame({"unique_id": "x", "ds": np.arange(len(train)), "y": train})
        theirs = StatsForecast(models=[AutoETS(season_length=m)], freq=1, n_jobs=1).forecast(df=one, h=len(test))["AutoETS"].to_numpy()
        rows.append((s["name"], s["model"], mase(train, test, ours, m), mase(train, test, theirs, m), smape(test, ours), smape(test, theirs)))
        expected[s["name"]] = {"mase": rows[-1][3], "smape": rows[-1][5], "train_sum": float(np.sum(train))}
    print(f"{'series':<20} {'our model':<12} {'MASE ours':>10} {'AutoETS':>10} {'sMAPE ours':>11} {'AutoETS':>10}")
    for r in rows[:26]:
        print(f"{r[0]:<20} {r[1]:<12} {r[2]:>10.3f} {r[3]:>10.3f} {r[4]:>11.2f} {r[5]:>10.2f}")
    print(f"... {len(rows) - 26} more retail-like series")
    a = np.array([r[2:] for r in rows], dtype=float)
    # the whole set; the six statsmodels series; the first 26 (the set this benchmark began with)
    for label, part, key in [
        (f"median of {len(rows)}", a, "forecast_accuracy_median"),
        ("median statsmodels 6", a[:6], "forecast_accuracy_statsmodels_median"),
        ("median first 26", a[:26], "forecast_accuracy_first26_median"),
    ]:
        med = np.nanmedian(part, axis=0)
        wins = int(np.sum(part[:, 0] <= part[:, 1]))
        print(f"{label:<33} {med[0]:>10.3f} {med[1]:>10.3f} {med[2]:>11.2f} {med[3]:>10.2f}   ours at least as good on {wins} of {len(part)}")
        print(f"bench={key}_mase ours={med[0]:.4f} baseline={med[1]:.4f} ratio={med[0] / med[1]:.4f} unit=mase")
        print(f"bench={key}_smape ours={med[2]:.4f} baseline={med[3]:.4f} ratio={med[2] / med[3]:.4f} unit=percent")
    ratio = np.exp(np.mean(np.log(a[:, 0] / a[:, 1])))
    print(f"geometric mean of MASE ours / AutoETS over {len(rows)} series: {ratio:.4f}")
    # AutoETS's figures per series for core's test auto_is_no_worse_than_autoets_on_the_median_series
    out = os.environ.get("BARECOUNT_AUTOETS_EXPECTED")
    if out:
        with open(out, "w") as f:
            json.dump(expected, f, indent=0, sort_keys=True)
            f.write("\n")
    print(f"statsforecast_seconds={secs:.4f}")


if __name__ == "__main__":
    main(sys.argv[1])
