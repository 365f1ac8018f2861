//! Nelder-Mead minimisation (Nelder and Mead 1965, with the usual coefficients), for the few
//! smoothing parameters and initial states of an exponential smoothing model.

/// Minimises `f` from `x0` with initial steps `step`; stops after `max_evals` evaluations or
/// when the simplex's values agree to `tol` (relative). Returns the best point and its value.
pub fn nelder_mead(
    f: &mut dyn FnMut(&[f64]) -> f64,
    x0: &[f64],
    step: &[f64],
    max_evals: usize,
    tol: f64,
) -> (Vec<f64>, f64) {
    let d = x0.len();
    let mut simplex: Vec<(Vec<f64>, f64)> = Vec::with_capacity(d + 1);
    let v0 = f(x0);
    simplex.push((x0.to_vec(), v0));
    for i in 0..d {
        let mut x = x0.to_vec();
        x[i] += step[i];
        let v = f(&x);
        simplex.push((x, v));
    }
    let mut evals = d + 1;
    let order = |s: &mut Vec<(Vec<f64>, f64)>| s.sort_by(|a, b| a.1.total_cmp(&b.1));
    while evals < max_evals {
        order(&mut simplex);
        let (best, worst) = (simplex[0].1, simplex[d].1);
        if (worst - best).abs() <= tol * (best.abs() + tol) {
            break;
        }
        let mut centroid = vec![0.0; d];
        for (x, _) in &simplex[..d] {
            for (c, xi) in centroid.iter_mut().zip(x) {
                *c += xi / d as f64;
            }
        }
        let towards = |t: f64, from: &[f64]| -> Vec<f64> {
            centroid
                .iter()
                .zip(from)
                .map(|(c, x)| c + t * (x - c))
                .collect()
        };
        let xr = towards(-1.0, &simplex[d].0);
        let vr = f(&xr);
        evals += 1;
        if vr < simplex[0].1 {
            let xe = towards(-2.0, &simplex[d].0);
            let ve = f(&xe);
            evals += 1;
            simplex[d] = if ve < vr { (xe, ve) } else { (xr, vr) };
        } else if vr < simplex[d - 1].1 {
            simplex[d] = (xr, vr);
        } else {
            let (xc, vc) = if vr < simplex[d].1 {
                let x = towards(-0.5, &simplex[d].0);
                let v = f(&x);
                (x, v)
            } else {
                let x = towards(0.5, &simplex[d].0);
                let v = f(&x);
                (x, v)
            };
            evals += 1;
            if vc < simplex[d].1.min(vr) {
                simplex[d] = (xc, vc);
            } else {
                let b = simplex[0].0.clone();
                for (x, v) in simplex.iter_mut().skip(1) {
                    for (xi, bi) in x.iter_mut().zip(&b) {
                        *xi = bi + 0.5 * (*xi - bi);
                    }
                    *v = f(x);
                    evals += 1;
                }
            }
        }
    }
    order(&mut simplex);
    let (x, v) = simplex.swap_remove(0);
    (x, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_minimum_of_rosenbrock() {
        let mut f = |x: &[f64]| (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2);
        let (x, v) = nelder_mead(&mut f, &[-1.2, 1.0], &[0.5, 0.5], 5000, 1e-14);
        assert!(v < 1e-8, "{v}");
        assert!(
            (x[0] - 1.0).abs() < 1e-3 && (x[1] - 1.0).abs() < 1e-3,
            "{x:?}"
        );
    }
}
