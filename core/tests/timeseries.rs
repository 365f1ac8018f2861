//! Anomaly detection and forecasting checked against statsmodels 0.15 and scipy 1.17 on series
//! statsmodels ships (nile, sunspots, co2, elnino, macrodata). The expected numbers are in
//! tests/data/timeseries_expected.json, written by tests/data/make_timeseries_expected.py.

use barecount_core::timeseries::anomaly::{detect, generalized_esd, Method as AnomalyMethod};
use barecount_core::timeseries::decompose::decompose;
use barecount_core::timeseries::ets::{
    self, filter, fit, forecast, predict, Error, Method, Params, Season, Spec, Trend,
};
use barecount_core::timeseries::{accuracy, SeriesError};
use serde_json::Value;
use statrs::distribution::{ContinuousCDF, StudentsT};

fn expected() -> Value {
    serde_json::from_str(include_str!("data/timeseries_expected.json")).unwrap_or(Value::Null)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect())
        .unwrap_or_default()
}

#[track_caller]
fn close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let scale = w.abs().max(1.0);
        assert!(
            (g - w).abs() <= tol * scale,
            "{what}[{i}]: got {g}, statsmodels/scipy {w} (tolerance {tol})"
        );
    }
}

fn each_series(mut f: impl FnMut(&str, &Value, Vec<f64>, usize)) {
    let e = expected();
    let series = e["series"].as_object().cloned().unwrap_or_default();
    assert_eq!(series.len(), 6, "the six reference series");
    for (name, s) in &series {
        let m = s["m"].as_u64().unwrap_or(1) as usize;
        f(name, s, floats(&s["values"]), m);
    }
}

#[test]
fn robust_z_scores_match_scipy() {
    each_series(|name, s, y, _| {
        let points = detect(&y, AnomalyMethod::Mad { threshold: 3.5 }).unwrap_or_default();
        let scores: Vec<f64> = points.iter().map(|p| p.score).collect();
        close(
            &format!("{name} mad scores"),
            &scores,
            &floats(&s["mad"]["scores"]),
            1e-12,
        );
        assert!(points
            .iter()
            .all(|p| (p.expected - s["mad"]["median"].as_f64().unwrap_or(0.0)).abs() < 1e-12));
        assert!(points.iter().all(|p| p.is_anomaly == (p.score.abs() > 3.5)));
    });
}

#[test]
fn seasonal_decomposition_matches_statsmodels() {
    let mut checked = 0;
    each_series(|name, s, y, m| {
        if m < 2 {
            return;
        }
        let d = decompose(&y, m).unwrap_or_else(|e| panic!("{name}: {e}"));
        close(
            &format!("{name} trend"),
            &d.trend,
            &floats(&s["decomposition"]["trend"]),
            1e-10,
        );
        close(
            &format!("{name} seasonal"),
            &d.seasonal,
            &floats(&s["decomposition"]["seasonal"]),
            1e-10,
        );
        close(
            &format!("{name} resid"),
            &d.resid,
            &floats(&s["decomposition"]["resid"]),
            1e-10,
        );
        checked += 1;
    });
    assert_eq!(checked, 4);
}

#[test]
fn students_t_quantiles_match_scipy() {
    for q in expected()["t_quantiles"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let (p, df, want) = (
            q[0].as_f64().unwrap_or(0.0),
            q[1].as_f64().unwrap_or(0.0),
            q[2].as_f64().unwrap_or(0.0),
        );
        let got = StudentsT::new(0.0, 1.0, df)
            .map(|d| d.inverse_cdf(p))
            .unwrap_or(f64::NAN);
        assert!(
            (got - want).abs() <= 1e-8 * want.abs().max(1.0),
            "t({df}) quantile {p}: {got} vs scipy {want}"
        );
    }
}

