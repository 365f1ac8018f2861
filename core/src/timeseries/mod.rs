//! KPI series math: anomaly detection and forecasting, with no Postgres.
//!
//! - [`decompose`]: classical additive decomposition (centred moving-average trend, extrapolated
//!   at both ends, seasonal means), as statsmodels' `seasonal_decompose(extrapolate_trend=period)`.
//! - [`anomaly`]: robust z-scores on the MAD, seasonal residuals, and the generalized ESD test in
//!   its hybrid form (median and MAD: Twitter's S-H-ESD).
//! - [`ets`]: exponential smoothing state-space models with additive errors (Holt-Winters with
//!   additive or multiplicative seasonality, damped trend), fitted by least squares, with
//!   prediction intervals; seasonal-naive and drift baselines; automatic choice by AICc.
//!
//! Every routine is checked against numbers computed by statsmodels and scipy on series that
//! statsmodels ships (`core/tests/data/timeseries_expected.json`).

pub mod anomaly;
pub mod decompose;
pub mod ets;
mod optimize;
pub mod synthetic;

use thiserror::Error;

/// What can be wrong with a series or a method's options.
#[derive(Debug, Error, PartialEq)]
pub enum SeriesError {
    #[error("{method} needs at least {need} points, the series has {have}")]
    TooShort {
        method: String,
        need: usize,
        have: usize,
    },
    #[error("the series has a missing or infinite value at position {0}")]
    NotFinite(usize),
    #[error("{method} needs positive values; the series has {value} at position {at}")]
    NotPositive {
        method: String,
        value: f64,
        at: usize,
    },
    #[error("unknown {what} \"{got}\"; expected one of: {expected}")]
    Unknown {
        what: String,
        got: String,
        expected: String,
    },
    #[error("option \"{option}\" {problem}")]
    BadOption { option: String, problem: String },
}

/// `extra` marks the 53rd weeks of a series of `n` points: one mark per point, or none.
pub(crate) fn check_marks(extra: &[bool], n: usize) -> Result<(), SeriesError> {
    if extra.is_empty() || extra.len() == n {
        return Ok(());
    }
    Err(SeriesError::BadOption {
        option: "extra".into(),
        problem: format!("marks {} points of a series of {n}", extra.len()),
    })
}

pub(crate) fn check_finite(y: &[f64]) -> Result<(), SeriesError> {
    match y.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(SeriesError::NotFinite(i)),
        None => Ok(()),
    }
}

/// The median of a slice (NaN-free); 0 for an empty one.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if !n.is_multiple_of(2) {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The median absolute deviation scaled to estimate a normal's standard deviation
/// (scipy's `median_abs_deviation(scale="normal")`: MAD / Φ⁻¹(3/4)).
pub fn mad_normal(v: &[f64], centre: f64) -> f64 {
    let dev: Vec<f64> = v.iter().map(|x| (x - centre).abs()).collect();
    median(&dev) / 0.674_489_750_196_081_7
}

/// Accuracy measures of a forecast against what happened.
pub mod accuracy {
    /// Mean absolute scaled error: the forecast's mean absolute error over the in-sample
    /// seasonal-naive one-step error (Hyndman and Koehler 2006). None when the training series
    /// is constant at lag m.
    pub fn mase(train: &[f64], actual: &[f64], forecast: &[f64], m: usize) -> Option<f64> {
        let m = m.max(1);
        if train.len() <= m || actual.is_empty() {
            return None;
        }
        let scale = train
            .windows(m + 1)
            .map(|w| (w[m] - w[0]).abs())
            .sum::<f64>()
            / (train.len() - m) as f64;
        if scale == 0.0 {
            return None;
        }
        let mae = actual
            .iter()
            .zip(forecast)
            .map(|(a, f)| (a - f).abs())
            .sum::<f64>()
            / actual.len() as f64;
        Some(mae / scale)
    }

    /// Symmetric mean absolute percentage error in percent (0 to 200), as in the M4 competition.
    pub fn smape(actual: &[f64], forecast: &[f64]) -> f64 {
        let n = actual.len().max(1) as f64;
        200.0
            * actual
                .iter()
                .zip(forecast)
                .map(|(a, f)| {
                    let d = a.abs() + f.abs();
                    if d == 0.0 {
                        0.0
                    } else {
                        (a - f).abs() / d
                    }
                })
                .sum::<f64>()
            / n
    }
}
