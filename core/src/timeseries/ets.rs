//! Exponential smoothing: the ETS state-space models of Hyndman et al. 2008 (in error-correction
//! form, as statsmodels' `ETSModel`) with additive or relative (multiplicative) errors, a level,
//! an optional additive or damped trend, optional additive or multiplicative seasonality.
//!
//! Fitting maximises the likelihood (for additive errors: minimises the sum of squared one-step
//! errors; for relative errors: n ln Σ(e/ŷ)² + 2 Σ ln ŷ) over the smoothing parameters, the
//! damping and the initial level and slope, by Nelder-Mead from R's starting values; the initial
//! seasonal states come from a classical decomposition of the first seasons (Hyndman's
//! heuristic) or, when `auto` compares models, of the whole series (statsforecast's), and are
//! then optimised with the rest. `ets` is AutoETS: the lowest AICc among the models R's `ets`
//! and statsforecast's `AutoETS` consider by default. `auto` combines the three lowest by their
//! Akaike weights (Kolassa 2011), which forecasts better than the best alone.
//! Prediction intervals use the analytic variance of additive models (Hyndman et al. 2008,
//! class 1); for multiplicative seasonality that variance is scaled by the season's factor, for
//! relative errors the relative variance is scaled by the forecast (first-order approximations).
//! Baselines: seasonal naive, naive and drift (Hyndman and Athanasopoulos, "Forecasting:
//! principles and practice", 5.5).

use super::decompose::decompose;
use super::optimize::nelder_mead;
use super::{check_finite, SeriesError};

/// How the one-step errors enter: additively, or relative to the prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    Add,
    Mul,
}

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

/// A model: error, trend, seasonality and season length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub error: Error,
    pub trend: Trend,
    pub season: Season,
    pub m: usize,
}

impl Spec {
    /// Hyndman's notation: ETS(A,Ad,M) and so on.
    pub fn name(&self) -> String {
        let e = match self.error {
            Error::Add => "A",
            Error::Mul => "M",
        };
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
        format!("ETS({e},{t},{s})")
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
    /// the sum of squared relative errors (e / prediction) and of the predictions' logarithms,
    /// for a multiplicative-error model (zero otherwise)
    pub rel_sse: f64,
    pub log_pred: f64,
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
/// below zero, a prediction at or below zero in a multiplicative-error model) gives an
/// infinite SSE.
pub fn filter(spec: &Spec, p: &Params, y: &[f64]) -> Filtered {
    let mut ring = Vec::with_capacity(spec.m());
    let mut fitted = Vec::with_capacity(y.len());
    let r = recurse(spec, p, y, &mut ring, |yhat| fitted.push(yhat));
    Filtered {
        fitted,
        sse: r.sse,
        rel_sse: r.rel_sse,
        log_pred: r.log_pred,
        level: r.level,
        slope: r.slope,
        ring,
    }
}

/// What a run of the recursions sums up, and the final level and slope.
struct Run {
    sse: f64,
    rel_sse: f64,
    log_pred: f64,
    level: f64,
    slope: f64,
}

impl Run {
    fn impossible(level: f64, slope: f64) -> Run {
        Run {
            sse: f64::INFINITY,
            rel_sse: f64::INFINITY,
            log_pred: f64::INFINITY,
            level,
            slope,
        }
    }

    /// The fitting objective: the sum of squared errors for additive errors (the maximum
    /// likelihood estimate), minus twice the log-likelihood up to a constant for relative ones
    /// (Hyndman et al. 2008, 5.2).
    fn objective(&self, spec: &Spec, n: usize) -> f64 {
        match spec.error {
            Error::Add => self.sse,
            Error::Mul => n as f64 * self.rel_sse.max(1e-300).ln() + 2.0 * self.log_pred,
        }
    }
}

/// The recursions themselves: `ring` ends holding the latest seasonal state per phase, each
/// one-step prediction goes to `fitted`. A multiplicative season over a level at or below
/// zero, or a prediction at or below zero in a multiplicative-error model, stops it with
/// infinite sums. The state updates are the same for both error types (Hyndman et al. 2008,
/// table 2.3, with e = y - prediction); only the likelihood differs.
fn recurse(
    spec: &Spec,
    p: &Params,
    y: &[f64],
    ring: &mut Vec<f64>,
    mut fitted: impl FnMut(f64),
) -> Run {
    let relative = spec.error == Error::Mul;
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
    ring.clear();
    if spec.seasonal() {
        ring.extend_from_slice(&p.seasonal);
    } else {
        ring.push(0.0);
    }
    // Holt-Winters' component form for a multiplicative season, as statsmodels: the season is
    // updated from the new level, s_t = gamma* y_t / l_t + (1 - gamma*) s_{t-m}, gamma* = gamma / (1 - alpha)
    let gamma_star = if p.alpha < 1.0 {
        p.gamma / (1.0 - p.alpha)
    } else {
        0.0
    };
    let mut total = 0.0;
    let (mut rel, mut logs, mut product) = (0.0, 0.0, 1.0);
    let mut k = 0;
    for &v in y {
        let base = l + phi * b;
        let s = ring[k];
        let yhat = match spec.season {
            Season::None => base,
            Season::Add => base + s,
            Season::Mul => base * s,
        };
        let e = v - yhat;
        fitted(yhat);
        total += e * e;
        if relative {
            if yhat <= 0.0 {
                return Run::impossible(l, b);
            }
            rel += (e / yhat) * (e / yhat);
            // the logarithms' sum as a running product, renormalised before it can overflow
            product *= yhat;
            if !(1e-100..=1e100).contains(&product) {
                logs += product.ln();
                product = 1.0;
            }
        }
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
                    return Run::impossible(l, b);
                }
                l = base + p.alpha * e / s;
                b = phi * b + p.beta * e / s;
                ring[k] = gamma_star * v / l + (1.0 - gamma_star) * s;
            }
        }
        k += 1;
        if k == m {
            k = 0;
        }
    }
    Run {
        sse: total,
        rel_sse: rel,
        log_pred: logs + product.ln(),
        level: l,
        slope: b,
    }
}

