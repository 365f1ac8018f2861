//! Exponential smoothing with additive errors (the ETS(A,·,·) state-space models of Hyndman et
//! al. 2008, in error-correction form, as statsmodels' `ETSModel(error="add")`): level, an
//! optional additive or damped trend, optional additive or multiplicative seasonality.
//!
//! Fitting minimises the sum of squared one-step errors (for additive errors the maximum
//! likelihood estimate) over the smoothing parameters, the damping and the initial level and
//! slope, by Nelder-Mead; the initial seasonal states come from a classical decomposition of
//! the first seasons (Hyndman's heuristic). `auto` picks the model with the lowest AICc.
//! Prediction intervals use the analytic variance of additive models (Hyndman et al. 2008,
//! class 1); for multiplicative seasonality that variance is scaled by the season's factor (an
//! approximation). Baselines: seasonal naive, naive and drift (Hyndman and Athanasopoulos,
//! "Forecasting: principles and practice", 5.5).

use super::decompose::decompose;
use super::optimize::nelder_mead;
use super::{check_finite, SeriesError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trend {
    None,
    Add,
    Damped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Season {
    None,
    Add,
    Mul,
}

/// A model: trend, seasonality and season length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub trend: Trend,
    pub season: Season,
    pub m: usize,
}

impl Spec {
    /// Hyndman's notation: ETS(A,Ad,M) and so on.
    pub fn name(&self) -> String {
        let t = match self.trend {
            Trend::None => "N",
            Trend::Add => "A",
            Trend::Damped => "Ad",
        };
        let s = match self.season {
            Season::None => "N",
            Season::Add => "A",
            Season::Mul => "M",
        };
        format!("ETS(A,{t},{s})")
    }
    fn seasonal(&self) -> bool {
        self.season != Season::None
    }
    fn m(&self) -> usize {
        if self.seasonal() {
            self.m
        } else {
            1
        }
    }
    /// Free parameters, as AICc counts them: smoothing, damping, initial states, and the variance.
    fn parameters(&self) -> usize {
        let smoothing = 1
            + usize::from(self.trend != Trend::None)
            + usize::from(self.seasonal())
            + usize::from(self.trend == Trend::Damped);
        let initial = 1
            + usize::from(self.trend != Trend::None)
            + if self.seasonal() { self.m - 1 } else { 0 };
        smoothing + initial + 1
    }
}

/// A model's parameters and initial states. `seasonal` holds the m initial seasonal states
/// oldest first: `seasonal[0]` is the state the first observation uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
    pub phi: f64,
    pub level: f64,
    pub slope: f64,
    pub seasonal: Vec<f64>,
}

/// The result of running a model over a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Filtered {
    pub fitted: Vec<f64>,
    pub sse: f64,
    level: f64,
    slope: f64,
    /// the latest seasonal state per phase, indexed by time modulo m
    ring: Vec<f64>,
}

fn damping(spec: &Spec, p: &Params) -> f64 {
    match spec.trend {
        Trend::None => 0.0,
        Trend::Add => 1.0,
        Trend::Damped => p.phi,
    }
}

/// Runs the model's recursions over `y`: one-step fitted values, their squared errors' sum,
/// and the final states. An impossible state (a multiplicative season over a level at or
/// below zero) gives an infinite SSE.
pub fn filter(spec: &Spec, p: &Params, y: &[f64]) -> Filtered {
    let m = spec.m();
    let phi = damping(spec, p);
    let (mut l, mut b) = (
        p.level,
        if spec.trend == Trend::None {
            0.0
        } else {
            p.slope
        },
    );
    let mut ring = if spec.seasonal() {
        p.seasonal.clone()
    } else {
        vec![0.0]
    };
    let mut fitted = Vec::with_capacity(y.len());
    let mut sse = 0.0;
    for (t, &v) in y.iter().enumerate() {
        let base = l + phi * b;
        let k = t % m;
        let s = ring[k];
        let yhat = match spec.season {
            Season::None => base,
            Season::Add => base + s,
            Season::Mul => base * s,
        };
        let e = v - yhat;
        fitted.push(yhat);
        sse += e * e;
        match spec.season {
            Season::None => {
                l = base + p.alpha * e;
                b = phi * b + p.beta * e;
            }
            Season::Add => {
                l = base + p.alpha * e;
                b = phi * b + p.beta * e;
                ring[k] = s + p.gamma * e;
            }
            Season::Mul => {
                if base <= 0.0 || s <= 0.0 {
                    sse = f64::INFINITY;
                    break;
                }
                // Holt-Winters' component form, as statsmodels: the season is updated from the
                // new level, s_t = gamma* y_t / l_t + (1 - gamma*) s_{t-m}, gamma* = gamma / (1 - alpha)
                l = base + p.alpha * e / s;
                b = phi * b + p.beta * e / s;
                let gamma_star = if p.alpha < 1.0 {
                    p.gamma / (1.0 - p.alpha)
                } else {
                    0.0
                };
                ring[k] = gamma_star * v / l + (1.0 - gamma_star) * s;
            }
        }
    }
    Filtered {
        fitted,
        sse,
        level: l,
        slope: b,
        ring,
    }
}

