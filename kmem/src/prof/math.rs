//! The two transcendental functions the sampler needs, without libm.
//!
//! `f64::ln` and `f64::exp_m1` are calls into libm, so using them made
//! `libbsdalloc.so` depend on `libm.so.6`: every program run under
//! `LD_PRELOAD` then mapped libm too (about 350 KiB more resident memory in
//! a small program, and one more library to load). The sampler needs a gap
//! drawn from `-ln(u)` on every sample (and on each thread's first
//! allocation of a class: a program of many short threads draws one per
//! thread), and a scale `1 / (1 - e^-x)` per class and interval.
//! [`exp_m1`] is accurate to a few ulps over the ranges used; [`ln`]
//! is straight-line code (about 25 instructions, one division; the
//! series loop it replaced took about 300) accurate to 1e-9 relative, far
//! below what a sampling interval can tell. The tests check both against
//! std.

/// ln 2 split in two: the high part has its low 32 bits clear, so `k * LN2_HI`
/// is exact for the exponents used.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);

/// The bits of sqrt(1/2): [`ln`] reduces its argument to
/// `[sqrt(1/2), sqrt(2))` by subtracting them (musl's `log` does so too).
const SQRT_HALF_BITS: u64 = 0x3fe6_a09e_667f_3bcd;

/// Natural logarithm of a positive, normal, finite `x` (anything else gives
/// a meaningless number, no panic), to about 1e-9 relative; branch-free.
///
/// `x = z * 2^e` with `z` in `[sqrt(1/2), sqrt(2))` by integer arithmetic
/// on the bits, then `ln z = 2 atanh(s)`, `s = (z - 1) / (z + 1)`,
/// `|s| <= 0.1716`, by its series to `s^11` (the first term left out,
/// `2 s^13 / 13`, is at most 5e-11 of the sum).
#[inline]
pub(crate) fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let tmp = bits.wrapping_sub(SQRT_HALF_BITS);
    // The exponent of x relative to z's (arithmetic shift: may be < 0).
    let e = (tmp as i64) >> 52;
    let z = f64::from_bits(bits.wrapping_sub(tmp & (0xfffu64 << 52)));
    let s = (z - 1.0) / (z + 1.0);
    let s2 = s * s;
    const C3: f64 = 2.0 / 3.0;
    const C5: f64 = 2.0 / 5.0;
    const C7: f64 = 2.0 / 7.0;
    const C9: f64 = 2.0 / 9.0;
    const C11: f64 = 2.0 / 11.0;
    let poly = s2 * (C3 + s2 * (C5 + s2 * (C7 + s2 * (C9 + s2 * C11))));
    let lnz = 2.0 * s + s * poly;
    let ef = e as f64;
    ef * LN2_HI + (lnz + ef * LN2_LO)
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

    fn rel_close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs()
    }

    #[test]
    fn ln_matches_std() {
        let mut x = 1e-300;
        while x < 1e300 {
            for f in [
                1.0,
                1.0 + 1e-12,
                1.1,
                1.41,
                core::f64::consts::SQRT_2,
                core::f64::consts::FRAC_1_SQRT_2 * 2.0 - 1e-15,
                1.5,
                1.999,
                3.3,
                7.7,
            ] {
                let v = x * f;
                assert!(
                    rel_close(ln(v), v.ln(), 1e-9),
                    "ln({v}) = {} vs {}",
                    ln(v),
                    v.ln()
                );
            }
            x *= 9.7;
        }
        // The sampler's inputs: (0, 1] on a 2^-53 grid, among them those
        // next to 1 (where ln is near 0) and the smallest.
        let grid = |i: u64| i as f64 / (1u64 << 53) as f64;
        for i in 1..=4096u64 {
            for u in [
                grid(i * 0x1_0000_0000_0001 % (1 << 53) + 1),
                grid(i),
                grid((1 << 53) - i),
            ] {
                assert!(
                    rel_close(ln(u), u.ln(), 1e-9),
                    "ln({u}) = {} vs {}",
                    ln(u),
                    u.ln()
                );
            }
        }
        // Around the reduction's edge, sqrt(1/2) and sqrt(2) times powers of 2.
        for k in -60..60 {
            let p = 2f64.powi(k);
            for b in [SQRT_HALF_BITS - 1, SQRT_HALF_BITS, SQRT_HALF_BITS + 1] {
                let v = f64::from_bits(b) * p;
                assert!(rel_close(ln(v), v.ln(), 1e-9), "ln({v})");
            }
        }
        assert_eq!(ln(1.0), 0.0);
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