#[test]
fn generalized_esd_matches_the_scipy_reference() {
    each_series(|name, s, y, m| {
        let (resid, key) = if m >= 2 {
            (floats(&s["decomposition"]["resid"]), "shesd")
        } else {
            let med = barecount_core::timeseries::median(&y);
            (y.iter().map(|v| v - med).collect::<Vec<_>>(), "esd")
        };
        let max = ((0.1 * y.len() as f64) as usize).max(1);
        let got = generalized_esd(&resid, max, 0.05);
        let want = &s[key];
        close(
            &format!("{name} ESD statistics"),
            &got.statistics,
            &floats(&want["statistics"]),
            1e-9,
        );
        close(
            &format!("{name} ESD critical values"),
            &got.critical,
            &floats(&want["critical"]),
            1e-8,
        );
        let order: Vec<usize> = floats(&want["order"]).iter().map(|v| *v as usize).collect();
        assert_eq!(got.order, order, "{name}: removal order");
        let anomalies: Vec<usize> = floats(&want["anomalies"])
            .iter()
            .map(|v| *v as usize)
            .collect();
        assert_eq!(got.anomalies, anomalies, "{name}: anomalies");
        if m >= 2 {
            return; // the detector's decomposition takes per-phase medians (robust), not statsmodels' means
        }
        // the detector built on it flags the same points
        let method = AnomalyMethod::Esd {
            season: m,
            max_share: 0.1,
            alpha: 0.05,
        };
        let flagged: Vec<usize> = detect(&y, method)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_anomaly)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(flagged, anomalies, "{name}: detect(esd)");
    });
}

#[test]
fn a_spike_in_a_seasonal_series_is_found_by_every_method() {
    let e = expected();
    let mut y = floats(&e["series"]["co2_monthly"]["values"]);
    y[150] += 4.0; // ~1.5 % on a series whose seasonal swing is ~7 ppm
    for name in ["seasonal", "esd"] {
        let method = AnomalyMethod::parse(name, 12, None, None, None)
            .unwrap_or(AnomalyMethod::Mad { threshold: 1.0 });
        let flagged: Vec<usize> = detect(&y, method)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_anomaly)
            .map(|(i, _)| i)
            .collect();
        assert!(
            flagged.contains(&150),
            "{name} finds the spike: {flagged:?}"
        );
        assert_eq!(
            flagged,
            [150],
            "{name} flags nothing else (not the same month of other years)"
        );
    }
    // the plain MAD score cannot see it: the trend and season dominate
    let plain = detect(&y, AnomalyMethod::Mad { threshold: 3.5 }).unwrap_or_default();
    assert!(!plain[150].is_anomaly);
}

fn spec_of(v: &Value, m: usize) -> Spec {
    let trend = match (v["trend"].as_str(), v["damped"].as_bool()) {
        (None, _) => Trend::None,
        (Some(_), Some(true)) => Trend::Damped,
        _ => Trend::Add,
    };
    let season = match v["seasonal"].as_str() {
        Some("add") => Season::Add,
        Some("mul") => Season::Mul,
        _ => Season::None,
    };
    Spec {
        error: Error::Add,
        trend,
        season,
        m,
    }
}

fn params_of(v: &Value) -> Params {
    let p = &v["params"];
    let mut seasonal = floats(&p["seasonal_states"]);
    seasonal.reverse(); // statsmodels lists them newest first
    Params {
        alpha: p["alpha"].as_f64().unwrap_or(0.0),
        beta: p["beta"].as_f64().unwrap_or(0.0),
        gamma: p["gamma"].as_f64().unwrap_or(0.0),
        phi: p["phi"].as_f64().unwrap_or(1.0),
        level: p["level"].as_f64().unwrap_or(0.0),
        slope: p["slope"].as_f64().unwrap_or(0.0),
        seasonal,
    }
}

