//! Anomaly detection on a KPI series. Each method gives, per point, the value it expected, a
//! score and a verdict.

use statrs::distribution::{ContinuousCDF, StudentsT};

use super::decompose::decompose_with;
use super::{check_finite, mad_normal, median, SeriesError};

/// The detection methods.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// Robust z-score: (x − median) / MAD (scaled to the normal); anomalous when |z| > threshold.
    Mad { threshold: f64 },
    /// Residuals of a classical seasonal decomposition with the calendar's season length (with
    /// one round of robustness, see [`decompose_with`]), scored by their robust z-score.
    Seasonal { season: usize, threshold: f64 },
    /// Generalized ESD in its hybrid form on the decomposition's residuals (S-H-ESD): at most
    /// `max_share` of the points are anomalies, at significance `alpha`.
    Esd {
        season: usize,
        max_share: f64,
        alpha: f64,
    },
}

pub const METHODS: &str = "mad, seasonal, esd";

/// One point's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub expected: f64,
    pub score: f64,
    pub is_anomaly: bool,
}

impl Method {
    /// The method named `name` with its options (`threshold`, `max_share`, `alpha`) and the
    /// season length the calendar and grain give.
    pub fn parse(
        name: &str,
        season: usize,
        threshold: Option<f64>,
        max_share: Option<f64>,
        alpha: Option<f64>,
    ) -> Result<Method, SeriesError> {
        let bad = |option: &str, problem: String| SeriesError::BadOption {
            option: option.into(),
            problem,
        };
        let threshold = threshold.unwrap_or(3.5);
        if !(threshold.is_finite() && threshold > 0.0) {
            return Err(bad(
                "threshold",
                format!("must be a positive number, not {threshold}"),
            ));
        }
        let max_share = max_share.unwrap_or(0.1);
        if !(max_share > 0.0 && max_share <= 0.49) {
            return Err(bad(
                "max_share",
                format!("must be above 0 and at most 0.49, not {max_share}"),
            ));
        }
        let alpha = alpha.unwrap_or(0.05);
        if !(alpha > 0.0 && alpha < 0.5) {
            return Err(bad(
                "alpha",
                format!("must be between 0 and 0.5, not {alpha}"),
            ));
        }
        match name {
            "mad" => Ok(Method::Mad { threshold }),
            "seasonal" => Ok(Method::Seasonal { season, threshold }),
            "esd" => Ok(Method::Esd {
                season,
                max_share,
                alpha,
            }),
            other => Err(SeriesError::Unknown {
                what: "anomaly method".into(),
                got: other.into(),
                expected: METHODS.into(),
            }),
        }
    }

    /// The season length the method works with (1 for `mad`, which has none).
    pub fn season(&self) -> usize {
        match self {
            Method::Mad { .. } => 1,
            Method::Seasonal { season, .. } | Method::Esd { season, .. } => *season,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Method::Mad { .. } => "mad",
            Method::Seasonal { .. } => "seasonal",
            Method::Esd { .. } => "esd",
        }
    }
}

/// Robust z-scores of `v` around its median; zero everywhere when the MAD is zero and the
/// point equals the median, infinite when it differs (a constant series with one jump).
fn robust_z(v: &[f64]) -> (f64, Vec<f64>) {
    let med = median(v);
    let s = mad_normal(v, med);
    let z = v
        .iter()
        .map(|x| {
            let d = x - med;
            if s > 0.0 {
                d / s
            } else if d == 0.0 {
                0.0
            } else {
                d.signum() * f64::INFINITY
            }
        })
        .collect();
    (med, z)
}

/// Detects anomalies in `y` (in time order).
pub fn detect(y: &[f64], method: Method) -> Result<Vec<Point>, SeriesError> {
    detect_calendar(y, &[], method)
}

/// What the seasonal methods expect at each point: the decomposition's trend plus season.
/// Points marked `extra` (a 53rd week in a calendar of 52-week seasons) are left out of the
/// decomposition, so every other week keeps its phase across a 53-week year; each is expected
/// at the trend halfway between the weeks either side of it plus the season of the week before
/// it (week 52's: the 53rd week continues the year's end).
fn seasonal_expected(y: &[f64], extra: &[bool], season: usize) -> Result<Vec<f64>, SeriesError> {
    let kept: Vec<usize> = (0..y.len())
        .filter(|&t| !extra.get(t).copied().unwrap_or(false))
        .collect();
    let values: Vec<f64> = kept.iter().map(|&t| y[t]).collect();
    let d = decompose_with(&values, season, true)?;
    let mut expected = vec![f64::NAN; y.len()];
    for (k, &t) in kept.iter().enumerate() {
        expected[t] = d.trend[k] + d.seasonal[k];
    }
    for (t, slot) in expected.iter_mut().enumerate() {
        if slot.is_nan() {
            let before = kept.iter().rposition(|&k| k < t);
            let after = kept.iter().position(|&k| k > t);
            let trend = match (before, after) {
                (Some(b), Some(a)) => (d.trend[b] + d.trend[a]) / 2.0,
                (Some(k), None) | (None, Some(k)) => d.trend[k],
                (None, None) => f64::NAN,
            };
            *slot = trend + before.or(after).map_or(0.0, |k| d.seasonal[k]);
        }
    }
    Ok(expected)
}

