//! The two transcendental functions the sampler needs, without libm.
//!
//! `f64::ln` and `f64::exp_m1` are calls into libm, so using them made
//! `libbsdalloc.so` depend on `libm.so.6`: every program run under
//! `LD_PRELOAD` then mapped libm too (about 350 KiB more resident memory in
//! a small program, and one more library to load). The sampler needs
//! neither speed nor the last bit: a gap drawn from `-ln(u)` and a class
//! scale `1 / (1 - e^-x)`. These are accurate to a few ulps over the
//! ranges used, which the tests check against std.

/// ln 2 split in two: the high part has its low 32 bits clear, so `k * LN2_HI`
/// is exact for the exponents used.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);

/// Natural logarithm of a positive, finite `x` (NaN otherwise).
pub(crate) fn ln(x: f64) -> f64 {
    if !(x > 0.0 && x.is_finite()) {
        return f64::NAN;
    }
    // x = m * 2^e with m in [sqrt(1/2), sqrt(2)).
    let mut bits = x.to_bits();
    let mut e: i64 = 0;
    if bits >> 52 == 0 {
        // Subnormal: scale up by 2^54 first.
        bits = (x * f64::from_bits(0x4350_0000_0000_0000)).to_bits();
        e -= 54;
    }
    e += ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m >= core::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    // ln(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut sum = 0.0;
    let mut k = 21.0;
    while k > 1.0 {
        sum = (sum + 1.0 / k) * s2;
        k -= 2.0;
    }
    let lnm = 2.0 * s * (1.0 + sum);
    let ef = e as f64;
    ef * LN2_HI + (lnm + ef * LN2_LO)
}

/// `e^x - 1`, accurate also where `x` is near zero.
pub(crate) fn exp_m1(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x < -40.0 {
        return -1.0;
    }
    if x > 709.0 {
        return f64::INFINITY;
    }
    if x.abs() < 0.25 {
        return taylor_m1(x);
    }
    // x = k ln2 + r, |r| <= ln2 / 2; e^x = 2^k e^r.
    let k = round_even(x / core::f64::consts::LN_2);
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let er = 1.0 + taylor_m1(r);
    let scale = f64::from_bits(((k as i64 + 1023) as u64) << 52);
    er * scale - 1.0
}

/// `e^x - 1` for `|x| <= ln2 / 2` by its Taylor series, summed from the
/// small end (the 19th term is below 2^-53 of the first).
fn taylor_m1(x: f64) -> f64 {
    let mut terms = [0.0f64; 18];
    let mut term = 1.0;
    let mut n = 1.0;
    for t in terms.iter_mut() {
        term *= x / n;
        *t = term;
        n += 1.0;
    }
    terms.iter().rev().sum()
}

/// Rounds `|x| < 2^52` to an integer (ties to even) without libm's `round`:
/// adding and subtracting 2^52 leaves no fraction bits.
fn round_even(x: f64) -> f64 {
    const BIG: f64 = 4_503_599_627_370_496.0;
    if x >= 0.0 {
        (x + BIG) - BIG
    } else {
        (x - BIG) + BIG
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, ulps: f64) -> bool {
        a == b || (a - b).abs() <= ulps * f64::EPSILON * b.abs().max(f64::MIN_POSITIVE)
    }

    #[test]
    fn ln_matches_std() {
        let mut x = 1e-300;
        while x < 1e300 {
            for f in [
                1.0,
                1.1,
                1.41,
                1.4,
                core::f64::consts::SQRT_2,
                1.5,
                1.999,
                3.3,
                7.7,
            ] {
                let v = x * f;
                assert!(
                    close(ln(v), v.ln(), 4.0),
                    "ln({v}) = {} vs {}",
                    ln(v),
                    v.ln()
                );
            }
            x *= 9.7;
        }
        // The sampler's inputs: (0, 1] on a 2^-53 grid.
        for i in 1..=4096u64 {
            let u = (i * 0x1_0000_0000_0001 % (1 << 53) + 1) as f64 / (1u64 << 53) as f64;
            assert!(close(ln(u), u.ln(), 4.0), "ln({u})");
        }
        assert_eq!(ln(1.0), 0.0);
        assert!(close(ln(5e-324), (5e-324f64).ln(), 4.0));
        assert!(ln(0.0).is_nan() && ln(-1.0).is_nan() && ln(f64::INFINITY).is_nan());
    }

    #[test]
    fn exp_m1_matches_std() {
        let mut x = -50.0;
        while x < 50.0 {
            assert!(
                close(exp_m1(x), x.exp_m1(), 8.0),
                "exp_m1({x}) = {} vs {}",
                exp_m1(x),
                x.exp_m1()
            );
            x += 0.013;
        }
        for x in [
            1e-300, -1e-300, 1e-12, -1e-12, 1e-5, -1e-5, 0.2499, -0.2499, 0.25, -0.25,
        ] {
            assert!(close(exp_m1(x), x.exp_m1(), 8.0), "exp_m1({x})");
        }
        assert_eq!(exp_m1(0.0), 0.0);
        assert_eq!(exp_m1(-1000.0), -1.0);
        assert_eq!(exp_m1(1000.0), f64::INFINITY);
    }
}