#[test]
fn ets_recursions_and_intervals_match_statsmodels_with_its_parameters() {
    let mut models = 0;
    each_series(|name, s, y, m| {
        for v in s["ets"].as_array().cloned().unwrap_or_default() {
            let spec = spec_of(&v, m);
            let p = params_of(&v);
            let f = filter(&spec, &p, &y);
            let what = format!("{name} {}", spec.name());
            close(
                &format!("{what} fitted"),
                &f.fitted,
                &floats(&v["fitted"]),
                1e-9,
            );
            assert!(
                (f.sse - v["sse"].as_f64().unwrap_or(0.0)).abs() <= 1e-7 * f.sse,
                "{what} sse"
            );
            let want = floats(&v["forecast"]);
            let fc = predict(&spec, &p, &f, y.len(), want.len());
            close(&format!("{what} forecast"), &fc.point, &want, 1e-9);
            if spec.season != Season::Mul {
                // statsmodels simulates the intervals of multiplicative models; additive ones are exact
                for band in ["lo80", "hi80", "lo95", "hi95"] {
                    let got = match band {
                        "lo80" => &fc.lo80,
                        "hi80" => &fc.hi80,
                        "lo95" => &fc.lo95,
                        _ => &fc.hi95,
                    };
                    close(&format!("{what} {band}"), got, &floats(&v[band]), 1e-8);
                }
            }
            models += 1;
        }
    });
    assert_eq!(models, 3 * 4 + 2 * 2, "models compared");
}

#[test]
fn least_squares_fits_come_close_to_statsmodels_maximum_likelihood() {
    let mut ratios = vec![];
    each_series(|name, s, y, m| {
        for v in s["ets"].as_array().cloned().unwrap_or_default() {
            let spec = spec_of(&v, m);
            let (_, f) = fit(&spec, &y).unwrap_or_else(|e| panic!("{name}: {e}"));
            let theirs = v["sse"].as_f64().unwrap_or(0.0);
            let ratio = f.sse / theirs;
            println!(
                "{name:>18} {:<12} SSE ours/statsmodels {ratio:.4}",
                spec.name()
            );
            ratios.push(ratio);
        }
    });
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    assert!(median <= 1.001, "median SSE ratio {median}");
    assert!(
        ratios.iter().all(|r| *r <= 1.02),
        "worst SSE ratio {:?}",
        ratios.last()
    );
}

#[test]
fn baselines_follow_the_textbook_formulas() {
    let y = [10.0, 12.0, 14.0, 11.0, 13.0, 15.0, 12.0, 14.0, 16.0];
    let sn = forecast(&y, 3, 4, Method::SeasonalNaive).unwrap_or_default();
    assert_eq!(sn.point, vec![12.0, 14.0, 16.0, 12.0]);
    // residuals y_t - y_{t-3}: all 1; sigma 1; the second season's step widens by sqrt(2)
    close(
        "seasonal naive hi95",
        &sn.hi95,
        &[
            12.0 + 1.959963984540054,
            14.0 + 1.959963984540054,
            16.0 + 1.959963984540054,
            12.0 + 1.959963984540054 * 2f64.sqrt(),
        ],
        1e-12,
    );
    let d = forecast(&y, 1, 2, Method::Drift).unwrap_or_default();
    close("drift", &d.point, &[16.75, 17.5], 1e-12);
    let nv = forecast(&y, 1, 2, Method::Naive).unwrap_or_default();
    assert_eq!(nv.point, vec![16.0, 16.0]);
}

#[test]
fn auto_chooses_a_seasonal_model_for_a_seasonal_series_and_beats_the_naive_baseline() {
    let e = expected();
    let y = floats(&e["series"]["co2_monthly"]["values"]);
    let (train, test) = y.split_at(y.len() - 24);
    let fc = forecast(train, 12, 24, Method::Auto).unwrap_or_default();
    // a combination, the lowest AICc first: "ETS(A,A,A) 0.71 + ETS(M,A,M) 0.20 + ..."
    let lead = fc.model.split(" + ").next().unwrap_or_default();
    assert!(
        lead.contains(",A) ") || lead.contains(",M) "),
        "{}",
        fc.model
    );
    let one = forecast(train, 12, 24, Method::BestEts).unwrap_or_default();
    assert!(
        one.model.ends_with(",A)") || one.model.ends_with(",M)"),
        "{}",
        one.model
    );
    let snaive = forecast(train, 12, 24, Method::SeasonalNaive).unwrap_or_default();
    let ours = accuracy::mase(train, test, &fc.point, 12).unwrap_or(f64::MAX);
    let base = accuracy::mase(train, test, &snaive.point, 12).unwrap_or(0.0);
    assert!(ours < base, "MASE {ours} vs seasonal naive {base}");
    // 95 % intervals contain at least 80 % of what happened
    let inside = test
        .iter()
        .zip(fc.lo95.iter().zip(&fc.hi95))
        .filter(|(v, (lo, hi))| *v >= *lo && *v <= *hi)
        .count();
    assert!(inside >= 19, "{inside} of 24 inside the 95 % interval");
}

