//! Classical additive decomposition: trend by a centred moving average of the season's length
//! (a 2×m average for even m), its missing ends extrapolated by least squares on the m closest
//! defined points, seasonal component as the per-phase mean of the detrended series (centred
//! to sum to zero), residual the rest. statsmodels' `seasonal_decompose(x, period=m,
//! extrapolate_trend="period")`, to the last digit.

use super::{check_finite, SeriesError};

/// A series split into trend, seasonal and residual components.
#[derive(Debug, Clone, PartialEq)]
pub struct Decomposition {
    pub trend: Vec<f64>,
    pub seasonal: Vec<f64>,
    pub resid: Vec<f64>,
    /// The seasonal component per phase (index = position modulo m).
    pub phases: Vec<f64>,
}

/// Decomposes `y` with season length `m` (≥ 2); needs two full seasons.
pub fn decompose(y: &[f64], m: usize) -> Result<Decomposition, SeriesError> {
    decompose_with(y, m, false)
}

/// As [`decompose`]; when `robust`, one round of robustness: a first fit takes per-phase
/// medians, points whose residual from it is an outlier (robust z-score over 4) are replaced by
/// their fitted value, and the series is decomposed again (with means), so a spike stays in its own period's residual instead of leaking into
/// the trend around it and, as a share of itself, into the same phase of every other season
/// (what anomaly detection needs; STL's robustness weights serve the same end). The residual
/// is then the original series less the second fit.
pub fn decompose_with(y: &[f64], m: usize, robust: bool) -> Result<Decomposition, SeriesError> {
    if !robust {
        return classical(y, m, false);
    }
    // first fit with per-phase medians, which a spike cannot move
    let first = classical(y, m, true)?;
    let med = super::median(&first.resid);
    // the scale from the classical fit: with few seasons a median fit leaves one residual per
    // phase at exactly zero, and its MAD would call ordinary noise an outlier
    let plain = classical(y, m, false)?;
    let s = super::mad_normal(&plain.resid, super::median(&plain.resid));
    let cleaned: Vec<f64> = y
        .iter()
        .enumerate()
        .map(|(t, v)| {
            if s > 0.0 && ((first.resid[t] - med) / s).abs() > 4.0 {
                first.trend[t] + first.seasonal[t]
            } else {
                *v
            }
        })
        .collect();
    let mut second = classical(&cleaned, m, false)?;
    second.resid = y
        .iter()
        .enumerate()
        .map(|(t, v)| v - second.trend[t] - second.seasonal[t])
        .collect();
    Ok(second)
}

fn classical(y: &[f64], m: usize, medians: bool) -> Result<Decomposition, SeriesError> {
    check_finite(y)?;
    if m < 2 {
        return Err(SeriesError::BadOption {
            option: "season".into(),
            problem: format!("must be at least 2 for a seasonal decomposition, not {m}"),
        });
    }
    let n = y.len();
    if n < 2 * m {
        return Err(SeriesError::TooShort {
            method: format!("a seasonal decomposition with season {m}"),
            need: 2 * m,
            have: n,
        });
    }
    let filt: Vec<f64> = if m.is_multiple_of(2) {
        let mut f = vec![1.0 / m as f64; m + 1];
        f[0] = 0.5 / m as f64;
        f[m] = 0.5 / m as f64;
        f
    } else {
        vec![1.0 / m as f64; m]
    };
    let half = filt.len() / 2;
    let mut trend = vec![f64::NAN; n];
    for (t, slot) in trend
        .iter_mut()
        .enumerate()
        .take(n - (filt.len() - 1 - half))
        .skip(half)
    {
        *slot = filt
            .iter()
            .enumerate()
            .map(|(j, w)| w * y[t + j - half])
            .sum();
    }
    extrapolate(&mut trend, m);
    let detrended: Vec<f64> = y.iter().zip(&trend).map(|(a, b)| a - b).collect();
    let mut phases: Vec<f64> = (0..m)
        .map(|p| {
            let v: Vec<f64> = detrended.iter().skip(p).step_by(m).copied().collect();
            if medians {
                super::median(&v)
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        })
        .collect();
    let mean = phases.iter().sum::<f64>() / m as f64;
    phases.iter_mut().for_each(|p| *p -= mean);
    let seasonal: Vec<f64> = (0..n).map(|t| phases[t % m]).collect();
    let resid = detrended
        .iter()
        .zip(&seasonal)
        .map(|(d, s)| d - s)
        .collect();
    Ok(Decomposition {
        trend,
        seasonal,
        resid,
        phases,
    })
}

/// statsmodels' `_extrapolate_trend(trend, m)`: a line through the `m` defined points closest
/// to each end (as statsmodels counts them: the last defined point is left out at the back).
fn extrapolate(trend: &mut [f64], m: usize) {
    let n = trend.len();
    let (Some(front), Some(back)) = (
        trend.iter().position(|v| !v.is_nan()),
        trend.iter().rposition(|v| !v.is_nan()),
    ) else {
        return;
    };
    let front_last = (front + m).min(back);
    let back_first = front.max(back.saturating_sub(m));
    let (k, c) = line(trend, front, front_last);
    for (t, v) in trend.iter_mut().enumerate().take(front) {
        *v = k * t as f64 + c;
    }
    let (k, c) = line(trend, back_first, back);
    for (t, v) in trend.iter_mut().enumerate().take(n).skip(back + 1) {
        *v = k * t as f64 + c;
    }
}

/// Least-squares line through (t, v[t]) for t in [from, to).
fn line(v: &[f64], from: usize, to: usize) -> (f64, f64) {
    let cnt = (to - from) as f64;
    if cnt < 2.0 {
        return (0.0, v.get(from).copied().unwrap_or(0.0));
    }
    let mt = (from..to).map(|t| t as f64).sum::<f64>() / cnt;
    let mv = v[from..to].iter().sum::<f64>() / cnt;
    let sxy: f64 = (from..to).map(|t| (t as f64 - mt) * (v[t] - mv)).sum();
    let sxx: f64 = (from..to).map(|t| (t as f64 - mt).powi(2)).sum();
    let k = sxy / sxx;
    (k, mv - k * mt)
}
