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
            v.iter().sum::<f64>() / v.len() as f64
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