#[test]
fn bad_series_and_options_are_refused_by_name() {
    assert_eq!(
        decompose(&[1.0; 10], 12).err(),
        Some(SeriesError::TooShort {
            method: "a seasonal decomposition with season 12".into(),
            need: 24,
            have: 10
        })
    );
    assert_eq!(
        detect(
            &[1.0, f64::NAN, 2.0, 3.0],
            AnomalyMethod::Mad { threshold: 3.0 }
        )
        .err(),
        Some(SeriesError::NotFinite(1))
    );
    assert!(matches!(
        AnomalyMethod::parse("zscore", 1, None, None, None),
        Err(SeriesError::Unknown { .. })
    ));
    assert!(matches!(
        AnomalyMethod::parse("mad", 1, Some(-1.0), None, None),
        Err(SeriesError::BadOption { .. })
    ));
    assert!(matches!(
        AnomalyMethod::parse("esd", 1, None, Some(0.9), None),
        Err(SeriesError::BadOption { .. })
    ));
    let mul = Method::Ets(Spec {
        error: Error::Add,
        trend: Trend::Add,
        season: Season::Mul,
        m: 4,
    });
    let y: Vec<f64> = (0..16).map(|i| (i % 4) as f64).collect();
    assert!(matches!(
        forecast(&y, 4, 4, mul),
        Err(SeriesError::NotPositive { at: 0, .. })
    ));
    assert!(matches!(
        ets::Method::parse("arima", 12),
        Err(SeriesError::Unknown { .. })
    ));
    // a constant series: no anomalies, a flat forecast, no NaN
    let flat = [5.0; 30];
    assert!(detect(&flat, AnomalyMethod::Mad { threshold: 3.5 })
        .unwrap_or_default()
        .iter()
        .all(|p| !p.is_anomaly && p.score == 0.0));
    let fc = forecast(&flat, 1, 3, Method::Auto).unwrap_or_default();
    assert!(
        fc.point.iter().all(|v| (v - 5.0).abs() < 1e-6),
        "{:?}",
        fc.point
    );
}

/// Not a benchmark (see bench/): a quick look at the cost of one auto fit, with
/// `cargo test --release -p barecount-core --test timeseries -- --ignored --nocapture`.
#[test]
#[ignore]
fn auto_fit_cost() {
    let e = expected();
    let y = floats(&e["series"]["co2_monthly"]["values"]);
    let t = std::time::Instant::now();
    let mut n = 0;
    for start in 0..100 {
        let s = &y[start..start + 60];
        n += forecast(s, 12, 12, Method::Auto)
            .map(|f| f.point.len())
            .unwrap_or(0);
    }
    println!(
        "{:.2} ms per auto fit of 60 points ({n})",
        t.elapsed().as_secs_f64() * 10.0
    );
}

/// The benchmark's accuracy set: the six statsmodels series and 300 retail-like monthly series
/// of 84 months (bench/src/actions.rs makes the same), each with its held-out tail (the last two
/// seasons, or 8 points).
fn accuracy_set() -> Vec<(String, usize, Vec<f64>, Vec<f64>)> {
    use barecount_core::timeseries::synthetic::{retail, Rng};
    let mut sets: Vec<(String, usize, Vec<f64>)> = vec![];
    for (name, s) in expected()["series"]
        .as_object()
        .cloned()
        .unwrap_or_default()
    {
        sets.push((
            name,
            s["m"].as_u64().unwrap_or(1) as usize,
            floats(&s["values"]),
        ));
    }
    let mut rng = Rng(7);
    for i in 0..300 {
        sets.push((format!("retail_{i:03}"), 12, retail(&mut rng, 84)));
    }
    sets.into_iter()
        .map(|(name, m, y)| {
            let h = if m > 1 { 2 * m } else { 8 };
            let (train, test) = y.split_at(y.len() - h);
            (name, m, train.to_vec(), test.to_vec())
        })
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let k = v.len();
    (v[(k - 1) / 2] + v[k / 2]) / 2.0
}