/// The fitting objective of the model over `y` (minus twice the log-likelihood, up to a
/// constant), without allocating (`ring` is scratch space).
fn objective(spec: &Spec, p: &Params, y: &[f64], ring: &mut Vec<f64>) -> f64 {
    let v = recurse(spec, p, y, ring, |_| {}).objective(spec, y.len());
    if v.is_nan() {
        f64::INFINITY
    } else {
        v
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
    let rel_sigma2 = f.rel_sse / n as f64;
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
        sd.push(match spec.error {
            Error::Add => (sigma2 * (1.0 + sum_c2)).sqrt() * scale,
            // relative errors: the first-order approximation, sd proportional to the forecast
            Error::Mul => (rel_sigma2 * (1.0 + sum_c2)).sqrt() * y.abs(),
        });
        // c_j for j = step: alpha + beta * phi_j + gamma when j is a whole number of seasons
        let seasonal = if spec.seasonal() && step.is_multiple_of(m) {
            p.gamma
        } else {
            0.0
        };
        let c = p.alpha + p.beta * phi_h + seasonal;
        sum_c2 += c * c;
    }
    Forecast::with_sd(spec.name(), point, &sd, f.sse, Some(aicc(spec, f, n)))
}

/// The AICc of a fitted model: -2 log-likelihood (Gaussian errors, additive or relative, the
/// variance at its estimate) plus the small-sample penalty on its parameters.
fn aicc(spec: &Spec, f: &Filtered, n: usize) -> f64 {
    let k = spec.parameters() as f64;
    let nf = n as f64;
    let (sum, extra) = match spec.error {
        Error::Add => (f.sse, 0.0),
        Error::Mul => (f.rel_sse, 2.0 * f.log_pred),
    };
    let aic = nf * ((2.0 * std::f64::consts::PI * sum / nf).ln() + 1.0) + extra + 2.0 * k;
    if nf - k - 1.0 > 0.0 {
        aic + 2.0 * k * (k + 1.0) / (nf - k - 1.0)
    } else {
        f64::INFINITY
    }
}