/// Point forecasts and 80 % and 95 % prediction intervals, one entry per step ahead.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Forecast {
    pub model: String,
    pub point: Vec<f64>,
    pub lo80: Vec<f64>,
    pub hi80: Vec<f64>,
    pub lo95: Vec<f64>,
    pub hi95: Vec<f64>,
    /// sum of squared one-step errors in the sample, and the AICc (ETS only)
    pub sse: f64,
    pub aicc: Option<f64>,
}

const Z80: f64 = 1.281_551_565_544_600_4;
const Z95: f64 = 1.959_963_984_540_054;

impl Forecast {
    fn with_sd(
        model: String,
        point: Vec<f64>,
        sd: &[f64],
        sse: f64,
        aicc: Option<f64>,
    ) -> Forecast {
        let band = |z: f64, sign: f64| -> Vec<f64> {
            point
                .iter()
                .zip(sd)
                .map(|(p, s)| p + sign * z * s)
                .collect()
        };
        Forecast {
            lo80: band(Z80, -1.0),
            hi80: band(Z80, 1.0),
            lo95: band(Z95, -1.0),
            hi95: band(Z95, 1.0),
            model,
            point,
            sse,
            aicc,
        }
    }
}

/// Forecasts `h` steps after a run of the model over the sample (`f` from [`filter`] with `p`).
pub fn predict(spec: &Spec, p: &Params, f: &Filtered, n: usize, h: usize) -> Forecast {
    let m = spec.m();
    let phi = damping(spec, p);
    let sigma2 = f.sse / n as f64;
    let (mut point, mut sd) = (Vec::with_capacity(h), Vec::with_capacity(h));
    let (mut phi_h, mut pw) = (0.0, 1.0);
    let mut sum_c2 = 0.0;
    for step in 1..=h {
        pw *= phi;
        phi_h += pw;
        let s = f.ring[(n + step - 1) % m];
        let base = f.level + phi_h * f.slope;
        let (y, scale) = match spec.season {
            Season::None => (base, 1.0),
            Season::Add => (base + s, 1.0),
            Season::Mul => (base * s, s),
        };
        point.push(y);
        sd.push((sigma2 * (1.0 + sum_c2)).sqrt() * scale);
        // c_j for j = step: alpha + beta * phi_j + gamma when j is a whole number of seasons
        let seasonal = if spec.seasonal() && step.is_multiple_of(m) {
            p.gamma
        } else {
            0.0
        };
        let c = p.alpha + p.beta * phi_h + seasonal;
        sum_c2 += c * c;
    }
    let k = spec.parameters() as f64;
    let nf = n as f64;
    let aic = nf * ((2.0 * std::f64::consts::PI * sigma2).ln() + 1.0) + 2.0 * k;
    let aicc = if nf - k - 1.0 > 0.0 {
        aic + 2.0 * k * (k + 1.0) / (nf - k - 1.0)
    } else {
        f64::INFINITY
    };
    Forecast::with_sd(spec.name(), point, &sd, f.sse, Some(aicc))
}