/// `auto` against statsforecast 2.1.1's AutoETS on the benchmark's 306 held-out series: its
/// MASE per series is checked in (tests/data/autoets_accuracy.json, written by
/// bench/python/forecast_baseline.py from the benchmark's run, with each training series' sum
/// to prove the series are the same). The forecasts issue's aim: no worse on the median series,
/// by MASE and by sMAPE. The geometric mean of the per-series MASE ratios must not exceed 1.
/// (`ets`, the lowest AICc alone, as `auto` was before it combined three models: median MASE
/// 0.7865 against 0.7873 but median sMAPE 4.78 against 4.68, geometric mean 1.0007; before its
/// candidates were compared on whole-series seasonal states: median MASE 0.7895.)
#[test]
fn auto_is_on_par_with_autoets() {
    let theirs: Value =
        serde_json::from_str(include_str!("data/autoets_accuracy.json")).unwrap_or(Value::Null);
    let (mut ours_all, mut theirs_all) = (vec![], vec![]);
    let (mut ours_smape, mut theirs_smape) = (vec![], vec![]);
    let mut log_ratio = 0.0;
    for (name, m, train, test) in accuracy_set() {
        let t = &theirs[name.as_str()];
        let sum: f64 = train.iter().sum();
        let want = t["train_sum"].as_f64().unwrap_or(f64::NAN);
        assert!(
            (sum - want).abs() <= 1e-9 * want.abs(),
            "{name}: not the series AutoETS was measured on ({sum} vs {want})"
        );
        let f = forecast(&train, m, test.len(), Method::Auto).unwrap_or_default();
        let ours = accuracy::mase(&train, &test, &f.point, m).unwrap_or(f64::NAN);
        let autoets = t["mase"].as_f64().unwrap_or(f64::NAN);
        ours_smape.push(accuracy::smape(&test, &f.point));
        theirs_smape.push(t["smape"].as_f64().unwrap_or(f64::NAN));
        log_ratio += (ours / autoets).ln();
        ours_all.push(ours);
        theirs_all.push(autoets);
    }
    let n = ours_all.len();
    let (mut o26, mut t26) = (ours_all[..26].to_vec(), theirs_all[..26].to_vec());
    let (o, t) = (median(&mut ours_all), median(&mut theirs_all));
    let (so, st) = (median(&mut ours_smape), median(&mut theirs_smape));
    println!(
        "median MASE over {n}: ours {o:.4}, AutoETS {t:.4}; median sMAPE ours {so:.3}, AutoETS {st:.3}; geometric mean of the ratios {:.4}; first 26: ours {:.4}, AutoETS {:.4}",
        (log_ratio / n as f64).exp(),
        median(&mut o26),
        median(&mut t26)
    );
    assert_eq!(n, 306);
    assert!(o <= t, "median MASE {o} is worse than AutoETS's {t}");
    assert!(so <= st, "median sMAPE {so} is worse than AutoETS's {st}");
    let mean = (log_ratio / n as f64).exp();
    assert!(mean <= 1.0, "geometric mean of MASE ours / AutoETS {mean}");
}