fn logistic(u: f64) -> f64 {
    1.0 / (1.0 + (-u).exp())
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

/// The starting states: seasonal factors from a classical decomposition of the first (up to
/// `seasons`) seasons, then a line through the seasonally adjusted first points.
fn initial_states(
    spec: &Spec,
    y: &[f64],
    seasons: usize,
) -> Result<(f64, f64, Vec<f64>), SeriesError> {
    let m = spec.m();
    let mut adjusted = y.to_vec();
    let mut seasonal = Vec::new();
    if spec.seasonal() {
        let k = (y.len() / m).min(seasons);
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

/// Fits `spec` to `y` by maximum likelihood: the search runs from R's small starting
/// smoothing parameters and from the middle of their range, and keeps the better optimum.
/// Needs two full seasons for a seasonal model and at least four points otherwise.
pub fn fit(spec: &Spec, y: &[f64]) -> Result<(Params, Filtered), SeriesError> {
    let small = fit_with(spec, y, true, Start::Small, HEURISTIC_SEASONS)?;
    let middle = fit_with(spec, y, true, Start::Middle, HEURISTIC_SEASONS)?;
    let value = |f: &Filtered| {
        Run {
            sse: f.sse,
            rel_sse: f.rel_sse,
            log_pred: f.log_pred,
            level: f.level,
            slope: f.slope,
        }
        .objective(spec, y.len())
    };
    Ok(if value(&middle.1) < value(&small.1) {
        middle
    } else {
        small
    })
}

/// Where the search for the smoothing parameters starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// R's and statsforecast's `initparam`: alpha 0.2 / m, beta a tenth of alpha, gamma 5 % of
    /// its range, phi near its top. From there the search tends to find slowly changing
    /// states, which forecast well; what AutoETS does, and `auto` with it.
    Small,
    /// alpha 0.5, beta and gamma a tenth of their range, phi 0.944 (0.8 of its range): more
    /// often the likelihood's global optimum on a short or irregular series.
    Middle,
}

/// [`fit`] from one start; without `refine`, a seasonal model keeps its heuristic initial
/// seasonal states (one small optimisation instead of two: what `auto` uses to compare
/// models, before it refines the one it chose).
fn fit_with(
    spec: &Spec,
    y: &[f64],
    refine: bool,
    start: Start,
    seasons: usize,
) -> Result<(Params, Filtered), SeriesError> {
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
    if spec.season == Season::Mul || spec.error == Error::Mul {
        if let Some((at, &value)) = y.iter().enumerate().find(|(_, v)| **v <= 0.0) {
            return Err(SeriesError::NotPositive {
                method: spec.name(),
                value,
                at,
            });
        }
    }
    let (level0, slope0, seasonal) = initial_states(spec, y, seasons)?;
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
    // unconstrained coordinates: alpha, beta/alpha, gamma/(1-alpha), (phi-0.8)/0.18, level,
    // slope, then m - 1 seasonal offsets (the last state keeps their sum, or their mean of 1)
    let decode = |u: &[f64], p: &mut Params| {
        let mut i = 0;
        let mut next = || {
            let v = u.get(i).copied().unwrap_or(0.0);
            i += 1;
            v
        };
        p.alpha = 1e-4 + (1.0 - 2e-4) * logistic(next());
        p.beta = if has_trend {
            p.alpha * logistic(next())
        } else {
            0.0
        };
        p.gamma = if seasonal_model {
            (1.0 - p.alpha) * logistic(next())
        } else {
            0.0
        };
        p.phi = if damped {
            0.8 + 0.18 * logistic(next())
        } else {
            1.0
        };
        p.level = level0 + next() * spread;
        p.slope = if has_trend {
            slope0 + next() * spread / 10.0
        } else {
            0.0
        };
        if seasonal_model {
            let m = seasonal.len();
            p.seasonal.clear();
            p.seasonal.extend_from_slice(&seasonal);
            for s in p.seasonal.iter_mut().take(m - 1) {
                *s += next() * season_step;
            }
            let rest: f64 = p.seasonal[..m - 1].iter().sum();
            p.seasonal[m - 1] = if spec.season == Season::Mul {
                m as f64 - rest
            } else {
                -rest
            };
        }
    };
    let small = start == Start::Small;
    let mut x0 = vec![logit(if small { 0.2 / spec.m() as f64 } else { 0.5 })];
    if has_trend {
        x0.push(logit(0.1));
    }
    if seasonal_model {
        x0.push(logit(if small { 0.05 } else { 0.1 }));
    }
    if damped {
        x0.push(logit(if small { 0.99 } else { 0.8 }));
    }
    x0.push(0.0);
    if has_trend {
        x0.push(0.0);
    }
    let core = x0.len();
    let mut scratch = Params {
        alpha: 0.0,
        beta: 0.0,
        gamma: 0.0,
        phi: 1.0,
        level: 0.0,
        slope: 0.0,
        seasonal: seasonal.clone(),
    };
    let mut ring = Vec::with_capacity(spec.m());
    let mut objective = |u: &[f64]| {
        decode(u, &mut scratch);
        objective(spec, &scratch, y, &mut ring)
    };
    // first the smoothing parameters, level and slope with the heuristic seasonal states; then,
    // for a seasonal model, everything together from there (the seasonal states move little)
    let (mut best, _) = nelder_mead(&mut objective, &x0, &vec![0.5; core], 200 * core, 1e-9);
    if seasonal_model && refine {
        best.extend(std::iter::repeat_n(0.0, spec.m - 1));
        let mut step = vec![0.2; core];
        step.extend(std::iter::repeat_n(0.1, spec.m - 1));
        let (b, _) = nelder_mead(&mut objective, &best, &step, 60 * best.len(), 1e-8);
        best = b;
    }
    // the search is done with the scratch parameters: they become the result
    let mut params = scratch;
    decode(&best, &mut params);
    let filtered = filter(spec, &params, y);
    Ok((params, filtered))
}

/// How many leading seasons the heuristic initial seasonal states are taken from when a model
/// is fitted alone.
const HEURISTIC_SEASONS: usize = 4;

/// `auto` compares its candidates from the seasonal states of a decomposition of the whole
/// series (statsforecast's `initstate`): on the benchmark's series that picks better models
/// than the first four seasons do (median MASE 0.7868 against 0.7895 on 306 series).
const ALL_SEASONS: usize = usize::MAX;

/// The forecasting methods.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// The three ETS models with the lowest AICc, combined by their Akaike weights.
    Auto,
    /// The ETS model with the lowest AICc among those that fit the series (AutoETS).
    BestEts,
    Ets(Spec),
    SeasonalNaive,
    Naive,
    Drift,
}

pub const METHODS: &str = "auto, ets, ets_<error><trend><season> (error a or m, trend n, a or ad, season n, a or m: ets_mam, ets_madm, ...), ses, holt, holt_damped, holt_winters_additive, holt_winters_multiplicative, holt_winters_damped, seasonal_naive, naive, drift";

/// An ETS model by Hyndman's letters after `ets_`: "mam" is ETS(M,A,M), "madn" ETS(M,Ad,N).
fn ets_code(code: &str, m: usize) -> Option<Spec> {
    let error = match code.get(..1)? {
        "a" => Error::Add,
        "m" => Error::Mul,
        _ => return None,
    };
    let (trend, rest) = match code.get(1..)? {
        r if r.starts_with("ad") => (Trend::Damped, &r[2..]),
        r if r.starts_with('a') => (Trend::Add, &r[1..]),
        r if r.starts_with('n') => (Trend::None, &r[1..]),
        _ => return None,
    };
    let season = match rest {
        "n" => Season::None,
        "a" => Season::Add,
        "m" => Season::Mul,
        _ => return None,
    };
    Some(Spec {
        error,
        trend,
        season,
        m,
    })
}

impl Method {
    pub fn parse(name: &str, m: usize) -> Result<Method, SeriesError> {
        let ets = |trend, season| {
            Method::Ets(Spec {
                error: Error::Add,
                trend,
                season,
                m,
            })
        };
        Ok(match name {
            "auto" => Method::Auto,
            "ets" => Method::BestEts,
            "ses" => ets(Trend::None, Season::None),
            "holt" => ets(Trend::Add, Season::None),
            "holt_damped" => ets(Trend::Damped, Season::None),
            "holt_winters_additive" => ets(Trend::Add, Season::Add),
            "holt_winters_multiplicative" => ets(Trend::Add, Season::Mul),
            "holt_winters_damped" => ets(Trend::Damped, Season::Add),
            "seasonal_naive" => Method::SeasonalNaive,
            "naive" => Method::Naive,
            "drift" => Method::Drift,
            other => {
                if let Some(spec) = other.strip_prefix("ets_").and_then(|c| ets_code(c, m)) {
                    return Ok(Method::Ets(spec));
                }
                return Err(SeriesError::Unknown {
                    what: "forecast method".into(),
                    got: other.into(),
                    expected: METHODS.into(),
                });
            }
        })
    }
}

/// A fitted candidate of `auto`: its AICc, the model, its parameters and its run.
type Candidate = (f64, Spec, Params, Filtered);

/// The candidates of AutoETS (Hyndman et al. 2008; R's `ets`, statsforecast's `AutoETS`):
/// additive errors with no or an additive season and, for a positive series, relative errors
/// with no, an additive or a multiplicative season, each with no, an additive or a damped trend;
/// each fitted with the seasonal states of a decomposition of the whole series, lowest AICc first.
fn auto_candidates(y: &[f64], m: usize) -> Vec<Candidate> {
    let positive = y.iter().all(|v| *v > 0.0);
    let mut seasons = vec![Season::None];
    if m >= 2 && y.len() >= 2 * m {
        seasons.push(Season::Add);
        seasons.push(Season::Mul);
    }
    let mut candidates: Vec<Candidate> = Vec::new();
    for error in [Error::Add, Error::Mul] {
        if error == Error::Mul && !positive {
            continue;
        }
        for &season in &seasons {
            // additive errors over a multiplicative season are numerically unstable
            // (Hyndman et al. 2008, 15.2; excluded by R's and statsforecast's defaults)
            if season == Season::Mul && error == Error::Add {
                continue;
            }
            for trend in [Trend::None, Trend::Add, Trend::Damped] {
                let spec = Spec {
                    error,
                    trend,
                    season,
                    m,
                };
                let Ok((p, f)) = fit_with(&spec, y, false, Start::Small, ALL_SEASONS) else {
                    continue;
                };
                let score = aicc(&spec, &f, y.len());
                if score.is_finite() {
                    candidates.push((score, spec, p, f));
                }
            }
        }
    }
    candidates.sort_by(|a, b| a.0.total_cmp(&b.0));
    candidates
}

/// Refits the lowest-AICc candidate fully, its seasonal states optimised from those of the
/// whole series and from those of its first seasons (the higher likelihood is kept), in place.
fn refit_best(y: &[f64], candidates: &mut [Candidate]) {
    let Some(first) = candidates.first_mut() else {
        return;
    };
    let spec = first.1;
    if let Ok((mut p, mut f)) = fit_with(&spec, y, true, Start::Small, ALL_SEASONS) {
        if let Ok((p2, f2)) = fit_with(&spec, y, true, Start::Small, HEURISTIC_SEASONS) {
            if aicc(&spec, &f2, y.len()) < aicc(&spec, &f, y.len()) {
                (p, f) = (p2, f2);
            }
        }
        let score = aicc(&spec, &f, y.len());
        if score.is_finite() {
            *first = (score, spec, p, f);
        }
    }
}

/// How many of `auto`'s lowest-AICc models are combined.
const COMBINED: usize = 3;

/// Forecasts combined by their Akaike weights, exp(-Δ/2) for an AICc Δ above the lowest
/// (Kolassa 2011, "Combining exponential smoothing forecasts using Akaike weights", IJF 27).
/// The intervals are those of the weighted mixture of the members' normal forecast
/// distributions: its variance is Σ w (sd² + (point - combined point)²).
fn combine(members: Vec<(f64, Forecast)>, h: usize) -> Forecast {
    let low = members.iter().map(|m| m.0).fold(f64::INFINITY, f64::min);
    let raw: Vec<f64> = members.iter().map(|m| (-0.5 * (m.0 - low)).exp()).collect();
    let total: f64 = raw.iter().sum();
    let w: Vec<f64> = raw.iter().map(|r| r / total).collect();
    let mut point = vec![0.0; h];
    for (wi, (_, f)) in w.iter().zip(&members) {
        for (p, v) in point.iter_mut().zip(&f.point) {
            *p += wi * v;
        }
    }
    let sd: Vec<f64> = (0..h)
        .map(|i| {
            members
                .iter()
                .zip(&w)
                .map(|((_, f), wi)| {
                    let s = (f.hi95[i] - f.lo95[i]) / (2.0 * Z95);
                    wi * (s * s + (f.point[i] - point[i]).powi(2))
                })
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let model = members
        .iter()
        .zip(&w)
        .map(|((_, f), wi)| format!("{} {wi:.2}", f.model))
        .collect::<Vec<_>>()
        .join(" + ");
    let (sse, aicc) = (members[0].1.sse, members[0].1.aicc);
    Forecast::with_sd(model, point, &sd, sse, aicc)
}

/// As [`forecast`], on a calendar whose weeks repeat every `m` = 52 but some years have 53:
/// `extra` marks the 53rd weeks of `y`, `ahead` those of the `ahead.len()` periods to forecast.
/// The model is fitted to the series without its 53rd weeks (so every other week keeps its
/// phase, as the seasonal states expect) and forecasts the other weeks; a 53rd week ahead
/// repeats the forecast and intervals of the week before it (it continues week 52's season),
/// or, as the first step, when that week is observed, takes the week after's.
pub fn forecast_calendar(
    y: &[f64],
    extra: &[bool],
    ahead: &[bool],
    m: usize,
    method: Method,
) -> Result<Forecast, SeriesError> {
    if !extra.iter().chain(ahead).any(|e| *e) {
        return forecast(y, m, ahead.len(), method);
    }
    super::check_marks(extra, y.len())?;
    let kept: Vec<f64> = y
        .iter()
        .zip(extra)
        .filter(|(_, e)| !**e)
        .map(|(v, _)| *v)
        .collect();
    // one step more than the ordinary weeks ahead: a 53rd week first has a week after it
    let ordinary = ahead.iter().filter(|e| !**e).count();
    let f = forecast(&kept, m, ordinary + 1, method)?;
    let mut out = Forecast {
        model: f.model.clone(),
        sse: f.sse,
        aicc: f.aicc,
        ..Forecast::default()
    };
    let mut next: usize = 0;
    for &is_extra in ahead {
        let pick = |v: &[f64]| -> f64 {
            if is_extra {
                v[next.saturating_sub(1)]
            } else {
                v[next]
            }
        };
        out.point.push(pick(&f.point));
        out.lo80.push(pick(&f.lo80));
        out.hi80.push(pick(&f.hi80));
        out.lo95.push(pick(&f.lo95));
        out.hi95.push(pick(&f.hi95));
        if !is_extra {
            next += 1;
        }
    }
    Ok(out)
}

/// Forecasts `h` steps of `y` with season length `m` (1 for none).
pub fn forecast(y: &[f64], m: usize, h: usize, method: Method) -> Result<Forecast, SeriesError> {
    check_finite(y)?;
    match method {
        Method::Ets(spec) => {
            let (p, f) = fit(&spec, y)?;
            Ok(predict(&spec, &p, &f, y.len(), h))
        }
        Method::Auto | Method::BestEts => {
            let mut candidates = auto_candidates(y, m);
            refit_best(y, &mut candidates);
            let Some((score, spec, p, f)) = candidates.first() else {
                return Err(SeriesError::TooShort {
                    method: "ETS".into(),
                    need: 4,
                    have: y.len(),
                });
            };
            let best = predict(spec, p, f, y.len(), h);
            if method == Method::BestEts {
                return Ok(best);
            }
            let mut members = vec![(*score, best)];
            for (score, spec, p, f) in candidates.iter().skip(1).take(COMBINED - 1) {
                members.push((*score, predict(spec, p, f, y.len(), h)));
            }
            Ok(combine(members, h))
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