fn logistic(u: f64) -> f64 {
    1.0 / (1.0 + (-u).exp())
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

/// The starting states: seasonal factors from a classical decomposition of the first (up to
/// four) seasons, then a line through the seasonally adjusted first points.
fn initial_states(spec: &Spec, y: &[f64]) -> Result<(f64, f64, Vec<f64>), SeriesError> {
    let m = spec.m();
    let mut adjusted = y.to_vec();
    let mut seasonal = Vec::new();
    if spec.seasonal() {
        let k = (y.len() / m).min(4);
        let head = &y[..k * m];
        let d = decompose(head, m)?;
        seasonal = match spec.season {
            Season::Mul => {
                let ratios: Vec<f64> = (0..m)
                    .map(|ph| {
                        let v: Vec<f64> = (ph..head.len())
                            .step_by(m)
                            .map(|t| head[t] / d.trend[t])
                            .collect();
                        v.iter().sum::<f64>() / v.len() as f64
                    })
                    .collect();
                let mean = ratios.iter().sum::<f64>() / m as f64;
                ratios.iter().map(|r| r / mean).collect()
            }
            _ => d.phases.clone(),
        };
        for (t, a) in adjusted.iter_mut().enumerate() {
            match spec.season {
                Season::Mul => *a /= seasonal[t % m],
                _ => *a -= seasonal[t % m],
            }
        }
    }
    let take = if spec.seasonal() {
        (2 * m).min(y.len())
    } else {
        y.len().min(10)
    };
    let head = &adjusted[..take];
    let cnt = take as f64;
    let mt = (cnt - 1.0) / 2.0;
    let mv = head.iter().sum::<f64>() / cnt;
    let sxx: f64 = (0..take).map(|t| (t as f64 - mt).powi(2)).sum();
    let sxy: f64 = head
        .iter()
        .enumerate()
        .map(|(t, v)| (t as f64 - mt) * (v - mv))
        .sum();
    let slope = if spec.trend == Trend::None || sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    };
    // the state before the first observation
    let level = if spec.trend == Trend::None {
        head[..take.min(m.max(3))].iter().sum::<f64>() / take.min(m.max(3)) as f64
    } else {
        mv - slope * (mt + 1.0)
    };
    Ok((level, slope, seasonal))
}

/// Fits `spec` to `y` by least squares. Needs two full seasons for a seasonal model and at
/// least four points otherwise.
pub fn fit(spec: &Spec, y: &[f64]) -> Result<(Params, Filtered), SeriesError> {
    check_finite(y)?;
    let need = if spec.seasonal() {
        (2 * spec.m).max(spec.parameters() + 2)
    } else {
        4
    };
    if y.len() < need {
        return Err(SeriesError::TooShort {
            method: spec.name(),
            need,
            have: y.len(),
        });
    }
    if spec.season == Season::Mul {
        if let Some((at, &value)) = y.iter().enumerate().find(|(_, v)| **v <= 0.0) {
            return Err(SeriesError::NotPositive {
                method: spec.name(),
                value,
                at,
            });
        }
    }
    let (level0, slope0, seasonal) = initial_states(spec, y)?;
    let spread = {
        let mean = y.iter().sum::<f64>() / y.len() as f64;
        (y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / y.len() as f64)
            .sqrt()
            .max(1e-9)
    };
    let season_step = if spec.season == Season::Mul {
        1.0
    } else {
        spread
    };
    let has_trend = spec.trend != Trend::None;
    let damped = spec.trend == Trend::Damped;
    let seasonal_model = spec.seasonal();
    // unconstrained coordinates: alpha, beta/alpha, gamma/(1-alpha), (phi-0.8)/0.18, level, slope
    let decode = |u: &[f64]| -> Params {
        let mut i = 0;
        let mut next = || {
            let v = u[i];
            i += 1;
            v
        };
        let alpha = 1e-4 + (1.0 - 2e-4) * logistic(next());
        let beta = if has_trend {
            alpha * logistic(next())
        } else {
            0.0
        };
        let gamma = if seasonal_model {
            (1.0 - alpha) * logistic(next())
        } else {
            0.0
        };
        let phi = if damped {
            0.8 + 0.18 * logistic(next())
        } else {
            1.0
        };
        let level = level0 + next() * spread;
        let slope = if has_trend {
            slope0 + next() * spread / 10.0
        } else {
            0.0
        };
        let mut states = seasonal.clone();
        if seasonal_model {
            // m - 1 free states; the last keeps their sum (additive) or mean (multiplicative)
            let m = states.len();
            for s in states.iter_mut().take(m - 1) {
                *s += next() * season_step;
            }
            let rest: f64 = states[..m - 1].iter().sum();
            states[m - 1] = if spec.season == Season::Mul {
                m as f64 - rest
            } else {
                -rest
            };
        }
        Params {
            alpha,
            beta,
            gamma,
            phi,
            level,
            slope,
            seasonal: states,
        }
    };
    let mut x0 = vec![logit(0.5)];
    if has_trend {
        x0.push(logit(0.1));
    }
    if seasonal_model {
        x0.push(logit(0.1));
    }
    if damped {
        x0.push(logit(0.8));
    }
    x0.push(0.0);
    if has_trend {
        x0.push(0.0);
    }
    if seasonal_model {
        x0.extend(std::iter::repeat_n(0.0, spec.m - 1));
    }
    let step = vec![0.5; x0.len()];
    let mut objective = |u: &[f64]| filter(spec, &decode(u), y).sse;
    let (best, _) = nelder_mead(&mut objective, &x0, &step, 200 * x0.len(), 1e-10);
    let params = decode(&best);
    let filtered = filter(spec, &params, y);
    Ok((params, filtered))
}