/// `auto` combines the three lowest-AICc models by their Akaike weights, which sum to one; its
/// intervals (the weighted mixture's) nest around the combined point; `ets` is the best alone.
#[test]
fn auto_combines_three_models_by_akaike_weights() {
    use barecount_core::timeseries::synthetic::{retail, Rng};
    let mut rng = Rng(11);
    let y = retail(&mut rng, 60);
    let auto = forecast(&y, 12, 12, Method::parse("auto", 12).unwrap()).unwrap();
    let one = forecast(&y, 12, 12, Method::parse("ets", 12).unwrap()).unwrap();
    let members: Vec<(&str, f64)> = auto
        .model
        .split(" + ")
        .map(|m| {
            let (name, w) = m.rsplit_once(' ').unwrap();
            (name, w.parse::<f64>().unwrap())
        })
        .collect();
    assert_eq!(members.len(), 3, "{}", auto.model);
    let total: f64 = members.iter().map(|m| m.1).sum();
    assert!(
        (total - 1.0).abs() <= 0.015,
        "{} sums to {total}",
        auto.model
    );
    assert_eq!(members[0].0, one.model, "the lowest AICc leads");
    assert!(members.iter().all(|m| m.0.starts_with("ETS(")));
    assert_ne!(members[0].0, members[1].0);
    assert_ne!(auto.point, one.point, "combined, not the best alone");
    for i in 0..12 {
        assert!(
            auto.lo95[i] < auto.lo80[i]
                && auto.lo80[i] < auto.point[i]
                && auto.point[i] < auto.hi80[i]
                && auto.hi80[i] < auto.hi95[i],
            "step {i}"
        );
    }
    assert_eq!(auto.aicc, one.aicc, "the best member's AICc");
}

/// Every ETS model by Hyndman's letters; anything else is refused with the list; relative errors
/// need a positive series.
#[test]
fn ets_models_by_their_letters() {
    let spec = |error, trend, season| {
        Method::Ets(Spec {
            error,
            trend,
            season,
            m: 12,
        })
    };
    let cases = [
        ("ets_ann", spec(Error::Add, Trend::None, Season::None)),
        ("ets_mam", spec(Error::Mul, Trend::Add, Season::Mul)),
        ("ets_madm", spec(Error::Mul, Trend::Damped, Season::Mul)),
        ("ets_aada", spec(Error::Add, Trend::Damped, Season::Add)),
        ("ets_mnn", spec(Error::Mul, Trend::None, Season::None)),
        ("holt", spec(Error::Add, Trend::Add, Season::None)),
    ];
    for (name, want) in cases {
        assert_eq!(Method::parse(name, 12).ok(), Some(want), "{name}");
    }
    for bad in [
        "ets_", "ets_x", "ets_mamm", "ets_md", "ets_MAM", "ets_mxn", "ets_a",
    ] {
        assert!(
            matches!(Method::parse(bad, 12), Err(SeriesError::Unknown { .. })),
            "{bad}"
        );
    }
    let y: Vec<f64> = (0..30).map(|i| 10.0 + (i % 12) as f64 - 3.0).collect();
    let mut negative = y.clone();
    negative[5] = -1.0;
    let mnn = Method::parse("ets_mnn", 12).unwrap();
    assert!(matches!(
        forecast(&negative, 12, 3, mnn),
        Err(SeriesError::NotPositive { at: 5, .. })
    ));
    let f = forecast(&y, 12, 3, Method::parse("ets_mam", 12).unwrap()).unwrap();
    assert_eq!(f.model, "ETS(M,A,M)");
    assert!(f.point.iter().all(|v| v.is_finite()));
    assert!(f.lo95[0] < f.point[0] && f.point[0] < f.hi95[0]);
}

/// A weekly pattern by week of the year (a holiday peak from week 45), over retail years of 52,
/// 53, 52 and 52 weeks: the values and which are a 53rd week.
fn weeks_with_a_53rd(noise: bool) -> (Vec<f64>, Vec<bool>) {
    let pattern = |w: usize| -> f64 {
        let base = 1000.0 + 5.0 * (w as f64 * 0.7).sin() * 10.0;
        if w >= 45 {
            base + 400.0 + 60.0 * (w - 45) as f64
        } else {
            base
        }
    };
    let mut rng = barecount_core::timeseries::synthetic::Rng(53);
    let (mut y, mut extra) = (vec![], vec![]);
    let mut t = 0usize;
    for weeks in [52, 53, 52, 52] {
        for w in 1..=weeks {
            // week 53 sits between week 52 and the next week 1
            let v = if w == 53 { pattern(52) } else { pattern(w) };
            let wobble = if noise { 8.0 * rng.normal() } else { 0.0 };
            y.push(v + wobble + 0.5 * t as f64);
            extra.push(w == 53);
            t += 1;
        }
    }
    (y, extra)
}

