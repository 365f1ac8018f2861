"""Writes timeseries_expected.json: real series that statsmodels ships and the numbers that
statsmodels and scipy compute on them, for core's anomaly and forecast unit tests.

Run with statsmodels 0.15.0 and scipy 1.17 (scripts/stats-venv.sh makes the environment):
    python core/tests/data/make_timeseries_expected.py > core/tests/data/timeseries_expected.json
"""
import json
import warnings

import numpy as np
import pandas as pd
import scipy
import statsmodels
import statsmodels.api as sm
from scipy import stats
from statsmodels.tsa.exponential_smoothing.ets import ETSModel
from statsmodels.tsa.seasonal import seasonal_decompose

warnings.simplefilter("ignore")


def series():
    co2 = sm.datasets.co2.load_pandas().data["co2"].resample("MS").mean().ffill()
    elnino = sm.datasets.elnino.load_pandas().data.drop(columns="YEAR").to_numpy().ravel()
    macro = sm.datasets.macrodata.load_pandas().data
    return {
        "nile": (sm.datasets.nile.load_pandas().data["volume"].to_numpy(float), 1),
        "sunspots": (sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(float), 1),
        "co2_monthly": (co2.to_numpy(float)[-240:], 12),
        "elnino_monthly": (elnino[-240:].astype(float), 12),
        "realgdp_quarterly": (macro["realgdp"].to_numpy(float), 4),
        "cpi_quarterly": (macro["cpi"].to_numpy(float), 4),
    }


def mad(x):
    """Robust z-scores: (x - median) / (MAD scaled to the normal), scipy's scaling."""
    med = float(np.median(x))
    s = float(stats.median_abs_deviation(x, scale="normal"))
    return {"median": med, "mad_normal": s, "scores": ((x - med) / s).tolist()}


def decomposition(x, m):
    d = seasonal_decompose(x, period=m, model="additive", extrapolate_trend="period")
    return {"trend": d.trend.tolist(), "seasonal": d.seasonal.tolist(), "resid": d.resid.tolist()}


def gesd(r, max_outliers, alpha):
    """Generalized ESD (Rosner 1983), hybrid form (median and MAD, as S-H-ESD), scipy's t quantiles."""
    r = np.asarray(r, float)
    idx = list(range(len(r)))
    n = len(r)
    stats_, crit, removed = [], [], []
    for i in range(1, max_outliers + 1):
        v = r[idx]
        med = np.median(v)
        s = stats.median_abs_deviation(v, scale="normal")
        dev = np.abs(v - med)
        j = int(np.argmax(dev))
        stats_.append(float(dev[j] / s))
        p = 1 - alpha / (2 * (n - i + 1))
        t = stats.t.ppf(p, n - i - 1)
        crit.append(float((n - i) * t / np.sqrt((n - i - 1 + t * t) * (n - i + 1))))
        removed.append(idx.pop(j))
    k = max([i + 1 for i in range(max_outliers) if stats_[i] > crit[i]], default=0)
    return {"statistics": stats_, "critical": crit, "order": removed, "anomalies": sorted(removed[:k])}


def ets(x, m, trend, damped, seasonal):
    idx = pd.RangeIndex(len(x))
    y = pd.Series(x, index=idx)
    model = ETSModel(y, error="add", trend=trend, damped_trend=damped, seasonal=seasonal,
                     seasonal_periods=m if seasonal else None)
    fit = model.fit(disp=False, maxiter=2000)
    h = 2 * m if seasonal else 8
    pred = fit.get_prediction(start=len(x), end=len(x) + h - 1)
    f95 = pred.summary_frame(alpha=0.05)
    f80 = pred.summary_frame(alpha=0.2)
    names = model.param_names
    p = dict(zip(names, fit.params.tolist()))
    seas = [p[f"initial_seasonal.{i}"] for i in range(m)] if seasonal else []
    return {
        "trend": trend, "damped": damped, "seasonal": seasonal, "m": m,
        "params": {"alpha": p["smoothing_level"], "beta": p.get("smoothing_trend"),
                   "gamma": p.get("smoothing_seasonal"), "phi": p.get("damping_trend"),
                   "level": p["initial_level"], "slope": p.get("initial_trend"),
                   # statsmodels lists initial seasonal states newest first: s_0, s_-1, ..., s_-m+1
                   "seasonal_states": seas},
        "sse": float(fit.sse),
        "fitted": fit.fittedvalues.tolist(),
        "forecast": f95["mean"].tolist(),
        "lo95": f95["pi_lower"].tolist(), "hi95": f95["pi_upper"].tolist(),
        "lo80": f80["pi_lower"].tolist(), "hi80": f80["pi_upper"].tolist(),
    }


out = {"generated_by": f"statsmodels {statsmodels.__version__}, scipy {scipy.__version__}", "series": {}}
for name, (x, m) in series().items():
    e = {"m": m, "values": x.tolist(), "mad": mad(x)}
    if m > 1:
        d = decomposition(x, m)
        e["decomposition"] = d
        e["shesd"] = gesd(np.asarray(d["resid"]), max(1, int(0.1 * len(x))), 0.05)
        e["ets"] = [ets(x, m, "add", False, "add"), ets(x, m, "add", True, "add")]
        if np.all(x > 0):
            e["ets"].append(ets(x, m, "add", True, "mul"))
    else:
        e["esd"] = gesd(x - np.median(x), max(1, int(0.1 * len(x))), 0.05)
        e["ets"] = [ets(x, 1, None, False, None), ets(x, 1, "add", True, None)]
    out["series"][name] = e
out["t_quantiles"] = [[p, df, float(stats.t.ppf(p, df))] for p in (0.9, 0.975, 0.999, 0.9999) for df in (1, 2, 5, 30, 300)]
json.dump(out, __import__("sys").stdout)