/// As [`detect`], on a calendar whose weeks repeat every 52 but some years have 53: `extra`
/// marks the 53rd weeks (empty: none). The seasonal methods decompose the series without them
/// ([`seasonal_expected`]) and score every point, the 53rd weeks included, on its residual from
/// what they expected.
pub fn detect_calendar(
    y: &[f64],
    extra: &[bool],
    method: Method,
) -> Result<Vec<Point>, SeriesError> {
    check_finite(y)?;
    super::check_marks(extra, y.len())?;
    match method {
        Method::Mad { threshold } => {
            if y.len() < 3 {
                return Err(SeriesError::TooShort {
                    method: "mad".into(),
                    need: 3,
                    have: y.len(),
                });
            }
            let (med, z) = robust_z(y);
            Ok(z.into_iter()
                .map(|score| Point {
                    expected: med,
                    score,
                    is_anomaly: score.abs() > threshold,
                })
                .collect())
        }
        Method::Seasonal { season, threshold } => {
            let expected = seasonal_expected(y, extra, season)?;
            let resid: Vec<f64> = y.iter().zip(&expected).map(|(v, e)| v - e).collect();
            let (_, z) = robust_z(&resid);
            Ok(z.into_iter()
                .enumerate()
                .map(|(t, score)| Point {
                    expected: expected[t],
                    score,
                    is_anomaly: score.abs() > threshold,
                })
                .collect())
        }
        Method::Esd {
            season,
            max_share,
            alpha,
        } => {
            if y.len() < 5 {
                return Err(SeriesError::TooShort {
                    method: "esd".into(),
                    need: 5,
                    have: y.len(),
                });
            }
            // with a season: the decomposition's residual (trend and season removed; Twitter's
            // S-H-ESD removes the season and the median only, which misses spikes on a trend);
            // without: the deviation from the median
            let (expected, resid): (Vec<f64>, Vec<f64>) = if season >= 2 {
                let expected = seasonal_expected(y, extra, season)?;
                let resid = y.iter().zip(&expected).map(|(v, e)| v - e).collect();
                (expected, resid)
            } else {
                let med = median(y);
                (vec![med; y.len()], y.iter().map(|v| v - med).collect())
            };
            let max = ((max_share * y.len() as f64).floor() as usize).max(1);
            let found = generalized_esd(&resid, max, alpha).anomalies;
            let (_, z) = robust_z(&resid);
            Ok(z.into_iter()
                .enumerate()
                .map(|(t, score)| Point {
                    expected: expected[t],
                    score,
                    is_anomaly: found.contains(&t),
                })
                .collect())
        }
    }
}

/// The generalized ESD test's working: per step, the statistic, the critical value, the
/// position removed; and the anomalies (the positions removed up to the last step whose
/// statistic exceeded its critical value), in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Esd {
    pub statistics: Vec<f64>,
    pub critical: Vec<f64>,
    pub order: Vec<usize>,
    pub anomalies: Vec<usize>,
}

/// Rosner's generalized ESD test for up to `max` outliers, hybrid form: deviations from the
/// median over the normal-scaled MAD. Critical values from Student's t (statrs).
pub fn generalized_esd(r: &[f64], max: usize, alpha: f64) -> Esd {
    let n = r.len();
    let max = max.min(n.saturating_sub(3));
    let mut left: Vec<usize> = (0..n).collect();
    let mut out = Esd {
        statistics: vec![],
        critical: vec![],
        order: vec![],
        anomalies: vec![],
    };
    for i in 1..=max {
        let v: Vec<f64> = left.iter().map(|&t| r[t]).collect();
        let med = median(&v);
        let s = mad_normal(&v, med);
        let (j, dev) = v.iter().map(|x| (x - med).abs()).enumerate().fold(
            (0, f64::NEG_INFINITY),
            |best, (j, d)| if d > best.1 { (j, d) } else { best },
        );
        let stat = if s > 0.0 {
            dev / s
        } else if dev > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        let df = (n - i - 1) as f64;
        let p = 1.0 - alpha / (2.0 * (n - i + 1) as f64);
        let t = StudentsT::new(0.0, 1.0, df)
            .map(|d| d.inverse_cdf(p))
            .unwrap_or(f64::NAN);
        let crit = (n - i) as f64 * t / ((df + t * t) * (n - i + 1) as f64).sqrt();
        out.statistics.push(stat);
        out.critical.push(crit);
        out.order.push(left.remove(j));
    }
    let k = (0..out.statistics.len())
        .rev()
        .find(|&i| out.statistics[i] > out.critical[i])
        .map_or(0, |i| i + 1);
    out.anomalies = out.order[..k].to_vec();
    out.anomalies.sort_unstable();
    out
}