/// A 53rd week must not shift the season: with it marked, the seasonal detectors find exactly a
/// spike; taking the series as plain 52-week cycles (the 53rd week unmarked) puts every week
/// after it out of phase and calls the holiday weeks anomalies.
#[test]
fn a_53rd_week_keeps_the_season_in_phase_for_anomalies() {
    use barecount_core::timeseries::anomaly::detect_calendar;
    let (mut y, extra) = weeks_with_a_53rd(true);
    let spike = 52 + 53 + 20;
    y[spike] += 300.0;
    for method in [
        AnomalyMethod::parse("seasonal", 52, None, None, None).unwrap(),
        AnomalyMethod::parse("esd", 52, None, None, None).unwrap(),
    ] {
        let marked = detect_calendar(&y, &extra, method).unwrap();
        let found: Vec<usize> = (0..y.len()).filter(|&t| marked[t].is_anomaly).collect();
        assert_eq!(found, [spike], "{}", method.name());
        // the 53rd week is expected in week 52's season, near week 52's expectation
        let w53 = 52 + 52;
        assert!(
            (marked[w53].expected - marked[w53 - 1].expected).abs() < 30.0,
            "{} vs {}",
            marked[w53].expected,
            marked[w53 - 1].expected
        );
        let plain = detect(&y, method).unwrap();
        let wrong = (0..y.len())
            .filter(|&t| plain[t].is_anomaly && t != spike)
            .count();
        assert!(
            wrong > 0,
            "{}: unmarked, the phase shift goes unseen",
            method.name()
        );
    }
    // the same series without a 53rd week marked anywhere is the plain detector's answer
    let m = AnomalyMethod::parse("seasonal", 52, None, None, None).unwrap();
    assert_eq!(
        barecount_core::timeseries::anomaly::detect_calendar(&y, &[], m).unwrap(),
        detect(&y, m).unwrap()
    );
}

/// Forecasting across a 53rd week: fitted without the 53rd weeks, the model's seasons stay in
/// phase (seasonal naive repeats last year's week 1 for week 1); a 53rd week ahead repeats the
/// week before it (week 52's season).
#[test]
fn a_53rd_week_keeps_the_season_in_phase_for_forecasts() {
    use barecount_core::timeseries::ets::forecast_calendar;
    let (y, extra) = weeks_with_a_53rd(false);
    // the last year was 52 weeks; ahead: weeks 1..=3 of a 52-week year
    let ahead = [false, false, false];
    let snaive = Method::SeasonalNaive;
    let f = forecast_calendar(&y, &extra, &ahead, 52, snaive).unwrap();
    let n = y.len();
    let last_year = &y[n - 52..];
    close("seasonal naive in phase", &f.point, &last_year[..3], 1e-12);
    // a 53rd week ahead: the history ends at week 51; ahead are 52, 53, 1, 2
    let cut = n - 1;
    let ahead = [false, true, false, false];
    let f = forecast_calendar(&y[..cut], &extra[..cut], &ahead, 52, snaive).unwrap();
    let kept: Vec<f64> = y[..cut]
        .iter()
        .zip(&extra[..cut])
        .filter(|(_, e)| !**e)
        .map(|(v, _)| *v)
        .collect();
    let plain = forecast(&kept, 52, 3, snaive).unwrap();
    close(
        "around the 53rd week",
        &f.point,
        &[
            plain.point[0],
            plain.point[0],
            plain.point[1],
            plain.point[2],
        ],
        1e-12,
    );
    assert!(f.lo95[1] < f.point[1] && f.point[1] < f.hi95[1]);
    // an ETS model too: every step finite, intervals around the point
    let a = forecast_calendar(&y[..cut], &extra[..cut], &ahead, 52, Method::Auto).unwrap();
    assert_eq!(a.point.len(), 4);
    assert!(a.point.iter().all(|v| v.is_finite()));
    // a mark for every point, or none
    assert!(forecast_calendar(&y, &extra[..10], &ahead, 52, snaive).is_err());
}