/// The forecasting methods.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// The ETS model with the lowest AICc among those that fit the series.
    Auto,
    Ets(Spec),
    SeasonalNaive,
    Naive,
    Drift,
}

pub const METHODS: &str = "auto, ets_ann, holt, holt_damped, holt_winters_additive, holt_winters_multiplicative, holt_winters_damped, seasonal_naive, naive, drift";

impl Method {
    pub fn parse(name: &str, m: usize) -> Result<Method, SeriesError> {
        let ets = |trend, season| Method::Ets(Spec { trend, season, m });
        Ok(match name {
            "auto" | "ets" => Method::Auto,
            "ets_ann" | "ses" => ets(Trend::None, Season::None),
            "holt" => ets(Trend::Add, Season::None),
            "holt_damped" => ets(Trend::Damped, Season::None),
            "holt_winters_additive" => ets(Trend::Add, Season::Add),
            "holt_winters_multiplicative" => ets(Trend::Add, Season::Mul),
            "holt_winters_damped" => ets(Trend::Damped, Season::Add),
            "seasonal_naive" => Method::SeasonalNaive,
            "naive" => Method::Naive,
            "drift" => Method::Drift,
            other => {
                return Err(SeriesError::Unknown {
                    what: "forecast method".into(),
                    got: other.into(),
                    expected: METHODS.into(),
                })
            }
        })
    }
}

/// Forecasts `h` steps of `y` with season length `m` (1 for none).
pub fn forecast(y: &[f64], m: usize, h: usize, method: Method) -> Result<Forecast, SeriesError> {
    check_finite(y)?;
    match method {
        Method::Ets(spec) => {
            let (p, f) = fit(&spec, y)?;
            Ok(predict(&spec, &p, &f, y.len(), h))
        }
        Method::Auto => {
            let mut best: Option<Forecast> = None;
            let mut seasons = vec![Season::None];
            if m >= 2 && y.len() >= 2 * m {
                seasons.push(Season::Add);
                if y.iter().all(|v| *v > 0.0) {
                    seasons.push(Season::Mul);
                }
            }
            for season in seasons {
                for trend in [Trend::None, Trend::Add, Trend::Damped] {
                    let spec = Spec { trend, season, m };
                    let Ok((p, f)) = fit(&spec, y) else { continue };
                    let fc = predict(&spec, &p, &f, y.len(), h);
                    if best.as_ref().is_none_or(|b| fc.aicc < b.aicc) && fc.sse.is_finite() {
                        best = Some(fc);
                    }
                }
            }
            best.ok_or(SeriesError::TooShort {
                method: "ETS".into(),
                need: 4,
                have: y.len(),
            })
        }
        Method::SeasonalNaive | Method::Naive => {
            let m = if method == Method::Naive { 1 } else { m.max(1) };
            let name = if m == 1 { "naive" } else { "seasonal_naive" };
            let n = y.len();
            if n < m + 1 {
                return Err(SeriesError::TooShort {
                    method: name.into(),
                    need: m + 1,
                    have: n,
                });
            }
            let resid: Vec<f64> = (m..n).map(|t| y[t] - y[t - m]).collect();
            let sse: f64 = resid.iter().map(|e| e * e).sum();
            let sigma = (sse / resid.len() as f64).sqrt();
            let point: Vec<f64> = (1..=h).map(|s| y[n - m + (s - 1) % m]).collect();
            let sd: Vec<f64> = (1..=h)
                .map(|s| sigma * (((s - 1) / m + 1) as f64).sqrt())
                .collect();
            Ok(Forecast::with_sd(name.into(), point, &sd, sse, None))
        }
        Method::Drift => {
            let n = y.len();
            if n < 3 {
                return Err(SeriesError::TooShort {
                    method: "drift".into(),
                    need: 3,
                    have: n,
                });
            }
            let slope = (y[n - 1] - y[0]) / (n - 1) as f64;
            let sse: f64 = (1..n).map(|t| (y[t] - y[t - 1] - slope).powi(2)).sum();
            let sigma = (sse / (n - 2) as f64).sqrt();
            let point: Vec<f64> = (1..=h).map(|s| y[n - 1] + s as f64 * slope).collect();
            let sd: Vec<f64> = (1..=h)
                .map(|s| sigma * (s as f64 * (1.0 + s as f64 / (n - 1) as f64)).sqrt())
                .collect();
            Ok(Forecast::with_sd("drift".into(), point, &sd, sse, None))
        }
    }
}
